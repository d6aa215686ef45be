"""Every file left out of a batch is listed with why in ``OUT/skipped.csv`` (issue 23), and the
terminal shows one line per refused input, ``error: <file>: <problem>``, never a padded table."""

from __future__ import annotations

import errno
import os
import re

import pandas as pd
from helpers import body_phantom, write_dicom

from l3seg_lib.cli import main


def _folder(root):
    """A folder with two inputs (one good, one broken) and everything a real folder holds besides."""
    hu, _ = body_phantom(64, 64)
    folder = root / "in"
    write_dicom(folder / "good.dcm", hu, spacing=(3.0, 3.0), patient_id="GOOD")
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    (folder / "masks").mkdir()
    (folder / "masks" / "good.nii.gz").write_bytes(b"not read")
    (folder / "empty").mkdir()
    (folder / "notes.txt").write_text("x")
    (folder / "scan.raw").write_bytes(b"\0" * 200)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._good.dcm").write_bytes(b"\0\5\26\7AppleDouble")  # macOS companion file, not DICOM
    (folder / ".git").mkdir()
    (folder / "locked.dcm").write_bytes(b"\0" * 128 + b"DICM")
    os.symlink(folder / "gone.dcm", folder / "dangling.dcm")
    # a series folder with another series (a dose report) in it: left out inside the series, listed too
    for k in range(2):
        write_dicom(folder / "series" / f"IM{k}.dcm", hu, spacing=(3.0, 3.0), position=(-100.0, -120.0, 3.0 * k),
                    series_uid="1.2.826.0.1.3680043.9.10.1", patient_id="SER")
    write_dicom(folder / "series" / "dose.dcm", hu, spacing=(3.0, 3.0), series_uid="1.2.826.0.1.3680043.9.10.2",
                patient_id="SER", ImageType=["DERIVED", "SECONDARY", "DOSE_INFO"])
    return folder


def _no_permission(monkeypatch, *names):
    """Opening these files for reading is refused (as for another user's file; root reads everything)."""
    from l3seg_lib.measurement import inputs

    def guarded_open(path, *args, **kwargs):
        if os.path.basename(str(path)) in names:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(inputs, "open", guarded_open, raising=False)


def test_every_file_left_out_is_listed_with_why_and_refusals_are_one_line_each(tmp_path, monkeypatch, capsys):
    folder = _folder(tmp_path)
    _no_permission(monkeypatch, "locked.dcm")
    out = tmp_path / "out"
    assert main(["measure", str(folder), "--out", str(out)]) == 1  # broken.dcm refused, the others measured
    captured = capsys.readouterr()
    skipped = pd.read_csv(out / "skipped.csv", keep_default_na=False)
    assert list(skipped.columns) == ["source", "file", "reason"]
    top = skipped[skipped["source"] == str(folder)]
    why = dict(zip(top["file"], top["reason"]))
    assert set(why) == {"masks/", "empty/", "notes.txt", "scan.raw", ".DS_Store", "._good.dcm", ".git/", "locked.dcm",
                        "dangling.dcm"}, why
    assert "NIfTI/PNG" in why["masks/"] and why["empty/"] == "empty sub-folder"
    assert why["notes.txt"] == "not an image (.txt file)" and why["scan.raw"] == "not a DICOM, NIfTI or PNG file"
    assert why[".DS_Store"].startswith("hidden file") and why["._good.dcm"].startswith("hidden file")
    assert why[".git/"].startswith("hidden folder")
    assert why["locked.dcm"] == "cannot be read: Permission denied"
    assert why["dangling.dcm"].startswith("not a regular file")
    inside = skipped[skipped["source"] == str(folder / "series")]
    assert len(inside) == 1 and inside["reason"].iloc[0]  # the other series (the dose report), with why
    # the batch page lists them too
    index = (out / "index.html").read_text()
    assert "locked.dcm" in index and "._good.dcm" in index
    # the terminal: one line per refusal, never a table padded with spaces
    lines = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert lines == [line for line in lines if not re.search(r"\S {2,}\S", line)]
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder / 'broken.dcm'}: "), captured.err
    assert "Traceback" not in captured.err
    assert "file(s) left out (skipped.csv)" in captured.out
    measured = pd.read_csv(out / "measurements.csv", dtype={"patient_id": str})
    assert set(measured["patient_id"]) == {"GOOD", "SER"}


def test_every_input_refused_prints_one_line_each_and_exits_2(tmp_path, capsys):
    hu, _ = body_phantom(64, 64)
    folder = tmp_path / "in"
    write_dicom(folder / "nospacing.dcm", hu, drop=("PixelSpacing",), series_uid="1.2.826.0.1.3680043.9.11.1")
    write_dicom(folder / "mr.dcm", hu, spacing=(3.0, 3.0), Modality="MR", series_uid="1.2.826.0.1.3680043.9.11.2")
    (folder / "esc\x1b[31m.dcm").write_bytes(b"\0" * 128 + b"DICM")
    assert main(["measure", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    lines = [line for line in lines if line.startswith("error: ")]
    assert len(lines) == 4 and lines[-1] == f"error: {folder}: no input measured", err
    assert any(line.startswith(f"error: {folder / 'nospacing.dcm'}: missing PixelSpacing") for line in lines)
    assert any(line.startswith(f"error: {folder / 'mr.dcm'}: ") for line in lines)
    assert "\x1b" not in err and "Traceback" not in err  # control characters of a file name are not printed
