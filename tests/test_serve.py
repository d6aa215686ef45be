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
from helpers import write_dicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.models import default_model_path
from l3seg_lib.node.events import parse_line
from l3seg_lib.node.scp import CT_IMAGE_STORAGE
from l3seg_lib.node.sender import Destination, Sender, no_delay, parse_destination
from l3seg_lib.node.service import Node, NodeConfig

pynetdicom = pytest.importorskip("pynetdicom")
REPO = Path(__file__).resolve().parents[1]
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
    assert not list((tmp_path / "node" / "incoming").glob("*/*.dcm"))


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
        assert sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
        text = sr.ContentSequence[0].TextValue
        assert text.startswith("L3 body composition not measured by l3seg: ")
        assert " ".join(str(errors["error"][0]).split())[:60] in text
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


def test_orthanc_sends_a_series_and_gets_seg_and_sr_back(ct_series, tmp_path):
    orthanc = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")  # Debian: /usr/sbin
    if orthanc is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc; .ci/run installs it): the real-PACS test is skipped")
    http_port, dicom_port = free_port(), free_port()
    running = Running(make_node(tmp_path / "node", None, series_timeout=1.0))
    running.node.sender = Sender(
        running.node.out, Destination("ORTHANC", "127.0.0.1", dicom_port), backoff=(0.3, 1.0))
    db = tmp_path / "orthanc-db"
    config = {"Name": "l3seg-test", "StorageDirectory": str(db), "IndexDirectory": str(db), "HttpPort": http_port,
              "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [], "DicomCheckCalledAet": False, "StableAge": 1,
              "DicomModalities": {"l3seg": ["L3SEG", "127.0.0.1", running.port]}}
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "w")
    # TCP_NODELAY=1: Orthanc's DCMTK then sends without Nagle's delays (55 -> 5 ms per instance)
    proc = subprocess.Popen([orthanc, str(tmp_path / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TCP_NODELAY": "1"})
    base = f"http://127.0.0.1:{http_port}"
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
        for f in ct_series:
            info = _http("POST", f"{base}/instances", Path(f).read_bytes())
        orthanc_series = info["ParentSeries"]
        assert _http("POST", f"{base}/modalities/l3seg/echo", b"{}") is not None
        _http("POST", f"{base}/modalities/l3seg/store", orthanc_series.encode())  # Orthanc -> node (C-STORE)
        end = time.monotonic() + 60
        while len(_http("GET", f"{base}/instances")) < len(ct_series) + 2 and time.monotonic() < end:
            time.sleep(0.2)
        found = {}
        for iid in _http("GET", f"{base}/instances"):
            ds = pydicom.dcmread(io.BytesIO(_http("GET", f"{base}/instances/{iid}/file")))
            if ds.Modality in ("SEG", "SR"):
                found[ds.Modality] = ds
    finally:
        running.close()
        proc.terminate()
        proc.wait(20)
        log.close()
    assert sorted(found) == ["SEG", "SR"], "SEG and SR not found back in Orthanc"
    row = pd.read_csv(tmp_path / "node" / "measurements.csv").iloc[0]
    check_seg_sr(list(found.values()), ct_series, row)
    sr = found["SR"]
    evidence = {ref.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for ref in study.ReferencedSeriesSequence}
    assert str(pydicom.dcmread(ct_series[0], stop_before_pixels=True).SeriesInstanceUID) in evidence
    assert found["SEG"].SeriesInstanceUID in evidence
