"""The l3seg command line: generate, predict, measure, and clear errors with exit code 2."""

from __future__ import annotations

import pandas as pd
from helpers import body_phantom, write_dicom

from l3seg_lib.cli import main


def test_generate_predict_measure(tmp_path, tiny_model, capsys):
    assert main(["generate", str(tmp_path / "data"), "--patients", "2", "--matrix", "128", "--max-slices", "1"]) == 0
    patients = sorted(p.name for p in (tmp_path / "data" / "dicom").iterdir())
    assert len(patients) == 2
    series = tmp_path / "data" / "dicom" / patients[0]
    assert main(["predict", str(series), "--model", str(tiny_model), "--out", str(tmp_path / "pred")]) == 0
    areas = pd.read_csv(tmp_path / "pred" / "areas.csv")
    assert list(areas["patient_id"]) == [patients[0]] and areas["inference_s"].iloc[0] > 0
    assert main(["measure", str(tmp_path / "data" / "dicom"), "--model", str(tiny_model), "--out", str(tmp_path / "m"),
                 "--cutoffs", "fearon2011"]) == 0
    table = pd.read_csv(tmp_path / "m" / "measurements.csv")
    assert set(table["patient_id"]) == set(patients) and set(table["cutoff_set"]) == {"fearon2011"}
    assert "2 slice(s) measured" in capsys.readouterr().out


def test_predict_measures_like_measure_and_names_its_columns_alike(tmp_path, tiny_model, capsys):
    """predict's areas.csv: the columns and numbers of measure's measurements.csv for the same slice."""
    from l3seg_lib.measurement.result import COLUMNS

    hu, _ = body_phantom(64, 64)
    write_dicom(tmp_path / "in" / "a.dcm", hu, spacing=(0.8, 0.7), patient_id="A")
    small = ["--min-matrix", "8", "--min-fov-mm", "10"]  # a 64 px phantom: below a real CT slice
    assert main(["predict", str(tmp_path / "in" / "a.dcm"), "--model", str(tiny_model), "--out", str(tmp_path / "p"),
                 *small]) == 0
    printed = capsys.readouterr().out
    assert "sma_cm2" in printed and "muscle_hu_mean" in printed
    assert main(["measure", str(tmp_path / "in"), "--model", str(tiny_model), "--out", str(tmp_path / "m"), *small]) == 0
    areas = pd.read_csv(tmp_path / "p" / "areas.csv")
    measured = pd.read_csv(tmp_path / "m" / "measurements.csv")
    assert set(areas.columns) <= set(COLUMNS), set(areas.columns) - set(COLUMNS)
    assert {"pixel_spacing_row_mm", "sma_cm2", "sma_refined_cm2", "imat_cm2", "muscle_hu_mean"} <= set(areas.columns)
    same = [c for c in areas.columns if c not in ("source", "inference_s")]
    assert len(same) > 25
    pd.testing.assert_frame_equal(areas[same], measured[same])
    assert areas["pixel_spacing_row_mm"].iloc[0] == 0.8 and areas["pixel_spacing_col_mm"].iloc[0] == 0.7


def test_bad_input_gives_a_message_not_a_traceback(tmp_path, tiny_model, capsys):
    hu, _ = body_phantom(64, 64)
    bad = write_dicom(tmp_path / "nospacing.dcm", hu, drop=("PixelSpacing",))
    assert main(["predict", str(bad), "--model", str(tiny_model), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nospacing.dcm: missing PixelSpacing" in err and "Traceback" not in err
    assert main(["predict", str(bad), "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "model file not found" in capsys.readouterr().err
    (tmp_path / "p.yaml").write_text("train:\n  epochz: 1\n")
    assert main(["run", "--params", str(tmp_path / "p.yaml")]) == 2
    assert "unknown key(s) epochz" in capsys.readouterr().err


def test_measure_and_predict_without_model_use_the_shipped_default(tmp_path, capsys):
    from l3seg_lib.models import default_model_path

    hu, _ = body_phantom(64, 64)
    write_dicom(tmp_path / "in" / "a.dcm", hu, patient_id="A")
    # the shipped model (8 networks, float16 weights) stays well under the project's 20 MB limit
    assert default_model_path().stat().st_size < 10e6
    small = ["--min-matrix", "8", "--min-fov-mm", "10"]  # a 64 px phantom of 0.8 mm: below a real CT slice
    assert main(["measure", str(tmp_path / "in"), "--out", str(tmp_path / "m"), *small]) == 0
    table = pd.read_csv(tmp_path / "m" / "measurements.csv")
    assert table["model"].tolist() == ["l3seg default model"]
    index = (tmp_path / "m" / "index.html").read_text()
    assert "trained on l3seg synthetic L3 phantom" in index and "zero-shot on real CT" in index
    assert "Research use only" in index
    assert main(["predict", str(tmp_path / "in" / "a.dcm"), "--out", str(tmp_path / "p"), *small]) == 0
    # the fast shipped model by name
    assert main(["measure", str(tmp_path / "in"), "--out", str(tmp_path / "f"), "--model", "fast", *small]) == 0
    assert pd.read_csv(tmp_path / "f" / "measurements.csv")["model"].tolist() == ["l3seg fast model"]
