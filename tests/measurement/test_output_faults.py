"""Issue 23, what is left of it: the smallest image ``measure`` and ``predict`` take, outputs that
are never torn (every file written under a temporary name and renamed into place when complete),
a batch killed with SIGKILL and run again, an output folder that is read-only, ``remeasure`` on
IDs that the CSV neutralised, and a PyTorch file given as the model. With the shipped model."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers import body_phantom, paint_muscle_square, write_dicom
from PIL import Image

from l3seg_lib.cli import main
from l3seg_lib.imageio.labels import read_tag
from l3seg_lib.measurement.ledger import Ledger
from l3seg_lib.names import read_csv_values

REPO = pathlib.Path(__file__).resolve().parents[2]


def _inputs(folder, *patient_ids, spacing=(3.0, 3.0)):
    """One single-slice DICOM input per patient ID (64 px of 3 mm: a plausible field of view)."""
    hu, _ = body_phantom(64, 64)
    for k, pid in enumerate(patient_ids):
        write_dicom(folder / f"IM{k:04d}.dcm", hu, spacing=spacing, patient_id=pid,
                    series_uid=f"1.2.826.0.1.3680043.9.8.{k + 1}")
    return folder


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


# ------------------------------------------------------------------ the smallest image measured


@pytest.mark.parametrize("shape, spacing, message", [
    ((1, 1), (3.0, 3.0), r"the image matrix is 1x1 pixels \(Rows x Columns\); a CT slice needs at least"),
    ((32, 32), (3.0, 3.0), r"the image matrix is 32x32 pixels \(Rows x Columns\); a CT slice needs at least 64x64"),
    ((64, 64), (0.8, 0.7), r"the field of view is 51 x 45 mm \(matrix 64x64 x pixel spacing 0.8 x 0.7 mm\); "
                           r"an abdominal CT slice at L3 needs at least 150 mm"),
])
def test_measure_refuses_an_image_smaller_than_a_ct_slice_also_without_the_hu_check(tmp_path, capsys, shape, spacing,
                                                                                    message):
    import re

    hu = np.full(shape, 40.0, np.float32) if shape == (1, 1) else body_phantom(*shape)[0]
    path = write_dicom(tmp_path / "in" / "small.dcm", hu, spacing=spacing)
    for extra in ([], ["--no-hu-check"]):
        out = tmp_path / f"out{len(extra)}"
        assert main(["measure", str(tmp_path / "in"), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        lines = _error_lines(err)
        assert lines[0].startswith(f"error: {path}: ") and re.search(message, lines[0]), err
        assert lines[-1] == f"error: {tmp_path / 'in'}: no input measured" and "Traceback" not in err
        assert re.search(message, pd.read_csv(out / "errors.csv")["error"].iloc[0])
        assert not list((out / "masks").glob("*.nii.gz")) and not list((out / "overlays").glob("*.png"))


def test_predict_refuses_an_image_smaller_than_a_ct_slice_and_the_minimum_is_an_option(tmp_path, capsys):
    hu, _ = body_phantom(64, 64)
    path = write_dicom(tmp_path / "small.dcm", hu, spacing=(0.8, 0.7))
    assert main(["predict", str(path), "--out", str(tmp_path / "p"), "--no-hu-check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: the field of view is 51 x 45 mm") and "Traceback" not in err
    assert not (tmp_path / "p").exists()  # refused before anything is written
    # lowered explicitly (a synthetic test image), it is segmented
    assert main(["predict", str(path), "--out", str(tmp_path / "p"), "--min-fov-mm", "40"]) == 0
    assert (tmp_path / "p" / "areas.csv").is_file()


def test_the_minimum_can_be_lowered_but_never_below_the_floor(tmp_path):
    from l3seg_lib.measurement.options import MeasureOptions
    from l3seg_lib.measurement.orchestration import measure_folder
    from l3seg_lib.models import default_model_path

    hu, _ = body_phantom(64, 64)
    write_dicom(tmp_path / "in" / "small.dcm", hu, spacing=(0.8, 0.7), patient_id="SMALL")
    write_dicom(tmp_path / "in" / "one.dcm", np.full((1, 1), 40.0, np.float32), patient_id="ONE")
    opt = MeasureOptions(progress=False, check_hu=False, min_matrix=1, min_fov_mm=0.0)
    res = measure_folder(tmp_path / "in", default_model_path(), tmp_path / "out", opt)
    assert res.measurements["patient_id"].tolist() == ["SMALL"]  # 64 px of 0.8 mm: measured when asked
    assert len(res.errors) == 1 and "matrix is 1x1 pixels" in res.errors["error"].iloc[0]  # 1x1: never


# ------------------------------------------------------------------ no torn output, and a rerun finishes


def _valid(path: pathlib.Path) -> None:
    """Raises unless ``path`` is a complete file of its kind."""
    name = path.name
    if name.endswith(".nii.gz"):
        np.asarray(nib.load(str(path)).dataobj)
    elif name.endswith(".tag"):
        read_tag(path)
    elif name.endswith(".png"):
        with Image.open(path) as im:
            im.load()
    elif name.endswith(".dcm"):
        ds = pydicom.dcmread(path)
        assert "PixelData" in ds or "ContentSequence" in ds, path
    elif name.endswith(".html"):
        assert path.read_text().rstrip().endswith("</html>"), path
    elif name.endswith(".csv"):
        pd.read_csv(path)


def _check_outputs(out: pathlib.Path) -> None:
    files = [p for p in out.rglob("*") if p.is_file()]
    leftovers = [p for p in files if p.name.startswith(".tmp")]
    assert not leftovers, leftovers
    for p in files:
        if not p.name.startswith("."):
            _valid(p)


def _partial(data: bytes) -> bytes:
    return data[: max(len(data) // 2, 1)]


class _Fault:
    """Makes the ``nth`` write of a file whose name ends with ``suffix`` write half its bytes, then
    fail as a full disk does."""

    def __init__(self, suffix: str, nth: int = 2):
        self.suffix, self.nth, self.calls = suffix, nth, 0

    def hit(self, target) -> bool:
        if not str(target).endswith(self.suffix):
            return False
        self.calls += 1
        return self.calls == self.nth

    @staticmethod
    def fail(target):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))


def _install(monkeypatch, kind: str) -> _Fault:
    """Patch the writer of ``kind`` with a :class:`_Fault`."""
    suffix = {"mask": ".nii.gz", "tag": ".tag", "overlay": ".png", "seg": "_seg.dcm", "sr": "_sr.dcm",
              "page": ".html", "table": ".csv", "localizer": ".png"}[kind]
    fault = _Fault(suffix)
    if kind == "mask":
        real = nib.save

        def save(img, filename):
            if fault.hit(filename):
                pathlib.Path(filename).write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 40)
                fault.fail(filename)
            return real(img, filename)

        monkeypatch.setattr(nib, "save", save)
    elif kind in ("seg", "sr"):
        real_save = pydicom.Dataset.save_as

        def save_as(self, filename, *args, **kwargs):
            if fault.hit(filename):
                pathlib.Path(filename).write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
                fault.fail(filename)
            return real_save(self, filename, *args, **kwargs)

        monkeypatch.setattr(pydicom.Dataset, "save_as", save_as)
    else:
        method = "write_text" if kind in ("page", "table") else "write_bytes"
        real_write = getattr(pathlib.Path, method)

        def write(self, data, *args, **kwargs):
            if fault.hit(self.name):
                real_write(self, _partial(data), *args, **kwargs)
                fault.fail(self)
            return real_write(self, data, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, method, write)
    return fault


@pytest.mark.parametrize("kind", ["mask", "tag", "overlay", "seg", "sr", "page", "table"])
def test_a_write_failing_midway_leaves_no_torn_file_and_a_rerun_without_force_finishes(tmp_path, monkeypatch,
                                                                                       capsys, kind):
    folder = _inputs(tmp_path / "in", "A", "B", "C")
    out = tmp_path / "out"
    args = ["measure", str(folder), "--out", str(out), "--dicom"]
    fault = _install(monkeypatch, kind)
    assert main(args) == 2
    assert fault.calls >= 2  # the fault was hit
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and "cannot write output: No space left on device" in lines[0], err
    assert lines[0].startswith(f"error: {out}") and ".tmp" not in lines[0] and "Traceback" not in err
    _check_outputs(out)  # nothing torn under a final name, no temporary file left
    if (out / "ledger.csv").is_file():
        ledger = pd.read_csv(out / "ledger.csv")
        assert set(ledger["status"]) == {"measured"}  # never a 'refused' input for an output fault
        for res in Ledger(out, ledger["model_sha256"].iloc[0]).finished().values():  # each has its files
            for row in res.rows:
                for rel in (row.overlay, row.mask_nifti, row.mask_tag, row.dicom_seg, row.dicom_sr):
                    _valid(out / rel)
    monkeypatch.undo()
    assert main(args) == 0  # the rerun, without --force, finishes the batch
    table = pd.read_csv(out / "measurements.csv", dtype={"patient_id": str})
    assert sorted(table["patient_id"]) == ["A", "B", "C"]
    for col in ("overlay", "mask_nifti", "mask_tag", "dicom_seg", "dicom_sr"):
        for rel in table[col]:
            assert (out / rel).is_file(), rel
    _check_outputs(out)
    ledger = pd.read_csv(out / "ledger.csv")
    assert ledger["source"].nunique() == 3 and set(ledger["status"]) == {"measured"}


def test_the_ledger_lists_an_input_only_once_its_files_exist(tmp_path, monkeypatch):
    from l3seg_lib.measurement import ledger as ledger_module

    folder = _inputs(tmp_path / "in", "A", "B")
    out = tmp_path / "out"
    real, seen = ledger_module.Ledger.record, []

    def record(self, result):
        for row in result.rows:  # at the moment the ledger records it
            for rel in (row.overlay, row.mask_nifti, row.mask_tag, row.dicom_seg, row.dicom_sr):
                assert (out / rel).is_file(), rel
                _valid(out / rel)
        seen.append(result.source)
        return real(self, result)

    monkeypatch.setattr(ledger_module.Ledger, "record", record)
    assert main(["measure", str(folder), "--out", str(out), "--dicom"]) == 0
    assert len(seen) == 2


_KILLER = """
import os, signal, sys
import nibabel as nib
real, calls = nib.save, []

def save(img, filename):  # the second mask: half written, then the process is killed
    calls.append(filename)
    if len(calls) == 2:
        with open(filename, "wb") as f:
            f.write(b"\\x1f\\x8b\\x08\\x00" + b"\\0" * 40)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(img, filename)

nib.save = save
from l3seg_lib.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_mid_batch_then_a_rerun_finishes_with_nothing_torn_or_lost(tmp_path):
    folder = _inputs(tmp_path / "in", "A", "B", "C")
    out = tmp_path / "out"
    args = ["measure", str(folder), "--out", str(out), "--read-threads", "0"]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLER), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert list((out / "masks").glob(".tmp*"))  # the torn file sits under a temporary name only
    masks = [p.name for p in (out / "masks").glob("*.nii.gz") if not p.name.startswith(".")]
    assert masks == ["A_IM0000.dcm_s000.nii.gz"]
    assert main(args) == 0  # the lock died with the process; the rerun takes the ledger's inputs and does the rest
    table = pd.read_csv(out / "measurements.csv", dtype={"patient_id": str})
    assert sorted(table["patient_id"]) == ["A", "B", "C"]
    _check_outputs(out)  # the killed batch's temporary files are gone too
    ledger = pd.read_csv(out / "ledger.csv")
    assert ledger["source"].is_unique and len(ledger) == 3  # each input measured once in all


def test_a_ledger_row_cut_by_a_kill_is_measured_again_and_the_next_row_kept(tmp_path):
    from l3seg_lib.measurement.result import InputResult

    ledger = Ledger(tmp_path, "sha")
    ledger.record(InputResult("a.dcm"))
    with open(ledger.path, "a") as f:
        f.write("b.dcm,meas")  # killed while appending the row of b.dcm
    ledger.record(InputResult("c.dcm"))
    assert sorted(Ledger(tmp_path, "sha").finished()) == ["a.dcm", "c.dcm"]  # b.dcm is measured again


def test_a_read_only_output_folder_is_fatal_names_it_and_a_rerun_finishes(tmp_path, monkeypatch, capsys):
    folder = _inputs(tmp_path / "in", "A")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse writes under OUT as a read-only file system does
        real_open = os.open

        def ro_open(path, flags, *args, **kwargs):
            if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", ro_open)
    try:
        assert main(["measure", str(folder), "--out", str(out)]) == 2
    finally:
        monkeypatch.undo()
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}") and "cannot write output" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "ledger.csv").exists() and not (out / "measurements.csv").exists()
    assert main(["measure", str(folder), "--out", str(out)]) == 0


# ------------------------------------------------------------------ remeasure reads the neutralised cells back


def test_remeasure_round_trips_ids_and_sources_that_the_csv_neutralised(tmp_path, monkeypatch):
    formula = '=HYPERLINK("http://evil.example","click")'
    ids = [formula, "+1", "-x", "@SUM(A1)", "'=quoted"]
    folder = tmp_path / "in"
    hu, _ = body_phantom(64, 64)
    names = ["=cmd.dcm", "+2.dcm", "-y.dcm", "@z.dcm", "plain.dcm"]
    for k, (pid, name) in enumerate(zip(ids, names)):
        write_dicom(folder / name, hu, spacing=(3.0, 3.0), patient_id=pid, series_uid=f"1.2.826.0.1.3680043.9.9.{k}")
    out = tmp_path / "out"
    monkeypatch.chdir(folder)  # sources relative to here: "=cmd.dcm", a cell a spreadsheet would run
    assert main(["measure", ".", "--out", str(out)]) == 0
    raw = (out / "measurements.csv").read_text()
    assert "\n=" not in raw and ",=" not in raw and ",+2.dcm" not in raw  # neutralised cells
    measured = read_csv_values(out / "measurements.csv", dtype={"patient_id": str, "source": str})
    assert sorted(measured["patient_id"]) == sorted(ids) and sorted(measured["source"]) == sorted(names)
    # the ledger reads its neutralised sources back: a rerun measures nothing again
    assert main(["measure", ".", "--out", str(out)]) == 0
    assert len(pd.read_csv(out / "ledger.csv")) == len(ids)
    # edit the formula patient's mask; remeasure finds its source and keeps every ID and slice
    row = measured[measured["patient_id"] == formula].iloc[0]
    paint_muscle_square(out / row["mask_nifti"])
    assert main(["remeasure", str(out)]) == 0
    after = read_csv_values(out / "remeasured.csv", dtype={"patient_id": str, "source": str})
    assert after["patient_id"].tolist() == measured["patient_id"].tolist()
    assert after["source"].tolist() == measured["source"].tolist()
    assert after["slice_index"].tolist() == measured["slice_index"].tolist()
    assert "remeasure_error" not in after or after["remeasure_error"].isna().all()
    assert after.loc[after["patient_id"] == formula, "mask_edited"].notna().all()
    audit = read_csv_values(out / "audit.csv", dtype={"patient_id": str})
    assert audit["patient_id"].tolist() == [formula]
    assert "\n=" not in (out / "remeasured.csv").read_text() and ",=" not in (out / "audit.csv").read_text()


def test_csv_value_undoes_csv_cell():
    from l3seg_lib.names import csv_cell, csv_value

    for value in ['=HYPERLINK("x")', "+1", "+1+2", "-x", "@a", " =1", "'=x", "''=x", "'", "'abc", "abc", "", "-12.5",
                  "'+1"]:
        assert csv_value(csv_cell(value)) == value, value
    assert csv_value(csv_cell("\t=1")) == " =1"  # control characters are cleaned, not kept
    assert csv_value(3.5) == 3.5 and csv_value(None) is None


# ------------------------------------------------------------------ a PyTorch file given as the model


def _unsafe_pt(tmp_path):
    """A PyTorch file whose unpickling would run a command (touch ``flag``): (file, flag)."""
    torch = pytest.importorskip("torch")
    flag = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    model = tmp_path / "model.pt"
    torch.save({"state_dicts": [Payload()]}, model)
    return model, flag


def test_an_unsafe_pytorch_file_as_model_is_refused_without_running_it_or_quoting_pytorch(tmp_path, capsys):
    model, flag = _unsafe_pt(tmp_path)
    folder = _inputs(tmp_path / "in", "A")
    for command in (["measure", str(folder), "--out", str(tmp_path / "m")],
                    ["predict", str(folder / "IM0000.dcm"), "--out", str(tmp_path / "p")]):
        assert main([*command, "--model", str(model)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {model}: not a readable ONNX model file (a PyTorch checkpoint?")
        assert "weights_only" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not flag.exists()


def test_an_unsafe_pytorch_file_for_finetune_is_refused_without_quoting_pytorch(tmp_path):
    model, flag = _unsafe_pt(tmp_path)
    from l3seg_lib.errors import L3SegInputError
    from l3seg_lib.training.checkpoint import load_checkpoint

    with pytest.raises(L3SegInputError, match="not a safe l3seg model file") as info:
        load_checkpoint(model)
    assert not flag.exists()
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
