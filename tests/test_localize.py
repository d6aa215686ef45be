"""The L3 localiser: synthetic torsos (found where L3 can be counted to, flagged otherwise), the
real example CT as NIfTI and as a DICOM series measured with no manifest, and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import write_dicom

from l3seg_lib.cli import main
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.localize.l3 import locate_l3
from l3seg_lib.measurement.batch import MeasureOptions, measure_folder
from l3seg_lib.phantom.torso import TorsoSpec, make_torso
from l3seg_lib.reporting.review import localizer_picture

FAST = {"matrix": 160, "pixel_mm": 2.5}


def _volume(torso) -> CTVolume:
    return torso.as_volume()


@pytest.mark.parametrize("changes", [{}, {"slice_mm": 5.0, "seed": 2}, {"z_to": 170.0, "seed": 5}],
                         ids=["typical", "5 mm slices", "T12 out of view"])
def test_l3_found_inside_its_body(changes):
    torso = make_torso(TorsoSpec(**{**FAST, **changes}))
    loc = locate_l3(_volume(torso))
    lo, hi = torso.slices_of("L3")
    assert loc.found and lo <= loc.slice_index <= hi
    assert abs(loc.slice_index - (lo + hi) / 2) <= 1.5
    assert [v.name for v in loc.vertebrae][:3] == ["L5", "L4", "L3"]
    assert loc.confidence == ("medium" if "z_to" in changes else "high")


@pytest.mark.parametrize("changes, reason", [
    ({"z_from": 125.0, "seed": 6}, "sacrum is not covered"),
    ({"z_to": 75.0, "seed": 7}, "lumbar spine is not covered"),
    ({"z_from": 55.0, "seed": 8}, "sacrum is not covered"),
    ({"n_lumbar": 6, "z_to": 300.0, "seed": 9}, "transitional anatomy suspected"),
    ({"n_rib_pairs": 11, "seed": 10}, "transitional anatomy suspected"),
], ids=["L3 absent, view above", "L3 absent, view below", "lumbar spine cut", "six lumbar", "eleven rib pairs"])
def test_cannot_tell_is_flagged_not_guessed(changes, reason):
    loc = locate_l3(_volume(make_torso(TorsoSpec(**{**FAST, **changes}))))
    assert not loc.found and loc.slice_index is None and loc.slices == []
    assert reason in loc.reason


def test_transverse_process_slice_and_averaging():
    from l3seg_lib.config import LocalizeConfig

    torso = make_torso(TorsoSpec(**FAST))
    lo, hi = torso.slices_of("L3")
    loc = locate_l3(_volume(torso), LocalizeConfig(slice="transverse_processes", average_slices=1))
    assert lo <= loc.slice_index <= hi and len(loc.slices) == 3 and loc.slices[1] == loc.slice_index
    picture = localizer_picture(_volume(torso), loc)
    assert picture.height > 400 and picture.width > 300


def test_real_example_ct(shared_data):
    from l3seg_lib.imageio.nifti import read_nifti

    loc = locate_l3(read_nifti(shared_data / "example_ct.nii.gz"))
    assert loc.found and 65 <= loc.slice_index <= 79  # TotalSegmentator's L3: slices 65-79
    assert loc.l3_range[0] >= 65 - 2 and loc.l3_range[1] <= 79


def _write_series(volume: CTVolume, folder, patient_id: str):
    """A CT volume in canonical orientation as a DICOM series (rows posterior, columns to the left)."""
    dz, dr, dc = volume.spacing_mm
    for k in range(volume.n_slices):
        write_dicom(folder / f"IM{k:04d}.dcm", volume.hu[k], spacing=(dr, dc), position=(-180.0, -150.0, dz * k),
                    series_uid="1.2.826.0.1.3680043.10.1.1", patient_id=patient_id, InstanceNumber=k + 1,
                    SliceThickness=str(dz))


@pytest.mark.slow
def test_measure_a_whole_series_with_no_manifest(shared_data, tiny_model, tmp_path):
    """The real example CT written as a DICOM series, and a synthetic torso without L3, in one
    folder with no manifest: the series is measured inside L3, the torso is listed for review."""
    from l3seg_lib.imageio.nifti import read_nifti

    real = read_nifti(shared_data / "example_ct.nii.gz")
    _write_series(real, tmp_path / "in" / "REAL1", "REAL1")
    no_l3 = make_torso(TorsoSpec(**FAST, z_from=125.0, seed=6))
    _write_series(_volume(no_l3), tmp_path / "in" / "NOL3", "NOL3")
    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out", MeasureOptions(progress=False))
    row = res.measurements.set_index("patient_id").loc["REAL1"]
    assert 65 <= row["slice_index"] <= 79 and row["l3_method"].startswith("vertebra count")
    assert (tmp_path / "out" / row["localizer_picture"]).is_file()
    assert "Where L3 was found" in (tmp_path / "out" / "patients" / "REAL1.html").read_text()
    review = res.errors[res.errors["review"]]
    assert len(review) == 1 and review.iloc[0]["source"].endswith("NOL3")
    assert "L3 not located, listed for review" in review.iloc[0]["error"]
    assert (tmp_path / "out" / review.iloc[0]["picture"]).is_file()
    # a manifest's slice_index overrides the localiser
    pd.DataFrame([{"image": "REAL1", "slice_index": 70}]).to_csv(tmp_path / "in" / "manifest.csv", index=False)
    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out2", MeasureOptions(progress=False))
    assert res.measurements["slice_index"].tolist() == [70]


def test_locate_command(tmp_path, capsys):
    import nibabel as nib

    from l3seg_lib.imageio.nifti import write_nifti_labels  # noqa: F401 - NIfTI writing below

    torso = make_torso(TorsoSpec(**FAST))
    vol = _volume(torso)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.hu.transpose(2, 1, 0)), np.diag([-2.5, -2.5, 3.0, 1.0])),
             str(tmp_path / "torso.nii.gz"))
    assert main(["locate", str(tmp_path / "torso.nii.gz"), "--picture", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "L3 body in slices" in out and "T12: slices" in out and (tmp_path / "p.png").is_file()
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.hu[:20].transpose(2, 1, 0)), np.diag([-2.5, -2.5, 3.0, 1.0])),
             str(tmp_path / "short.nii.gz"))
    assert main(["locate", str(tmp_path / "short.nii.gz")]) == 1
    assert "L3 cannot be told" in capsys.readouterr().out
