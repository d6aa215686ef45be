"""Speed of ``l3seg serve``, the DICOM node, on loopback (2 CPU cores here).

    .venv/bin/python benchmarks/bench_serve.py [--slices 300] [--repeats 3] [--series-timeout 2]
                                               [--nagle]

A synthetic torso series (``--slices`` axial DICOM slices of 512 x 512 pixels of 0.8 mm, 2 mm
apart, sacrum upwards, curved couch, contrast aorta; as in bench_measure.py) is written once. Each
repetition starts a fresh ``l3seg serve`` process (its start-up is not timed) with a pynetdicom
SCP in this process standing in for the PACS, sends the series by C-STORE in one association
(new UIDs each time) and prints, as medians over ``--repeats``:

* instances received per second (first C-STORE sent to last C-STORE answered: each instance on
  disk and fsync'ed before its answer);
* seconds from the series being complete (the node's ``series-complete`` log line, i.e. the last
  instance plus ``--series-timeout``) to SEG and SR acknowledged by the PACS (the PACS's handler
  for the second of them);
* seconds from the first instance received to SEG and SR acknowledged (everything, including the
  series timeout).

The sender switches Nagle's algorithm off, as DCMTK-based senders (Orthanc, dcmsend) do;
``--nagle`` leaves it on, as a plain pynetdicom SCU does (about 40 ms more per instance, waiting
for a delayed ACK: see :func:`l3seg_lib.node.sender.no_delay`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"


def write_series(folder: Path, slices: int) -> list[Path]:
    """The benchmark series (as bench_measure.py writes it)."""
    from helpers import write_dicom

    from l3seg_lib.phantom.torso import TorsoSpec, make_torso

    torso = make_torso(TorsoSpec(slice_mm=2.0, matrix=512, pixel_mm=0.8, z_from=-150.0, z_to=-150.0 + 2.0 * (slices - 1),
                                 table="curved", table_gap_mm=10.0, contrast_hu=300.0))
    return [write_dicom(folder / f"IM{k:04d}.dcm", torso.hu[k], spacing=(0.8, 0.8), position=(-205.0, -185.0, 2.0 * k),
                        series_uid="1.2.826.0.1.3680043.10.2.3", patient_id="BENCH", InstanceNumber=k + 1,
                        SliceThickness="2") for k in range(torso.hu.shape[0])]


class Pacs:
    """A pynetdicom Storage SCP for SEG and SR, noting when each object arrived (time.time())."""

    def __init__(self):
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE, evt

        self.arrived: list[tuple[float, str]] = []
        ae = AE(ae_title="PACS")
        for sop in (SEG_STORAGE, SR_STORAGE):
            ae.add_supported_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

        def on_store(event):
            self.arrived.append((time.time(), event.dataset.Modality))
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        self.port = self.server.server_address[1]


def start_node(out: Path, pacs_port: int, series_timeout: float) -> tuple[subprocess.Popen, int, list[str]]:
    """``l3seg serve`` in a process of its own; (process, port, its log lines as they come)."""
    from l3seg_lib.node.events import parse_line

    cmd = [sys.executable, "-c", "import sys; from l3seg_lib.cli import main; sys.exit(main(sys.argv[1:]))",
           "serve", "--out", str(out), "--port", "0", "--send-to", f"PACS@127.0.0.1:{pacs_port}",
           "--series-timeout", str(series_timeout)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(x.rstrip("\n")) for x in proc.stdout], daemon=True).start()
    end = time.monotonic() + 120
    while time.monotonic() < end:
        for line in list(lines):
            f = parse_line(line)
            if f.get("event") == "listening":
                return proc, int(f["port"]), lines
        if proc.poll() is not None:
            raise SystemExit("serve exited:\n" + "\n".join(lines))
        time.sleep(0.05)
    raise SystemExit("serve did not start")


def event_time(lines: list[str], name: str) -> float | None:
    """time.time() of the first log line of event ``name``."""
    from l3seg_lib.node.events import parse_line

    for line in list(lines):
        f = parse_line(line)
        if f.get("event") == name:
            return dt.datetime.fromisoformat(f["time"]).timestamp()
    return None


def one_run(datasets, out: Path, series_timeout: float, nagle: bool) -> dict[str, float]:
    """Send the series to a fresh node once; the timings."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from pynetdicom import AE

    from l3seg_lib.node.sender import no_delay

    pacs = Pacs()
    proc, port, lines = start_node(out, pacs.port, series_timeout)
    try:
        series_uid = generate_uid()
        for ds in datasets:
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", port, ae_title="L3SEG")
        if not nagle:
            no_delay(assoc)
        t_first = time.time()
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if int(status.Status) != 0:
                raise SystemExit(f"C-STORE status 0x{int(status.Status):04X}")
        t_last = time.time()
        assoc.release()
        end = time.monotonic() + 600
        while len(pacs.arrived) < 2 and time.monotonic() < end:
            time.sleep(0.02)
        if len(pacs.arrived) < 2:
            raise SystemExit("SEG and SR did not arrive:\n" + "\n".join(lines[-20:]))
        t_acked = max(t for t, _ in pacs.arrived)
        t_complete = event_time(lines, "series-complete")
        t_measured = event_time(lines, "measured")
    finally:
        proc.terminate()
        proc.wait(60)
        pacs.server.shutdown()
    return {"instances_per_s": len(datasets) / (t_last - t_first), "receive_s": t_last - t_first,
            "complete_to_acked_s": t_acked - t_complete, "complete_to_measured_s": t_measured - t_complete,
            "first_to_acked_s": t_acked - t_first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--series-timeout", type=float, default=2.0)
    ap.add_argument("--nagle", action="store_true", help="leave Nagle's algorithm on in the sender")
    args = ap.parse_args()

    import pydicom

    tmp = Path(tempfile.mkdtemp(prefix="l3seg-bench-serve-"))
    try:
        t0 = time.perf_counter()
        files = write_series(tmp / "series", args.slices)
        datasets = [pydicom.dcmread(f) for f in files]
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"series: {args.slices} slices of 512 x 512 ({mb:.0f} MB), written in {time.perf_counter() - t0:.0f} s; "
              f"series timeout {args.series_timeout} s; sender {'with' if args.nagle else 'without'} Nagle")
        runs = []
        for k in range(args.repeats):
            r = one_run(datasets, tmp / f"out{k}", args.series_timeout, args.nagle)
            runs.append(r)
            print(f"  run {k + 1}: " + ", ".join(f"{key} {v:.2f}" for key, v in r.items()), flush=True)
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"median of {len(runs)}: {med['instances_per_s']:.0f} instances/s received "
              f"({med['receive_s']:.1f} s for {args.slices}); series complete -> SEG+SR acknowledged by the PACS "
              f"{med['complete_to_acked_s']:.1f} s (measured after {med['complete_to_measured_s']:.1f} s); "
              f"first instance -> acknowledged {med['first_to_acked_s']:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
