"""``l3seg serve``, the DICOM node, end to end on loopback: a generated CT series sent by
pynetdicom is measured and its SEG and SR arrive at a pynetdicom SCP standing in for the PACS
with the numbers of the CSV; a real PACS (Orthanc, where installed) sends a series and gets SEG and
SR back; a node killed with SIGKILL mid-series measures the series once after a restart; calling
AE titles not allowed are refused; a malformed instance or a dropped association leaves the node
up; SIGTERM stops it cleanly. Every port is a free ephemeral one."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from helpers import sr_numbers, sr_texts, write_dicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.models import default_model_path
from l3seg_lib.node.events import parse_line
from l3seg_lib.node.scp import CT_IMAGE_STORAGE
from l3seg_lib.node.sender import Destination, Sender, no_delay, parse_destination
from l3seg_lib.node.service import Node, NodeConfig

pynetdicom = pytest.importorskip("pynetdicom")
REPO = Path(__file__).resolve().parents[2]
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"


# --- a series, a PACS, a scanner -----------------------------------------------------------------

@pytest.fixture(scope="module")
def ct_series(tmp_path_factory) -> list[Path]:
    """A synthetic torso from the sacrum to T12 (71 slices of 160 x 160 px, 2.5 mm pixels, 3 mm
    apart; L3 in view), one DICOM file per slice, one series."""
    from l3seg_lib.phantom.torso import TorsoSpec, make_torso

    root = tmp_path_factory.mktemp("ct")
    torso = make_torso(TorsoSpec(matrix=160, pixel_mm=2.5, z_from=-60.0, z_to=150.0, slice_mm=3.0))
    series_uid, study_uid = generate_uid(), generate_uid()
    return [write_dicom(root / f"IM{k:04d}.dcm", torso.hu[k], spacing=(2.5, 2.5), position=(-200.0, -200.0, 3.0 * k),
                        series_uid=series_uid, patient_id="SRV1", InstanceNumber=k + 1, SliceThickness="3",
                        StudyInstanceUID=study_uid, PatientName="Serve^Test", StudyDate="20260101")
            for k in range(torso.hu.shape[0])]


class Pacs:
    """A pynetdicom Storage SCP standing in for the PACS: keeps every dataset it is sent."""

    def __init__(self, ae_title: str = "PACS", ssl_context=None):
        from pynetdicom import AE, evt

        self.received: list[pydicom.Dataset] = []
        self.times: list[float] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        for sop in (SEG_STORAGE, SR_STORAGE):
            ae.add_supported_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            with self._lock:
                self.received.append(ds)
                self.times.append(time.perf_counter())
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)],
                                      ssl_context=ssl_context)
        self.port = self.server.server_address[1]
        self.destination = Destination(ae_title, "127.0.0.1", self.port)

    def wait_for(self, n: int, timeout: float = 60.0) -> list[pydicom.Dataset]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"the PACS received {len(self.received)} object(s), expected {n}")

    def close(self):
        self.server.shutdown()


def associate(port: int, calling: str = "SCANNER", called: str = "L3SEG"):
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.add_requested_context(CT_IMAGE_STORAGE, [ExplicitVRLittleEndian])
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    no_delay(assoc)  # a fast sender: see l3seg_lib.node.sender.no_delay
    return assoc


def send(port: int, files, calling: str = "SCANNER") -> list[int]:
    """C-STORE ``files`` in one association; the statuses."""
    assoc = associate(port, calling)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in files]
    finally:
        assoc.release()


def sr_values(sr: pydicom.Dataset) -> dict[str, float]:
    values = {}

    def walk(items):
        for item in items:
            if item.ValueType == "NUM":
                values[item.ConceptNameCodeSequence[0].CodeValue] = float(item.MeasuredValueSequence[0].NumericValue)
            if "ContentSequence" in item:
                walk(item.ContentSequence)
    walk(sr.ContentSequence)
    return values


def assert_no_machine_path(ds: pydicom.Dataset, *roots: Path) -> None:
    """No text value of ``ds`` (at any depth) holds one of ``roots`` or any absolute path of this
    machine's temporary folders or the repository."""
    import tempfile

    needles = {str(r) for r in roots} | {tempfile.gettempdir() + "/", str(REPO), "/tmp/", "/home/", "/srv/", "/root/"}
    found = []

    def walk(d):
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR in ("LO", "LT", "ST", "UT", "SH", "PN", "UC", "UR", "CS", "AE", "DS", "IS"):
                text = str(elem.value)
                if any(n in text for n in needles):
                    found.append(f"{elem.keyword}: {text[:120]}")
    walk(ds)
    assert not found, found


def check_seg_sr(objects: list[pydicom.Dataset], series: list[Path], row: pd.Series) -> None:
    """One SEG and one SR, referencing the measured slice of the series, numbers as in the CSV."""
    from l3seg_lib.measurement.dicom_out import MEASURES

    by_modality = {ds.Modality: ds for ds in objects}
    assert sorted(by_modality) == ["SEG", "SR"] and len(objects) == 2
    seg, sr = by_modality["SEG"], by_modality["SR"]
    src = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in series}
    ref = seg.ReferencedSeriesSequence[0]
    first = pydicom.dcmread(series[0], stop_before_pixels=True)
    assert ref.SeriesInstanceUID == first.SeriesInstanceUID and seg.StudyInstanceUID == first.StudyInstanceUID
    measured = pydicom.dcmread(src[ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID], stop_before_pixels=True)
    assert int(measured.InstanceNumber) - 1 == int(row["slice_index"])  # the slice measured is the one referenced
    values = sr_values(sr)
    compared = 0
    for key, (code, *_rest) in MEASURES.items():
        if pd.notna(row.get(key)):
            assert values[code] == pytest.approx(float(row[key]), rel=1e-6), key
            compared += 1
    assert compared >= 4
    assert sr.PatientID == "SRV1" and sr.StudyInstanceUID == first.StudyInstanceUID
    # for each segment: SEG area = SR number = CSV column, the SR number referencing its segment
    from l3seg_lib.measurement.dicom_out import SEGMENTS

    numbers = sr_numbers(sr)
    frames = seg.pixel_array.reshape(len(SEGMENTS), int(seg.Rows), int(seg.Columns))
    pixel_cm2 = float(row["pixel_spacing_row_mm"]) * float(row["pixel_spacing_col_mm"]) / 100.0
    for number, (_tissue, _refined, column) in SEGMENTS.items():
        code = MEASURES[column][0]
        assert frames[number - 1].sum() * pixel_cm2 == pytest.approx(float(row[column]), rel=1e-9, abs=1e-9), column
        assert numbers[code]["value"] == pytest.approx(float(row[column]), rel=1e-9, abs=1e-9), column
        assert numbers[code]["segment"] == number, column


def make_node(out: Path, pacs: Pacs | None, **kw) -> Node:
    cfg = NodeConfig(out, default_model_path(), MeasureOptions(progress=False, read_threads=0), port=0,
                     send_to=pacs.destination if pacs else None, series_timeout=kw.pop("series_timeout", 0.5),
                     poll_s=0.05, send_backoff=(0.2, 1.0), **kw)
    return Node(cfg)


class Running:
    """A node in this process, its loop on a thread."""

    def __init__(self, node: Node):
        self.node, self.stop = node, threading.Event()
        self.port = node.start()
        self.thread = threading.Thread(target=node.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


# --- (a) pynetdicom -> l3seg serve -> pynetdicom PACS ----------------------------------------------

def test_series_sent_by_cstore_comes_back_as_seg_and_sr_equal_to_the_csv(ct_series, tmp_path):
    pacs = Pacs()
    running = Running(make_node(tmp_path / "node", pacs))
    try:
        assert send(running.port, ct_series) == [0] * len(ct_series)
        objects = pacs.wait_for(2)
        time.sleep(0.3)  # nothing else arrives
        assert len(pacs.received) == 2
    finally:
        running.close()
        pacs.close()
    out = tmp_path / "node"
    rows = pd.read_csv(out / "measurements.csv")
    assert len(rows) == 1 and rows.iloc[0]["level_source"] == "localiser" and rows.iloc[0]["input_slices"] == len(ct_series)
    assert rows.iloc[0]["height_source"].startswith("PatientSize")  # clinical data from the DICOM tags
    check_seg_sr(objects, ct_series, rows.iloc[0])
    # stored durably, measured once, sent once and recorded; nothing left arriving
    series_dirs = list((out / "series").iterdir())
    assert len(series_dirs) == 1 and len(list(series_dirs[0].glob("*.dcm"))) == len(ct_series)
    assert not [p for p in (out / "incoming").iterdir() if p.name != ".part"]
    assert len(pd.read_csv(out / "ledger.csv")) == 1
    sent = pd.read_csv(out / "sent.csv")
    assert sorted(sent["kind"]) == ["seg", "sr"] and set(sent["status"]) == {"0x0000"}
    assert (out / "index.html").is_file() and (out / "patients" / "SRV1.html").is_file()


@pytest.mark.heavy  # node processes, restarts and waits: out of make test-fast
def test_a_restarted_node_does_not_measure_or_send_again(ct_series, tmp_path):
    pacs = Pacs()
    try:
        running = Running(make_node(tmp_path / "node", pacs))
        send(running.port, ct_series)
        pacs.wait_for(2)
        running.close()
        again = Running(make_node(tmp_path / "node", pacs))
        send(again.port, ct_series)  # the PACS sends the same series again: dropped, not remeasured
        time.sleep(1.5)
        again.close()
        assert len(pacs.received) == 2
        assert len(pd.read_csv(tmp_path / "node" / "ledger.csv")) == 1
        assert len(pd.read_csv(tmp_path / "node" / "sent.csv")) == 2
    finally:
        pacs.close()


@pytest.mark.heavy  # node processes, restarts and waits: out of make test-fast
def test_pacs_down_then_up_retries_with_backoff_and_sends_once(ct_series, tmp_path):
    pacs = Pacs()
    port = pacs.port
    pacs.close()  # the PACS is down when the series is measured
    running = Running(make_node(tmp_path / "node", None))
    running.node.sender = Sender(
        running.node.out, Destination("PACS", "127.0.0.1", port), backoff=(0.3, 0.6))
    try:
        send(running.port, ct_series)
        end = time.monotonic() + 30
        while not (tmp_path / "node" / "ledger.csv").is_file() and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(1.0)  # a few failed tries
        assert running.node.jobs and next(iter(running.node.jobs.values())).tries >= 1
        from pynetdicom import AE, evt

        got = []
        ae = AE(ae_title="PACS")
        for sop in (SEG_STORAGE, SR_STORAGE):
            ae.add_supported_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        server = ae.start_server(("127.0.0.1", port), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, lambda e: got.append(e.dataset.Modality) or 0)])
        try:
            end = time.monotonic() + 20
            while len(got) < 2 and time.monotonic() < end:
                time.sleep(0.05)
            time.sleep(1.0)
        finally:
            server.shutdown()
        assert sorted(got) == ["SEG", "SR"]
    finally:
        running.close()


# --- (d) AE titles, malformed instances, dropped associations ----------------------------------------

def test_calling_ae_title_not_allowed_is_refused(ct_series, tmp_path, caplog):
    running = Running(make_node(tmp_path / "node", None, allow=["SCANNER", "ORTHANC"]))
    try:
        evil = associate(running.port, calling="EVIL")
        assert evil.is_rejected and not evil.is_established
        wrong_called = associate(running.port, calling="SCANNER", called="NOTME")
        assert wrong_called.is_rejected
        good = associate(running.port, calling="SCANNER")
        assert good.is_established
        assert int(good.send_c_echo().Status) == 0
        good.release()
    finally:
        running.close()
    lines = [parse_line(f"x l3seg-serve {r.levelname} {r.getMessage()}") for r in caplog.records]
    refused = [f for f in lines if f.get("event") == "association-refused"]
    assert refused and refused[0]["calling"] == "EVIL" and "not allowed" in refused[0]["reason"]
    assert refused[1]["called"] == "NOTME" and "'NOTME' is not this node's" in refused[1]["reason"]  # named
    assert not list((tmp_path / "node" / "incoming").glob("*/*.dcm"))


@pytest.mark.heavy  # node processes, restarts and waits: out of make test-fast
def test_malformed_instance_and_dropped_association_leave_the_node_up(ct_series, tmp_path):
    pacs = Pacs()
    running = Running(make_node(tmp_path / "node", pacs))
    try:
        bad = pydicom.dcmread(ct_series[0])
        del bad.SeriesInstanceUID
        bad.SOPInstanceUID = generate_uid()
        assoc = associate(running.port)
        assert int(assoc.send_c_store(bad).Status) == 0xA900  # refused, association goes on
        assert int(assoc.send_c_store(pydicom.dcmread(ct_series[0])).Status) == 0
        assoc.abort()  # dropped mid-series: what was acknowledged is kept
        assert send(running.port, ct_series[1:]) == [0] * (len(ct_series) - 1)
        objects = pacs.wait_for(2)
    finally:
        running.close()
        pacs.close()
    row = pd.read_csv(tmp_path / "node" / "measurements.csv").iloc[0]
    assert row["input_slices"] == len(ct_series)
    check_seg_sr(objects, ct_series, row)


def tls_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files in ``folder``); skips the
    test where openssl is missing."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_tls_and_mutual_tls(ct_series, tmp_path):
    """--tls-cert/--tls-key: only TLS associations; with --tls-ca, only peers with a certificate it signed."""
    import ssl

    from pynetdicom import AE

    from l3seg_lib.node.scp import server_ssl_context

    cert, key = tls_certificate(tmp_path)

    def tls_associate(port, with_cert: bool, tls: bool = True):
        ae = AE(ae_title="SCANNER")
        ae.acse_timeout = ae.network_timeout = 5
        ae.add_requested_context(CT_IMAGE_STORAGE, [ExplicitVRLittleEndian])
        ae.add_requested_context("1.2.840.10008.1.1")
        if not tls:
            return ae.associate("127.0.0.1", port, ae_title="L3SEG")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        if with_cert:
            ctx.load_cert_chain(str(cert), str(key))
        return ae.associate("127.0.0.1", port, ae_title="L3SEG", tls_args=(ctx, "127.0.0.1"))

    for ca in (None, cert):
        running = Running(make_node(tmp_path / f"node{ca is not None}", None, tls=server_ssl_context(cert, key, ca)))
        try:
            plain = tls_associate(running.port, False, tls=False)
            assert not plain.is_established
            if ca is not None:
                no_cert = tls_associate(running.port, False)
                assert not no_cert.is_established
            assoc = tls_associate(running.port, True)
            assert assoc.is_established
            assert int(assoc.send_c_store(pydicom.dcmread(ct_series[0])).Status) == 0
            assoc.release()
        finally:
            running.close()
        assert len(list((tmp_path / f"node{ca is not None}" / "incoming").glob("*/*.dcm"))) == 1


@pytest.mark.heavy  # node processes, restarts and waits: out of make test-fast
def test_seg_and_sr_are_sent_over_tls_to_a_tls_pacs(ct_series, tmp_path):
    """--send-tls-ca (and --send-tls-cert/--send-tls-key for mutual TLS): SEG and SR reach a PACS
    that accepts TLS only and requires the node's certificate; the numbers are those of the CSV."""
    from l3seg_lib.node.scp import client_ssl_context, server_ssl_context

    cert, key = tls_certificate(tmp_path)
    pacs = Pacs(ssl_context=server_ssl_context(cert, key, ca=cert))
    try:
        running = Running(make_node(tmp_path / "node", pacs, send_tls=client_ssl_context(cert, cert, key)))
        try:
            assert all(s == 0 for s in send(running.port, ct_series))
            objects = pacs.wait_for(2)
        finally:
            running.close()
        row = pd.read_csv(tmp_path / "node" / "measurements.csv").iloc[0]
        check_seg_sr(objects, ct_series, row)
        sent = pd.read_csv(tmp_path / "node" / "sent.csv")
        assert sorted(sent["kind"]) == ["seg", "sr"]
    finally:
        pacs.close()


@pytest.mark.heavy  # node processes, restarts and waits: out of make test-fast
def test_a_series_that_cannot_be_measured_gets_an_sr_saying_why_once(tmp_path):
    """--refusal-sr: a series without L3 in view is not measured; the PACS gets one SR saying why
    (same study, the series as evidence), and a restarted node sends nothing again."""
    from l3seg_lib.phantom.torso import TorsoSpec, make_torso

    torso = make_torso(TorsoSpec(matrix=160, pixel_mm=2.5, z_from=130.0, z_to=200.0, slice_mm=3.0))
    series_uid, study_uid = generate_uid(), generate_uid()
    files = [write_dicom(tmp_path / "ct" / f"IM{k:04d}.dcm", torso.hu[k], spacing=(2.5, 2.5),
                         position=(-200.0, -200.0, 3.0 * k), series_uid=series_uid, patient_id="SRV2",
                         InstanceNumber=k + 1, SliceThickness="3", StudyInstanceUID=study_uid)
             for k in range(torso.hu.shape[0])]
    pacs = Pacs()
    try:
        running = Running(make_node(tmp_path / "node", pacs, refusal_sr=True))
        try:
            assert all(s == 0 for s in send(running.port, files))
            (sr,) = pacs.wait_for(1)
        finally:
            running.close()
        errors = pd.read_csv(tmp_path / "node" / "errors.csv")
        table = tmp_path / "node" / "measurements.csv"
        assert len(errors) == 1 and (not table.is_file() or not table.read_text().strip() or len(pd.read_csv(table)) == 0)
        assert sr.Modality == "SR" and sr.StudyInstanceUID == study_uid and sr.PatientID == "SRV2"
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500" and sr.SeriesDescription == "L3SEG not measured"
        (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        assert evidence.SeriesInstanceUID == series_uid
        assert {r.ReferencedSOPInstanceUID for r in evidence.ReferencedSOPSequence} == {
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}  # the series' instances
        texts = sr_texts(sr)
        text = texts["Comment"]
        assert text.startswith("L3 body composition not measured by l3seg: series " + series_uid + ": L3 not located")
        assert texts["L3 body composition measured"] == "No"
        assert "picture" not in text and "localizer/" not in text
        assert_no_machine_path(sr, tmp_path)
        running = Running(make_node(tmp_path / "node", pacs, refusal_sr=True))  # a restart sends nothing again
        try:
            running.node.drain(timeout=5)
        finally:
            running.close()
        assert len(pacs.received) == 1
        assert pd.read_csv(tmp_path / "node" / "sent.csv")["kind"].tolist() == ["refusal-sr"]
    finally:
        pacs.close()


def test_send_tls_options_are_checked(tmp_path, capsys):
    from l3seg_lib.cli import main

    assert main(["serve", "--out", str(tmp_path), "--send-tls-cert", "c.pem"]) == 2
    assert "--send-tls-key" in capsys.readouterr().err
    assert main(["serve", "--out", str(tmp_path), "--send-tls-ca", "ca.pem"]) == 2
    assert "need --send-to" in capsys.readouterr().err


def test_enhanced_ct_is_received_and_measured(tmp_path, caplog):
    """A Legacy Converted Enhanced CT (one multi-frame file) is accepted and measured; measure writes
    SEG/SR for single-frame sources only, so nothing is sent and the log says why."""
    from helpers import body_phantom
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pynetdicom import AE

    from l3seg_lib.node.scp import LEGACY_ENHANCED_CT_IMAGE_STORAGE

    hu, _ = body_phantom(64, 64)
    frames = [pydicom.dcmread(write_dicom(tmp_path / "single" / f"{k}.dcm", hu, position=(-100, -120, 3.0 * k),
                                          spacing=(3.0, 3.0),  # 192 mm: a plausible field of view, measured
                                          series_uid="1.2.7", InstanceNumber=k + 1, StudyInstanceUID="1.2.7.1",
                                          FrameOfReferenceUID="1.2.7.2", SeriesNumber=1, Manufacturer="tests"))
              for k in range(3)]
    enhanced = LegacyConvertedEnhancedCTImage(frames, series_instance_uid=generate_uid(), series_number=9,
                                              sop_instance_uid=generate_uid(), instance_number=1)
    pacs = Pacs()
    running = Running(make_node(tmp_path / "node", pacs))
    try:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(LEGACY_ENHANCED_CT_IMAGE_STORAGE, [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", running.port, ae_title="L3SEG")
        assert int(assoc.send_c_store(enhanced).Status) == 0
        assoc.release()
        end = time.monotonic() + 30
        while not any("not-sent" in r.getMessage() for r in caplog.records) and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        running.close()
        pacs.close()
    rows = pd.read_csv(tmp_path / "node" / "measurements.csv")
    assert len(rows) == 3 and not pacs.received
    assert any("not-sent" in r.getMessage() and "single-frame" in r.getMessage() for r in caplog.records)


def test_send_to_parsing():
    assert parse_destination("ORTHANC@127.0.0.1:4242") == Destination("ORTHANC", "127.0.0.1", 4242)
    assert parse_destination("PACS@[::1]:104") == Destination("PACS", "::1", 104)
    for bad in ("ORTHANC@host", "@host:1", "A@h:70000", "WAY_TOO_LONG_AE_TITLE@h:1"):
        with pytest.raises(ValueError):
            parse_destination(bad)


def test_serve_refuses_bad_options_with_status_2(tmp_path, capsys):
    from l3seg_lib.cli import main

    assert main(["serve", "--out", str(tmp_path), "--send-to", "nonsense"]) == 2
    assert main(["serve", "--out", str(tmp_path), "--ae-title", "A_TITLE_MUCH_TOO_LONG"]) == 2
    assert main(["serve", "--out", str(tmp_path), "--tls-cert", "c.pem"]) == 2
    err = capsys.readouterr().err
    assert "AE@HOST:PORT" in err and "1-16" in err and "--tls-key" in err


# --- (c) kill -9 mid-series, restart: measured once; SIGTERM stops cleanly ----------------------------

class NodeProcess:
    """``l3seg serve`` in a process of its own; its log lines collected."""

    def __init__(self, out: Path, *args: str):
        cmd = [sys.executable, "-c", "import sys; from l3seg_lib.cli import main; sys.exit(main(sys.argv[1:]))",
               "serve", "--out", str(out), "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = int(self.wait("listening")["port"])

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str) -> list[dict]:
        return [f for f in map(parse_line, list(self.lines)) if f.get("event") == name]

    def wait(self, name: str, n: int = 1, timeout: float = 60.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.events(name)
            if len(found) >= n:
                return found[n - 1]
            if self.proc.poll() is not None:
                self.reader.join(2)
                raise AssertionError(f"serve exited {self.proc.returncode}:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.05)
        raise AssertionError(f"no {name} event in {timeout} s:\n" + "\n".join(self.lines[-30:]))


@pytest.mark.heavy  # node processes, restarts and waits: out of make test-fast
def test_kill_9_mid_series_then_restart_measures_the_series_once_and_sigterm_finishes_it(ct_series, tmp_path):
    pacs = Pacs()
    out = tmp_path / "node"
    args = ("--send-to", str(pacs.destination), "--series-timeout", "3", "--read-threads", "0")
    try:
        node = NodeProcess(out, *args)
        half = len(ct_series) // 2
        assert send(node.port, ct_series[:half]) == [0] * half
        node.proc.kill()  # SIGKILL mid-series
        node.proc.wait(10)
        assert len(list((out / "incoming").glob("*/*.dcm"))) == half  # everything acknowledged is on disk
        node = NodeProcess(out, *args)
        assert node.events("series-recovered")[0]["instances"] == str(half)
        assert send(node.port, ct_series[half - 3:]) == [0] * (len(ct_series) - half + 3)  # a few again
        node.wait("series-complete")
        node.proc.send_signal(signal.SIGTERM)  # while measuring: finishes the series, then stops cleanly
        assert node.proc.wait(60) == 0
        node.reader.join(5)
        objects = pacs.wait_for(2, timeout=5)
        names = [parse_line(x).get("event") for x in node.lines]
        assert names.index("measured") < names.index("sent") < names.index("stopped")
    finally:
        pacs.close()
        if node.proc.poll() is None:
            node.proc.kill()
    rows = pd.read_csv(out / "measurements.csv")
    assert len(rows) == 1 and rows.iloc[0]["input_slices"] == len(ct_series)
    assert len(pd.read_csv(out / "ledger.csv")) == 1 and len(objects) == 2
    check_seg_sr(objects, ct_series, rows.iloc[0])
    logged = (out / "serve.log").read_text().splitlines()
    assert all(parse_line(line).get("event") for line in logged), "one event per line"
    assert {"association-accepted", "series-complete", "measured", "sent"} <= {parse_line(x)["event"] for x in logged}


# --- (b) a real PACS: Orthanc ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, data: bytes | None = None) -> object:
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    try:
        return json.loads(body)
    except ValueError:
        return body


def doc_block(language: str, containing: str) -> str:
    """The fenced ``language`` block of docs/dicom_node.md that contains ``containing``, as written."""
    import re

    text = (REPO / "docs" / "dicom_node.md").read_text()
    blocks = [b for lang, b in re.findall(r"```(\w*)\n(.*?)```", text, re.S) if lang == language and containing in b]
    assert len(blocks) == 1, f"docs/dicom_node.md has {len(blocks)} {language} blocks with {containing!r}"
    return blocks[0]


DCIODVFY_WARNINGS_ALLOWED = (
    "Warning - Unrecognized defined term <99L3SEG> for value 1 of attribute <Coding Scheme Designator>",
    "Warning - Missing attribute or value that would be needed to build DICOMDIR",
)
"""The only dciodvfy warnings on l3seg's objects: the private coding scheme, and DICOMDIR attributes
(StudyID, ...) that the source CT lacks and the derived objects copy as empty."""


def dciodvfy_problems(path: Path) -> list[str]:
    """dciodvfy's errors and unexpected warnings on ``path``."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace")
    lines = (proc.stderr + proc.stdout).splitlines()
    return [x for x in lines if x.startswith("Error") or
            (x.startswith("Warning") and not x.startswith(DCIODVFY_WARNINGS_ALLOWED))]


@pytest.mark.heavy  # node processes, restarts and waits: out of make test-fast
def test_orthanc_set_up_as_documented_forwards_series_and_gets_seg_sr_and_refusal_back(ct_series, tmp_path):
    """Orthanc configured exactly as docs/dicom_node.md says (its DicomModalities entry, its Lua
    auto-forward script, read from the page) forwards each stable CT series by itself; SEG and SR
    come back for the series with L3 (for each segment SEG area = SR number = CSV column; flags,
    confidence and level in the SR, read with pydicom and dsrdump), a refusal SR for the series
    without L3; dciodvfy finds no error and no unexpected warning; no object holds a machine path."""
    from l3seg_lib.phantom.torso import TorsoSpec, make_torso

    orthanc = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")  # Debian: /usr/sbin
    if orthanc is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc; .ci/run installs it): the real-PACS test is skipped")
    torso = make_torso(TorsoSpec(matrix=160, pixel_mm=2.5, z_from=130.0, z_to=200.0, slice_mm=3.0))
    no_l3_uid, no_l3_study = generate_uid(), generate_uid()
    no_l3 = [write_dicom(tmp_path / "nol3" / f"IM{k:04d}.dcm", torso.hu[k], spacing=(2.5, 2.5),
                         position=(-200.0, -200.0, 3.0 * k), series_uid=no_l3_uid, patient_id="SRV1",
                         InstanceNumber=k + 1, SliceThickness="3", StudyDate="20260101", StudyInstanceUID=no_l3_study)
             for k in range(torso.hu.shape[0])]
    http_port, dicom_port = free_port(), free_port()
    running = Running(make_node(tmp_path / "node", None, series_timeout=2.0, refusal_sr=True))
    running.node.sender = Sender(running.node.out, Destination("ORTHANC", "127.0.0.1", dicom_port), backoff=(0.3, 1.0))
    modalities = json.loads("{" + doc_block("json", "DicomModalities") + "}")["DicomModalities"]
    modalities["l3seg"][1:] = ["127.0.0.1", running.port]  # the documented entry, on this test's address
    lua = tmp_path / "l3seg.lua"
    lua.write_text(doc_block("lua", "OnStableSeries"))  # the documented auto-forward, as written
    db = tmp_path / "orthanc-db"
    config = {"Name": "l3seg-test", "StorageDirectory": str(db), "IndexDirectory": str(db), "HttpPort": http_port,
              "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [], "DicomCheckCalledAet": False, "StableAge": 3,
              "DicomModalities": modalities, "LuaScripts": [str(lua)]}
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "w")
    # TCP_NODELAY=1: Orthanc's DCMTK then sends without Nagle's delays (55 -> 5 ms per instance)
    proc = subprocess.Popen([orthanc, str(tmp_path / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TCP_NODELAY": "1"})
    base = f"http://127.0.0.1:{http_port}"
    found: dict[str, pydicom.Dataset] = {}
    try:
        end = time.monotonic() + 30
        while True:
            try:
                _http("GET", f"{base}/system")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    pytest.fail("Orthanc did not start: " + (tmp_path / "orthanc.log").read_text()[-2000:])
                time.sleep(0.2)
        for f in [*ct_series, *no_l3]:  # stored in Orthanc: its Lua script forwards each stable CT series
            _http("POST", f"{base}/instances", Path(f).read_bytes())
        end, wanted = time.monotonic() + 120, {"L3SEG body composition masks", "L3SEG body composition", "L3SEG not measured"}
        while time.monotonic() < end:
            described = {_http("GET", f"{base}/series/{sid}")["MainDicomTags"].get("SeriesDescription")
                         for sid in _http("GET", f"{base}/series")}
            if wanted <= described:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # nothing else arrives
        for iid in _http("GET", f"{base}/instances"):
            ds = pydicom.dcmread(io.BytesIO(_http("GET", f"{base}/instances/{iid}/file")))
            if ds.Modality in ("SEG", "SR"):
                key = "refusal" if ds.SeriesDescription == "L3SEG not measured" else ds.Modality
                found[key] = ds
                ds.save_as(tmp_path / f"{key}.dcm")
    finally:
        running.close()
        proc.terminate()
        proc.wait(20)
        log.close()
    assert sorted(found) == ["SEG", "SR", "refusal"], ("SEG, SR and refusal SR not all back in Orthanc: "
                                                       + (tmp_path / "orthanc.log").read_text()[-3000:])
    assert "Unable to read attachment" not in (tmp_path / "orthanc.log").read_text()
    rows = pd.read_csv(tmp_path / "node" / "measurements.csv")
    row = rows.iloc[0]
    assert len(rows) == 1
    check_seg_sr([found["SEG"], found["SR"]], ct_series, row)
    sr = found["SR"]
    evidence = {ref.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for ref in study.ReferencedSeriesSequence}
    assert str(pydicom.dcmread(ct_series[0], stop_before_pixels=True).SeriesInstanceUID) in evidence
    assert found["SEG"].SeriesInstanceUID in evidence
    # flags, confidence and level in the SR
    texts = sr_texts(sr)

    assert texts["Review required before use"] == ("Yes" if row["review_required"] else "No")
    if row["review_required"]:
        assert texts["Review reasons"][:40] == str(row["review_reasons"])[:40]
    assert texts["L3 localisation confidence"] == str(row["l3_confidence"])
    assert texts["L3 slice range in the series"].startswith(f"slices {row['l3_range']} of {len(ct_series)}")
    assert texts["How the vertebral level is known"].startswith("localiser")
    assert sr_numbers(sr)["SLICEINDEX"]["value"] == row["slice_index"]
    refusal = found["refusal"]
    assert refusal.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].SeriesInstanceUID == no_l3_uid
    assert len(refusal.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence) \
        == len(no_l3)
    for ds in found.values():
        assert_no_machine_path(ds, tmp_path)
    missing = [tool for tool in ("dsrdump", "dciodvfy") if not shutil.which(tool)]
    if shutil.which("dsrdump"):  # dcmtk reads the same items back
        dump = subprocess.run(["dsrdump", "+Pl", "+Pc", str(tmp_path / "SR.dcm")], capture_output=True, text=True,
                              errors="replace").stdout
        for words in ("Review required before use", "L3 localisation confidence", "L3 slice range in the series",
                      "Referenced Segment", f'"{row["l3_confidence"]}"', "Visceral obesity (JASSO 2002)"):
            assert words in dump, words
    if shutil.which("dciodvfy"):
        for key in ("SEG", "SR", "refusal"):
            assert not dciodvfy_problems(tmp_path / f"{key}.dcm"), (key, dciodvfy_problems(tmp_path / f"{key}.dcm"))
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian packages dcmtk, dicom3tools): all but their checks passed")


# --- (d) a series in two parts, a deliberate resend, the log's words ---------------------------------

def _predecessors(sr: pydicom.Dataset) -> set[str]:
    return {ref.ReferencedSOPInstanceUID for study in sr.get("PredecessorDocumentsSequence", [])
            for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}


@pytest.mark.heavy  # node processes, restarts and waits: out of make test-fast
def test_a_series_in_two_parts_the_later_result_supersedes_the_earlier(ct_series, tmp_path, caplog):
    """The first 20 slices (no L3 in view) complete alone: a refusal SR; the rest arrive later: the
    joined series is measured, and its SR lists the refusal SR as predecessor and says so; the log
    names the SeriesInstanceUID (series=) and the folder (folder=<uid>_g2)."""
    caplog.set_level("INFO", logger="l3seg.node")
    pacs = Pacs()
    running = Running(make_node(tmp_path / "node", pacs, refusal_sr=True, series_timeout=3.0))  # no split under load
    uid = str(pydicom.dcmread(ct_series[0], stop_before_pixels=True).SeriesInstanceUID)
    try:
        assert send(running.port, ct_series[:20]) == [0] * 20
        (refusal,) = pacs.wait_for(1)
        assert send(running.port, ct_series[20:]) == [0] * (len(ct_series) - 20)
        objects = pacs.wait_for(3)
        time.sleep(0.3)
    finally:
        running.close()
        pacs.close()
    assert len(pacs.received) == 3 and refusal.SeriesDescription == "L3SEG not measured"
    later = [o for o in objects[1:] if o.Modality == "SR"]
    assert len(later) == 1
    sr = later[0]
    assert _predecessors(sr) == {refusal.SOPInstanceUID}
    assert "replaces l3seg's earlier result" in sr_texts(sr)["Supersedes an earlier result"]
    row = pd.read_csv(tmp_path / "node" / "measurements.csv").iloc[0]
    check_seg_sr([o for o in objects[1:]], ct_series, row)
    events = [parse_line(f"x l3seg-serve INFO {r.getMessage()}") for r in caplog.records if r.name == "l3seg.node"]
    measured = [e for e in events if e.get("event") == "measured"]
    assert measured and measured[0]["series"] == uid and measured[0]["folder"].endswith("_g2")
    assert "sma_refined_cm2" in measured[0] and "sma_cm2" not in measured[0]
    superseded = [e for e in events if e.get("event") == "superseded"]
    assert superseded and superseded[0]["series"] == uid
    assert all(e.get("series") == uid for e in events if e.get("event") in ("not-measured", "sent", "series-complete"))
    for ds in pacs.received:
        assert_no_machine_path(ds, tmp_path)


@pytest.mark.heavy  # node processes, restarts and waits: out of make test-fast
def test_a_resent_series_is_measured_again_when_asked(ct_series, tmp_path, caplog):
    """A series sent again in full is not measured again, and the log says how to have it measured
    again; a file remeasure/<SeriesInstanceUID> does it: new SEG and SR, the SR superseding the first."""
    caplog.set_level("INFO", logger="l3seg.node")
    pacs = Pacs()
    running = Running(make_node(tmp_path / "node", pacs, series_timeout=3.0))  # no split under load
    uid = str(pydicom.dcmread(ct_series[0], stop_before_pixels=True).SeriesInstanceUID)
    try:
        send(running.port, ct_series)
        first = pacs.wait_for(2)
        send(running.port, ct_series)  # the PACS sends it again: dropped, with the way to measure it again
        end = time.monotonic() + 30
        while not any("series-repeated" in r.getMessage() for r in caplog.records) and time.monotonic() < end:
            time.sleep(0.05)
        (repeated,) = [r for r in caplog.records if "series-repeated" in r.getMessage()]
        assert repeated.levelname == "WARNING" and f"remeasure/{uid}" in repeated.getMessage()
        assert len(pacs.received) == 2
        (tmp_path / "node" / "remeasure" / uid).touch()  # the administrator asks for it again
        objects = pacs.wait_for(4)
        time.sleep(0.3)
    finally:
        running.close()
        pacs.close()
    assert len(pacs.received) == 4 and not (tmp_path / "node" / "remeasure" / uid).exists()
    first_sr = next(o for o in first if o.Modality == "SR")
    second_sr = next(o for o in objects[2:] if o.Modality == "SR")
    assert second_sr.SOPInstanceUID != first_sr.SOPInstanceUID and _predecessors(second_sr) == {first_sr.SOPInstanceUID}
    assert len(pd.read_csv(tmp_path / "node" / "measurements.csv")) == 2
    assert any("remeasure-requested" in r.getMessage() for r in caplog.records)


def test_a_failed_send_is_one_line_naming_the_cause(tmp_path, capsys):
    """Without --verbose a failed send logs one send-failed line (no pynetdicom ERROR lines) that
    tells a refused connection from a rejected called AE title; library warnings go to the log."""
    import logging
    import warnings

    from l3seg_lib.node.events import close_logging, setup_logging
    from l3seg_lib.node.sender import Item, Job

    handlers = setup_logging(tmp_path / "log")
    try:
        (tmp_path / "out").mkdir()
        dead = Sender(tmp_path / "out", Destination("PACS", "127.0.0.1", free_port()), timeout=5)
        job = Job("s", [Item("1.2.3", "sr", "x.dcm")])
        assert not dead.try_job(job, 0.0)
        assert job.last_error.startswith("connection refused: nothing listens at 127.0.0.1:")
        pacs = Pacs("PACS")
        pacs.server.ae.require_called_aet = True
        try:
            wrong = Sender(tmp_path / "out", Destination("NOT_THE_PACS", "127.0.0.1", pacs.port), timeout=5)
            job = Job("s", [Item("1.2.3", "sr", "x.dcm")])
            assert not wrong.try_job(job, 0.0)
        finally:
            pacs.close()
        assert job.last_error.startswith("association rejected by 127.0.0.1:") and "'NOT_THE_PACS'" in job.last_error
        logging.getLogger("highdicom.seg").warning("a highdicom warning")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library warning", UserWarning)
    finally:
        close_logging(handlers)
    err = capsys.readouterr().err
    lines = [parse_line(x) for x in err.splitlines()]
    assert [x["event"] for x in lines if x.get("event") == "send-failed"] == ["send-failed"] * 2
    assert all(x.get("event") in ("send-failed", "library") for x in lines), err
    assert not any(x.get("source", "").startswith("pynetdicom") for x in lines), err
    logged = (tmp_path / "log" / "serve.log").read_text()
    assert "a highdicom warning" in logged and "a library warning" in logged
