"""HU window, resize with effective spacing, inverse mapping, processed data set on disk."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import body_phantom

from l3seg_lib.config import PreprocessConfig
from l3seg_lib.data.cases import Case
from l3seg_lib.imageio.ct import Acquisition, CTImage, ImageMeta
from l3seg_lib.preprocessing.geometry import (
    image_to_model,
    labels_to_original,
    make_geometry,
    mask_to_model,
    probs_to_original,
    window,
)
from l3seg_lib.preprocessing.processed import (
    export_processed,
    load_arrays,
    read_processed_manifest,
)


def test_window_clips_and_scales():
    hu = np.array([-1000.0, -200.0, 300.0, 800.0, 2000.0])
    assert window(hu, -200, 800).tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    assert window(np.array([0.0]), -100, 100)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="empty"):
        window(hu, 100, 100)


def test_effective_spacing_square_and_padded():
    g = make_geometry((512, 512), (0.7, 0.7), 256)
    assert g.eff_spacing_mm == pytest.approx((1.4, 1.4))
    g = make_geometry((400, 512), (0.8, 0.8), 256)
    assert g.pad == (56, 56, 0, 0)
    assert g.eff_spacing_mm == pytest.approx((1.6, 1.6))
    g = make_geometry((400, 512), (0.8, 0.6), 128, pad_to_square=False)
    assert g.pad == (0, 0, 0, 0)
    assert g.eff_spacing_mm == pytest.approx((0.8 * 400 / 128, 0.6 * 512 / 128))


@pytest.mark.parametrize("shape, spacing, pad", [((300, 360), (0.7, 0.7), True), ((300, 360), (0.9, 0.6), False)])
def test_area_is_preserved_after_resize(shape, spacing, pad):
    _, mask = body_phantom(*shape)
    g = make_geometry(shape, spacing, 128, pad_to_square=pad)
    small = mask_to_model(mask, g)
    for cls in (1, 2, 3):
        orig_cm2 = (mask == cls).sum() * spacing[0] * spacing[1] / 100
        model_cm2 = (small == cls).sum() * g.eff_spacing_mm[0] * g.eff_spacing_mm[1] / 100
        assert model_cm2 == pytest.approx(orig_cm2, rel=0.03)


def test_image_padding_is_air_and_inverse_mapping():
    hu, mask = body_phantom(200, 260)
    g = make_geometry(hu.shape, (0.8, 0.8), 64)
    img = image_to_model(hu, g, (-200, 800))
    assert img.shape == (64, 64) and img[0, 0] == 0.0
    one_hot = np.stack([(mask_to_model(mask, g) == c).astype(np.float32) for c in range(4)])
    back = probs_to_original(one_hot, g).argmax(0)
    assert back.shape == mask.shape
    assert (back == mask).mean() > 0.97
    assert labels_to_original(mask_to_model(mask, g), g).shape == mask.shape


def test_export_processed_round_trip(tmp_path):
    hu, mask = body_phantom(96, 80)
    img = CTImage(hu=hu, spacing_mm=(0.9, 0.9), patient_id="P1", slice_id="s1", source="x.dcm",
                  meta=ImageMeta(acquisition=Acquisition(patient_sex="M", patient_size="1.8")))
    cfg = PreprocessConfig(image_size=64, pixel_mm=None)  # whole-image mode
    df = export_processed([Case(img, mask, "m.nii.gz")], tmp_path, cfg)
    assert list(df["case_id"]) == ["P1__s1"]
    row = read_processed_manifest(tmp_path).iloc[0]
    assert row["eff_spacing_row_mm"] == pytest.approx(0.9 * 96 / 64)
    assert row["pad_left"] == 8 and row["sex"] == "M" and row["height_m"] == pytest.approx(1.8)
    arrays = load_arrays(tmp_path, row)
    assert arrays["image"].shape == (64, 64) and arrays["image"].dtype == np.float32
    assert np.array_equal(arrays["mask_orig"], mask)
    assert np.array_equal(arrays["hu"], hu.astype(np.int16))
    with pytest.raises(ValueError, match="listed twice"):
        export_processed([Case(img, mask), Case(img, mask)], tmp_path / "dup", cfg)


def test_physical_scale_keeps_thin_structures_and_areas():
    """At a fixed pixel size the body is centred and a 3 mm ring keeps its pixels whatever the
    field of view; going back to the original grid restores the mask."""
    from l3seg_lib.preprocessing.geometry import labels_to_original

    for fov_px, spacing in ((512, 0.98), (256, 1.95)):  # the same 500 mm field at two matrices
        yy, xx = np.mgrid[:fov_px, :fov_px]
        r = np.hypot((yy - fov_px * 0.55) * spacing, (xx - fov_px * 0.45) * spacing)  # off-centre body
        hu = np.where(r < 150, 40.0, -1000.0).astype(np.float32)
        mask = np.where(r < 150, 1, 0).astype(np.uint8)
        mask[(r >= 147) & (r < 150)] = 2  # a 3 mm ring
        g = make_geometry(hu.shape, (spacing, spacing), 256, pixel_mm=1.5, hu=hu)
        assert g.eff_spacing_mm[0] == pytest.approx(1.5, rel=0.02)
        model = mask_to_model(mask, g)
        assert (model == 2).sum() > 0.8 * 2 * np.pi * 150 * 3 / 1.5**2  # the ring survives at 1.5 mm
        rows, cols = np.nonzero(model > 0)
        assert abs(rows.mean() - 127.5) < 2 and abs(cols.mean() - 127.5) < 2  # body centred
        back = labels_to_original(model, g)
        assert (back == mask).mean() > 0.99
    big = make_geometry((512, 512), (0.98, 0.98), 256, pixel_mm=1.5, hu=np.full((512, 512), 40.0, np.float32))
    assert big.eff_spacing_mm[0] > 1.5  # a body wider than the field is shown coarser, never cut


def test_prepare_builtin_generates_once_and_then_reads(tmp_path):
    import shutil

    from l3seg_lib.config import Params
    from l3seg_lib.preprocessing.processed import prepare_builtin

    p = Params()
    p.data.phantom.n_patients, p.data.phantom.matrix, p.data.phantom.slices_per_patient = 3, 128, [1, 2]
    p.preprocess.image_size = 32
    first = prepare_builtin(tmp_path / "raw", tmp_path / "proc", p, progress=False)
    assert first["patient_id"].nunique() == 3 and (tmp_path / "raw" / "manifest.csv").is_file()
    shutil.rmtree(tmp_path / "raw")  # a second call reads the processed folder and generates nothing
    again = prepare_builtin(tmp_path / "raw", tmp_path / "proc", p, progress=False)
    assert again.equals(first) and not (tmp_path / "raw").exists()


def test_prepare_builtin_rebuilds_a_folder_made_with_other_params(tmp_path):
    import json

    from l3seg_lib.config import Params
    from l3seg_lib.preprocessing.processed import load_arrays, prepare_builtin, processed_record

    p = Params()
    p.data.phantom.n_patients, p.data.phantom.matrix, p.data.phantom.slices_per_patient = 2, 128, [1, 1]
    p.preprocess.image_size, p.preprocess.pixel_mm = 160, 1.5
    first = prepare_builtin(tmp_path / "raw", tmp_path / "proc", p, progress=False)
    assert processed_record(tmp_path / "proc")["preprocess"]["pixel_mm"] == 1.5
    raw_made = (tmp_path / "raw" / "manifest.csv").stat().st_mtime_ns

    p.preprocess.pixel_mm = 3.0  # another scale: the processed folder is rebuilt, the raw data kept
    second = prepare_builtin(tmp_path / "raw", tmp_path / "proc", p, progress=False)
    assert processed_record(tmp_path / "proc")["preprocess"]["pixel_mm"] == 3.0
    assert (second["eff_spacing_row_mm"] > first["eff_spacing_row_mm"]).all()
    assert (tmp_path / "raw" / "manifest.csv").stat().st_mtime_ns == raw_made
    assert (second["eff_spacing_row_mm"] > 2.9).all() and (first["eff_spacing_row_mm"] < 2.9).all()
    assert load_arrays(tmp_path / "proc", second.iloc[0])["image"].shape == (160, 160)

    p.data.phantom.n_patients = 3  # another phantom: raw regenerated too
    third = prepare_builtin(tmp_path / "raw", tmp_path / "proc", p, progress=False)
    assert third["patient_id"].nunique() == 3
    assert json.loads((tmp_path / "raw" / "phantom.json").read_text())["n_patients"] == 3
