"""Faults on the output side of ``l3seg measure`` (issue 23): hostile identifiers, cells a
spreadsheet would run, exit codes, one writer per output folder, unwritable outputs."""

from __future__ import annotations

import csv

import pytest
from filelock import FileLock
from helpers import body_phantom, write_dicom

from l3seg_lib.cli import main
from l3seg_lib.names import MAX_NAME, clean_text, csv_cell, safe_name


# ------------------------------------------------------------------ names and cells (no model)


@pytest.mark.parametrize("name", ["x" * 5000, ".", "..", ".hidden", "", "a/b", "a\x00b\x1b", "Müller", "CON",
                                  "=HYPERLINK(\"http://x\")", "trailing. "])
def test_safe_name_is_short_portable_and_never_hidden(name):
    s = safe_name(name)
    assert 0 < len(s) <= MAX_NAME
    assert not s.startswith(".") and not s.endswith((".", " "))
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in s)
    assert s.split(".")[0].upper() not in {"CON", "NUL", "PRN", "AUX"}


def test_safe_name_keeps_safe_names_and_tells_others_apart():
    assert safe_name("P001") == "P001" and safe_name("ct_1.dcm") == "ct_1.dcm"
    names = ["a b", "a_b", "a:b", "x" * 5000, "x" * 4999, ".", "_", "..", "Müller", "Muller"]
    assert len({safe_name(n) for n in names}) == len(names)


def test_csv_cells_are_neutralised_and_cleaned():
    assert csv_cell('=HYPERLINK("http://evil","x")') == '\'=HYPERLINK("http://evil","x")'
    for bad in ("+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1", " =1"):
        assert csv_cell(bad).startswith("'"), bad
    for number in ("-12.5", "-3", "+4", "-1e-3"):
        assert csv_cell(number) == number
    assert csv_cell(-12.5) == -12.5 and csv_cell(None) is None
    assert clean_text("a\x00b\x1b[31mc\nd") == "ab[31mc d"
    assert csv_cell("P\x00001") == "P001"


# ------------------------------------------------------------------ the command line (shipped model)


def _series(folder, *patient_ids):
    hu, _ = body_phantom(64, 64)
    for k, pid in enumerate(patient_ids):
        write_dicom(folder / f"IM{k:04d}.dcm", hu, spacing=(3.0, 3.0), patient_id=pid, series_uid=f"1.2.826.0.1.3680043.9.7.{k + 1}")
    return folder


def _bad(folder):
    hu, _ = body_phantom(64, 64)
    return write_dicom(folder / "nospacing.dcm", hu, patient_id="BAD", drop=("PixelSpacing",),
                       series_uid="1.2.826.0.1.3680043.9.7.99")


def test_hostile_patient_ids_are_measured_with_safe_files_and_cells(tmp_path, capsys):
    long_id, formula = "P" * 5000, '=HYPERLINK("http://evil.example","click")'
    _series(tmp_path / "in", long_id, ".", formula, "ESC\x1b[31mRED")
    out = tmp_path / "out"
    assert main(["measure", str(tmp_path / "in"), "--out", str(out)]) == 0, capsys.readouterr().err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert all(not p.name.startswith(".") or p.name == ".l3seg.lock" for p in files), files
    assert all(len(p.name) <= 255 for p in files)
    with open(out / "measurements.csv", newline="") as f:
        ids = [r["patient_id"] for r in csv.DictReader(f)]
    assert len(ids) == 4 and "'" + formula in ids and formula not in ids
    raw = (out / "measurements.csv").read_text() + (out / "index.html").read_text()
    assert "\x1b" not in raw and "\x00" not in raw
    # a rerun takes everything from the ledger and adds no rows
    assert main(["measure", str(tmp_path / "in"), "--out", str(out)]) == 0
    assert len((out / "ledger.csv").read_text().splitlines()) == 1 + 4


def test_exit_codes(tmp_path, capsys):
    _series(tmp_path / "good", "A")
    _bad(tmp_path / "good")
    assert main(["measure", str(tmp_path / "good"), "--out", str(tmp_path / "o1")]) == 1  # some refused
    _bad(tmp_path / "bad")
    assert main(["measure", str(tmp_path / "bad"), "--out", str(tmp_path / "o2")]) == 2  # nothing measured
    err = capsys.readouterr().err
    assert "no input measured" in err and "Traceback" not in err


def test_a_second_batch_on_the_same_output_is_refused(tmp_path, capsys):
    _series(tmp_path / "in", "A")
    out = tmp_path / "out"
    out.mkdir()
    lock = FileLock(str(out / ".l3seg.lock"))
    with lock:
        assert main(["measure", str(tmp_path / "in"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {out}: in use by another l3seg measure (lock file {out / '.l3seg.lock'})" in err
    assert not (out / "ledger.csv").exists()
    assert main(["measure", str(tmp_path / "in"), "--out", str(out)]) == 0  # the lock is free again


def test_an_unwritable_output_is_fatal_and_a_rerun_finishes(tmp_path, capsys):
    _series(tmp_path / "in", "A", "B")
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlays").write_text("a file where a folder is expected")
    assert main(["measure", str(tmp_path / "in"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(out / "overlays") in err and "Traceback" not in err
    assert not (out / "ledger.csv").exists() or "refused" not in (out / "ledger.csv").read_text()
    (out / "overlays").unlink()
    assert main(["measure", str(tmp_path / "in"), "--out", str(out)]) == 0
    assert len(list((out / "overlays").glob("*.png"))) == 2


def test_output_folder_that_is_a_file(tmp_path, capsys):
    _series(tmp_path / "in", "A")
    (tmp_path / "out").write_text("not a folder")
    assert main(["measure", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'out'}") and "Traceback" not in err


def test_a_write_failing_mid_batch_stops_it_and_the_ledger_keeps_only_finished_inputs(tmp_path, monkeypatch):
    import errno

    from l3seg_lib.errors import OutputError
    from l3seg_lib.measurement import writers
    from l3seg_lib.measurement.ledger import Ledger
    from l3seg_lib.measurement.orchestration import measure_folder
    from l3seg_lib.models import default_model_path

    _series(tmp_path / "in", "A", "B", "C")
    out = tmp_path / "out"
    real, calls = writers.export_masks, []

    def failing(out_dir, stem, *args, **kwargs):
        calls.append(stem)
        if len(calls) == 2:
            raise OSError(errno.EROFS, "Read-only file system", str(out_dir / "masks" / f"{stem}.nii.gz"))
        return real(out_dir, stem, *args, **kwargs)

    monkeypatch.setattr(writers, "export_masks", failing)
    with pytest.raises(OutputError, match="Read-only file system") as info:
        measure_folder(tmp_path / "in", default_model_path(), out)
    assert str(out / "masks") in str(info.value)
    rows = (out / "ledger.csv").read_text().splitlines()
    assert len(rows) == 2 and "refused" not in rows[1]  # the first input only, never a 'refused' one
    res = measure_folder(tmp_path / "in", default_model_path(), out)  # the rerun finishes the batch
    assert res.inputs_measured == 3 and res.inputs_not_measured == 0 and len(calls) == 4
    assert len(Ledger(out, "").path.read_text().splitlines()) == 1 + 3
