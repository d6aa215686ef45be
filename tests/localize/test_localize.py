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
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.orchestration import measure_folder
from l3seg_lib.phantom.torso import TorsoSpec, make_torso
from l3seg_lib.reporting.review import localizer_picture

FAST = {"matrix": 160, "pixel_mm": 2.5}


def _volume(torso) -> CTVolume:
    return torso.as_volume()


@pytest.mark.parametrize("changes", [{}, {"slice_mm": 5.0, "seed": 2}, {"z_to": 170.0, "seed": 5},
                                     {"z_from": 55.0, "seed": 8}],
                         ids=["typical", "5 mm slices", "T12 out of view", "sacrum out of view (starts in L4)"])
def test_l3_found_inside_its_body(changes):
    torso = make_torso(TorsoSpec(**{**FAST, **changes}))
    loc = locate_l3(_volume(torso))
    lo, hi = torso.slices_of("L3")
    assert loc.found and lo <= loc.slice_index <= hi
    assert abs(loc.slice_index - (lo + hi) / 2) <= 1.5
    names = [v.name for v in loc.vertebrae if not v.partial]
    assert names.index("L3") + 1 < len(names) and names[names.index("L3") + 1] == "L2"
    if "z_from" in changes:  # counted down from T12 only: the reason says why the sacrum is missing
        assert loc.confidence == "medium" and loc.anchors == ["T12 (last ribs)"] and "sacrum" in loc.notes[0]
    else:
        assert names[:3] == ["L5", "L4", "L3"]
        assert loc.confidence == ("medium" if "z_to" in changes else "high")


@pytest.mark.heavy
@pytest.mark.parametrize("changes, reason", [
    ({"z_from": 125.0, "seed": 6}, "L3 is not wholly in the field of view"),
    ({"z_to": 75.0, "seed": 7}, "too few vertebrae to count"),
    ({"n_lumbar": 6, "z_to": 300.0, "seed": 9}, "transitional anatomy suspected"),
    ({"n_rib_pairs": 11, "seed": 10}, "transitional anatomy suspected"),
], ids=["L3 absent, view above", "L3 absent, view below", "six lumbar", "eleven rib pairs"])
def test_cannot_tell_is_flagged_not_guessed(changes, reason):
    loc = locate_l3(_volume(make_torso(TorsoSpec(**{**FAST, **changes}))))
    assert not loc.found and loc.slice_index is None and loc.slices == []
    assert reason in loc.reason


WIDE = {**FAST, "matrix": 200}
"""A 500 mm field of view at FAST's pixels: room for arms down beside the trunk, or a shifted patient."""
CURVED = {"table": "curved"}

# What real scans have around the patient (issue 21): the couch, arms down, off-centre placement, contrast.
AROUND = {
    "curved table touching, mattress": {**FAST, **CURVED, "table_gap_mm": 0.0, "table_pad_mm": 6.0, "seed": 11},
    "curved table 15 mm below": {**FAST, **CURVED, "table_gap_mm": 15.0, "seed": 12},
    "curved table 35 mm below, thick couch": {**FAST, **CURVED, "table_gap_mm": 35.0, "table_core_mm": 40.0,
                                              "seed": 13},
    "flat table": {**FAST, "table": "flat", "table_gap_mm": 10.0, "table_core_mm": 30.0, "seed": 14},
    "arms down": {**WIDE, "arms": "down", "seed": 15},
    "arms down touching, elbows at L3": {**WIDE, "arms": "down", "arm_gap_mm": 0.0, "elbow_mm": 95.0, "seed": 16},
    "off-centre, rolled": {**WIDE, "shift_mm": (55.0, -35.0), "rotate_deg": 8.0, "seed": 17},
    "contrast aorta": {**FAST, "contrast_hu": 300.0, "seed": 18},
    "all combined": {**FAST, "matrix": 224, **CURVED, "table_gap_mm": 15.0, "table_pad_mm": 4.0, "arms": "down",
                     "shift_mm": (30.0, 20.0), "rotate_deg": 6.0, "contrast_hu": 300.0, "seed": 19},
}


@pytest.mark.heavy
@pytest.mark.parametrize("changes", list(AROUND.values()), ids=list(AROUND))
def test_l3_found_with_couch_arms_and_placement(changes):
    """The couch, arms and placement must not move the count: L3 found inside its body, near its
    middle, with the right vertebrae below it and the rib check passed."""
    torso = make_torso(TorsoSpec(**changes))
    assert torso.layout["in_view"]
    loc = locate_l3(_volume(torso))
    lo, hi = torso.slices_of("L3")
    assert loc.found, loc.reason
    assert lo <= loc.slice_index <= hi and abs(loc.slice_index - (lo + hi) / 2) <= 1.5
    assert lo - 2 <= loc.l3_range[0] and loc.l3_range[1] <= hi + 2
    assert [v.name for v in loc.vertebrae if not v.partial][:3] == ["L5", "L4", "L3"]
    assert loc.confidence == "high"


@pytest.mark.heavy
@pytest.mark.parametrize("changes", [{"z_from": 125.0, "seed": 20}, {"z_to": 75.0, "seed": 21}],
                         ids=["L3 absent, view above", "L3 absent, view below"])
def test_cannot_tell_with_couch_and_arms(changes):
    """The couch and the arms' bones run through every slice: they must not stand in for the
    missing spine."""
    torso = make_torso(TorsoSpec(**{**WIDE, **CURVED, "table_gap_mm": 10.0, "arms": "down", **changes}))
    assert "L3" not in [n for n in torso.vertebrae if torso.slices_of(n)]
    loc = locate_l3(_volume(torso))
    assert not loc.found and loc.slice_index is None and loc.slices == []


def test_torso_couch_arms_and_placement():
    """The phantom's extras: the couch the gap below the back, arm bone lateral to the trunk at
    L3, a shifted patient's spine moved with it, and the same torso from the same seed."""
    short = {**WIDE, "z_from": 60.0, "z_to": 130.0}
    torso = make_torso(TorsoSpec(**short, **CURVED, table_gap_mm=20.0, seed=3))
    assert torso.layout["table_top_y_mm"] == pytest.approx(125.0 + 20.0)  # the back is at y = 125 mm
    lo, hi = torso.slices_of("L3")
    midline = torso.hu[(lo + hi) // 2, :, 100]
    y = (np.arange(200) - 100 + 0.5) * 2.5 + 20.0
    assert midline[(y > 128) & (y < 142)].max() < -900  # air in the gap
    assert midline[(y > 145) & (y < 150)].max() > 0  # the carbon shell
    arms = make_torso(TorsoSpec(**short, arms="down", seed=3))
    again = make_torso(TorsoSpec(**short, arms="down", seed=3))
    assert np.array_equal(arms.hu, again.hu)
    mid = arms.hu[(lo + hi) // 2]
    x = (np.arange(200) - 100 + 0.5) * 2.5
    assert mid[:, x < -175].max() > 600 and mid[:, x > 175].max() > 600  # forearm bones both sides
    shifted = make_torso(TorsoSpec(**short, shift_mm=(40.0, 0.0), seed=3))
    bone = lambda t: np.average(x, weights=(t.hu[(lo + hi) // 2] > 150).sum(axis=0))  # noqa: E731
    assert bone(shifted) - bone(torso) == pytest.approx(40.0, abs=3.0)


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


@pytest.mark.heavy
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


# --------------------------------------------------------------------------------------------
# the verdict from three anchors (issue 30): what agrees decides, a weak anchor lowers the
# confidence, only a contradiction refuses

DISCS = [10, 20, 30, 40, 50, 60, 70, 80]
"""Discs of a regular spine, L5/S1 first: L3 is vertebra 2 (slices 30-40), T12 vertebra 5."""


@pytest.mark.parametrize("sacrum, ribs, strong, crest, k3, agreed, confidence", [
    (2, 2, True, 24.0, 2, ["sacrum", "T12 (last ribs)", "iliac crests"], "high"),
    (2, 2, True, None, 2, ["sacrum", "T12 (last ribs)"], "high"),
    (2, 2, False, 24.0, 2, ["sacrum", "T12 (last ribs)", "iliac crests"], "medium"),  # ribs one side only
    (2, None, False, 24.0, 2, ["sacrum", "iliac crests"], "medium"),  # ribs missed in view: not a refusal
    (2, 3, False, 24.0, 2, ["sacrum", "iliac crests"], "medium"),  # weak ribs outvoted
    (None, 2, True, 24.0, 2, ["T12 (last ribs)", "iliac crests"], "medium"),
    (None, 2, False, 24.0, 2, ["T12 (last ribs)", "iliac crests"], "medium"),
    (2, 3, True, 24.0, None, [], "none"),  # sacrum and strong ribs disagree: transitional anatomy
    (2, 3, False, None, None, [], "none"),  # a weak anchor against the count, nothing to settle it
    (2, None, False, 45.0, None, [], "none"),  # the crests in L3 contradict the sacrum, no ribs
    (None, 2, False, None, None, [], "none"),  # weak ribs alone cannot decide
    (None, None, False, 24.0, None, [], "none"),  # the crests alone cannot name a vertebra
])
def test_anchor_verdict(sacrum, ribs, strong, crest, k3, agreed, confidence):
    from l3seg_lib.localize.l3 import _decide

    got_k3, got_agreed, got_conf, notes, refusal = _decide(sacrum, ribs, strong, crest, DISCS, 3.0)
    assert (got_k3, got_agreed, got_conf) == (k3, agreed, confidence)
    assert bool(refusal) == (k3 is None)
    if k3 is not None and confidence == "medium":
        assert notes, "a medium confidence names the weak or missing anchor"


def test_crest_window():
    from l3seg_lib.localize.l3 import crests_agree

    # L3 between discs 30 and 40: the crests may lie from mid-L5 (15) to a quarter above L3/L4 (32.5)
    assert [crests_agree(z, 2, DISCS) for z in (14.0, 15.0, 24.0, 32.5, 33.0)] == [False, True, True, True, False]
    assert crests_agree(None, 2, DISCS) is None and crests_agree(24.0, 1, DISCS) is None


def test_refusal_says_what_to_do_and_names_every_vertebra(tmp_path):
    """Eleven rib pairs: the counts disagree; the refusal names the next step, no path, and the
    review picture gets both counts."""
    torso = make_torso(TorsoSpec(**{**FAST, "n_rib_pairs": 11, "seed": 10}))
    loc = locate_l3(_volume(torso))
    assert not loc.found and "--slices N" in loc.summary() and "/" not in loc.summary().split("give the slice")[0]
    assert set(loc.counts) == {"sacrum", "T12 (last ribs)"}
    named = {c: [v.name for v in vs if not v.partial] for c, vs in loc.counts.items()}
    assert named["sacrum"][:3] == ["L5", "L4", "L3"] and named["T12 (last ribs)"][:3] == ["S1", "L5", "L4"]
    ribs = {v.name: (v.ribs_right, v.ribs_left) for v in loc.counts["sacrum"]}
    assert ribs["T12"] == (False, False) and ribs["T11"] == (True, True)  # eleven pairs: T11 is the last
    picture = localizer_picture(_volume(torso), loc)
    assert picture.width > 600 and picture.height > 600
