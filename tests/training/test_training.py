"""Patient-wise folds, augmentation, deterministic training, tiny end-to-end train + predict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_params

from l3seg_lib.config import AugmentConfig, SplitConfig
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.measurement.segment import predict_path
from l3seg_lib.preprocessing.processed import read_processed_manifest
from l3seg_lib.training.checkpoint import load_checkpoint
from l3seg_lib.training.crossval import cross_validate
from l3seg_lib.training.dataset import SliceDataset, build_augmentation
from l3seg_lib.training.device import resolve_device
from l3seg_lib.training.splits import check_patient_wise, fold_members, make_splits
from l3seg_lib.training.trainer import train_model


def _manifest(n_patients: int, slices_per_patient=(1, 3), seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for s in range(int(rng.integers(slices_per_patient[0], slices_per_patient[1] + 1))):
            rows.append({"case_id": f"P{p}__{s}", "patient_id": f"P{p}", "sex": "MF"[p % 2]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_patients, folds, test_fraction", [(60, 5, 0.2), (13, 3, 0.0), (9, 2, 0.3)])
def test_splits_are_patient_wise(n_patients, folds, test_fraction):
    man = _manifest(n_patients)
    split = make_splits(man, SplitConfig(test_fraction=test_fraction, n_folds=folds), seed=1)
    check_patient_wise(split)
    assert set(split["patient_id"]) == set(man["patient_id"])
    assert (split["set"] == "test").sum() == round(test_fraction * n_patients)
    assert sorted(split.loc[split["set"] == "dev", "fold"].unique()) == list(range(folds))
    for k in range(folds):
        train, val = fold_members(man, split, k)
        assert not set(train["patient_id"]) & set(val["patient_id"])
        test_ids = set(split.loc[split["set"] == "test", "patient_id"])
        assert not (set(train["patient_id"]) | set(val["patient_id"])) & test_ids
        # every slice of a validation patient is in validation
        assert len(val) == man["patient_id"].isin(val["patient_id"].unique()).sum()


def test_splits_stratify_by_sex_and_are_seeded():
    man = _manifest(40)
    split = make_splits(man, SplitConfig(test_fraction=0.2, n_folds=4), seed=3)
    assert split["stratified"].all()
    sexes = man.drop_duplicates("patient_id").set_index("patient_id")["sex"]
    per_fold = split[split["set"] == "dev"].assign(sex=lambda d: d["patient_id"].map(sexes)).groupby("fold")["sex"]
    assert all(abs((s == "M").sum() - (s == "F").sum()) <= 1 for _, s in per_fold)
    assert split.equals(make_splits(man, SplitConfig(test_fraction=0.2, n_folds=4), seed=3))
    assert not split.equals(make_splits(man, SplitConfig(test_fraction=0.2, n_folds=4), seed=4))
    with pytest.raises(ValueError, match="too few"):
        make_splits(_manifest(4), SplitConfig(test_fraction=0.5, n_folds=3), seed=0)


def test_dataset_ratio_and_identical_geometric_augmentation():
    img = np.zeros((3, 32, 32), dtype=np.float32)
    mask = np.zeros((3, 32, 32), dtype=np.uint8)
    img[:, 8:20, 10:16] = 0.8
    mask[:, 8:20, 10:16] = 2
    aug = build_augmentation(AugmentConfig(brightness=0, contrast=0, noise_std=0), 32, seed=0)
    ds = SliceDataset(img, mask, aug, data_ratio=2.0)
    assert len(ds) == 3 + 6
    x0, y0 = ds[0]
    assert torch.equal(y0, torch.from_numpy(mask[0]).long())  # originals are not augmented
    x, y = ds[5]
    assert x.shape == (1, 32, 32) and y.dtype == torch.int64
    assert not torch.equal(y, y0)  # moved
    bright = x[0] > 0.4
    # image and mask moved together: the bright block and the label overlap almost exactly
    assert (bright == (y == 2)).float().mean() > 0.97
    assert len(SliceDataset(img, mask, aug, data_ratio=0.5)) == 3 + 2
    assert len(SliceDataset(img, mask, None, data_ratio=2.0)) == 3


def test_training_is_deterministic(tiny_processed):
    man = read_processed_manifest(tiny_processed / "proc")
    from l3seg_lib.training.dataset import load_slices
    x, y = load_slices(tiny_processed / "proc", man)
    p = tiny_params()
    runs = [train_model(x[:3], y[:3], x[3:], y[3:], p.model, p.train, seed=7, device=torch.device("cpu"),
                        progress=False) for _ in range(2)]
    for k in runs[0].state_dict:
        assert torch.equal(runs[0].state_dict[k], runs[1].state_dict[k]), k
    assert runs[0].history["train_loss"].tolist() == runs[1].history["train_loss"].tolist()
    other = train_model(x[:3], y[:3], None, None, p.model, p.train, seed=8, device=torch.device("cpu"), progress=False)
    assert not torch.equal(other.state_dict["head.weight"], runs[0].state_dict["head.weight"])


@pytest.mark.slow
def test_tiny_cross_validation_and_predict(tiny_processed, tmp_path):
    proc = tiny_processed / "proc"
    man = read_processed_manifest(proc)
    p = tiny_params(early_stopping_patience=1)
    split = make_splits(man, p.split, p.seed)
    res = cross_validate(proc, man, split, p, out_dir=tmp_path / "cv", progress=False)
    assert list(res.folds["fold"]) == [0, 1]
    assert (tmp_path / "cv" / "fold_0" / "best.pt").is_file()
    log = pd.read_csv(tmp_path / "cv" / "fold_1" / "log.csv")
    assert {"train_loss", "val_dice_muscle", "val_dice_mean_fg", "lr"} <= set(log.columns)
    assert set(res.slices["case_id"]) == set(man[man["patient_id"].isin(split.loc[split.set == "dev", "patient_id"])]["case_id"])
    ckpt = load_checkpoint(res.checkpoint_path)
    assert res.model_path.suffix == ".onnx" and res.checkpoint_path.suffix == ".pt"
    assert len(ckpt["state_dicts"]) == 2 and ckpt["image_size"] == 32

    # predict a DICOM series from the raw data with the fold ensemble
    pid = man["patient_id"].iloc[0]
    out = predict_path(tiny_processed / "raw" / "dicom" / pid, res.model_path, tmp_path / "pred")
    assert len(out) >= 1 and {"sma_cm2", "sat_cm2", "vat_cm2", "sma_refined_cm2"} <= set(out.columns)
    assert (tmp_path / "pred" / f"{pid}_labels.nii.gz").is_file()
    assert (tmp_path / "pred" / f"{pid}_s000_overlay.png").is_file()
    pred = Predictor(res.model_path).predict_hu(np.full((100, 90), -1000.0, np.float32), (0.8, 0.8))
    assert pred.labels.shape == (100, 90) and pred.probs.shape == (4, 100, 90)
    assert np.allclose(pred.probs.sum(0), 1.0, atol=1e-4)


def test_model_file_errors(tmp_path):
    with pytest.raises(L3SegInputError, match="none.pt: model file not found"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(L3SegInputError, match="other.pt: not an l3seg model file"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": "l3seg-model-v0", "state_dicts": []}, tmp_path / "old.pt")
    with pytest.raises(L3SegInputError, match="old.pt: model file format 'l3seg-model-v0' is not supported"):
        load_checkpoint(tmp_path / "old.pt")
    assert resolve_device("cpu").type == "cpu"


class _Payload:
    """An object whose unpickling would run code (here: create a file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_model_file_that_could_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran.txt"
    torch.save({"format": "l3seg-model-v1", "info": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(L3SegInputError, match="evil.pt: not a safe l3seg model file"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_model_file_round_trip_is_safe_to_load(tiny_model):
    ckpt = torch.load(tiny_model.with_suffix(".pt"), map_location="cpu", weights_only=True)  # plain types and tensors
    assert ckpt["format"] == "l3seg-model-v1" and len(ckpt["state_dicts"]) == 2


def test_onnx_model_agrees_with_torch(tiny_model, tiny_processed):
    """The exported ensemble (one ONNX graph, onnxruntime) gives the torch ensemble's probabilities."""
    from l3seg_lib.inference.model_file import OnnxModel
    from l3seg_lib.training.checkpoint import models_from_checkpoint
    from l3seg_lib.training.trainer import predict_probs

    ckpt = load_checkpoint(tiny_model.with_suffix(".pt"))
    onnx_model = OnnxModel(tiny_model, device="cpu")
    assert onnx_model.info.members == 2 and onnx_model.info.image_size == ckpt["image_size"] == 32
    assert "synthetic L3 phantom" in onnx_model.info.extra["training_data"]
    assert "cross-validated Dice" in onnx_model.info.describe()
    images = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    torch_probs = predict_probs(models_from_checkpoint(ckpt, torch.device("cpu")), images, torch.device("cpu"))
    assert np.abs(onnx_model(images) - torch_probs).max() < 1e-4


def test_onnx_model_file_errors(tmp_path, tiny_model):
    import onnx

    from l3seg_lib.inference.model_file import OnnxModel

    with pytest.raises(L3SegInputError, match="none.onnx: model file not found"):
        OnnxModel(tmp_path / "none.onnx")
    with pytest.raises(L3SegInputError, match="model.pt: not a readable ONNX model file .a PyTorch checkpoint"):
        OnnxModel(tiny_model.with_suffix(".pt"))
    model = onnx.load(str(tiny_model))
    for prop in model.metadata_props:
        if prop.key == "l3seg.format":
            prop.value = '"l3seg-onnx-v0"'
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(L3SegInputError, match="old.onnx: model file format 'l3seg-onnx-v0' is not supported"):
        OnnxModel(tmp_path / "old.onnx")
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(L3SegInputError, match="plain.onnx: not an l3seg model file"):
        OnnxModel(tmp_path / "plain.onnx")


@pytest.mark.slow
def test_finetune_command_on_labelled_cases(tiny_processed, tiny_model, tmp_path, capsys):
    """`l3seg finetune`: patient-wise split, fine-tuning from a model, before/after on held-out patients."""
    import yaml

    from l3seg_lib import phantom
    from l3seg_lib.cli import main

    (tmp_path / "map.yaml").write_text(yaml.safe_dump(phantom.PHANTOM_LABEL_MAP))
    manifest = tiny_processed / "raw" / "manifest.csv"
    assert main(["finetune", str(manifest), "--out", str(tmp_path / "ft"), "--model", str(tiny_model),
                 "--label-map", str(tmp_path / "map.yaml"), "--epochs", "1", "--test-fraction", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "before: Dice muscle" in out and "after: Dice muscle" in out
    split = pd.read_csv(tmp_path / "ft" / "split.csv", dtype={"patient_id": str})
    before = pd.read_csv(tmp_path / "ft" / "before.csv", dtype={"patient_id": str})
    held_out = set(split.loc[split["set"] == "test", "patient_id"])
    assert len(held_out) == 1 and set(before["patient_id"]) == held_out  # scored only on held-out patients
    assert (tmp_path / "ft" / "model.onnx").is_file() and (tmp_path / "ft" / "model.pt").is_file()
    assert "Dice before" in (tmp_path / "ft" / "report.html").read_text()
