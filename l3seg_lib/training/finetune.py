"""Fine-tuning a trained model: on slices of one volume (with contiguous slice-block folds to
evaluate that honestly: neighbouring slices look alike), and on a user's own labelled cases
(``l3seg finetune``, patient-wise, with before-and-after figures)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from l3seg_lib.config import DataConfig, ModelConfig, Params, params_from_dict
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.preprocessing.geometry import (
    image_to_model,
    make_geometry,
    mask_to_model,
)
from l3seg_lib.training.trainer import train_model


def block_folds(n: int, n_blocks: int = 3, buffer: int = 1) -> list[tuple[list[int], list[int]]]:
    """Contiguous slice blocks: (training slices, test slices) per block, leaving ``buffer``
    slices next to the test block out of training."""
    edges = np.linspace(0, n, n_blocks + 1).round().astype(int)
    folds = []
    for k in range(n_blocks):
        lo, hi = int(edges[k]), int(edges[k + 1])
        test = list(range(lo, hi))
        train = [i for i in range(n) if i < lo - buffer or i >= hi + buffer]
        folds.append((train, test))
    return folds


def params_of_checkpoint(ckpt: dict[str, Any]) -> Params:
    """Params holding a model file's architecture, training settings, window and padding."""
    p = params_from_dict({"model": ckpt["model"], "train": ckpt["train"]}, "model file")
    p.preprocess.window_hu = tuple(ckpt["window_hu"])
    p.preprocess.pad_to_square = ckpt["pad_to_square"]
    p.preprocess.pixel_mm = ckpt.get("pixel_mm")
    return copy.deepcopy(p)


def finetune_params(ckpt: dict[str, Any], epochs: int, lr_factor: float = 0.3) -> Params:
    """Training settings of the model file, with fewer epochs and a lower learning rate."""
    p = params_of_checkpoint(ckpt)
    p.train.epochs = epochs
    p.train.lr = p.train.lr * lr_factor
    p.train.early_stopping_patience = 0
    return p


def model_arrays(volume: CTVolume, labels: np.ndarray, indices: list[int], ckpt: dict[str, Any]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Slices ``indices`` of a volume and its class labels at the model file's input size."""
    spacing = (volume.spacing_mm[1], volume.spacing_mm[2])
    geoms = {i: make_geometry(volume.hu.shape[1:], spacing, ckpt["image_size"], ckpt["pad_to_square"],
                              ckpt.get("pixel_mm"), volume.hu[i]) for i in indices}
    x = np.stack([image_to_model(volume.hu[i], geoms[i], tuple(ckpt["window_hu"])) for i in indices])
    y = np.stack([mask_to_model(labels[i], geoms[i]) for i in indices])
    return x, y


def finetune(ckpt: dict[str, Any], volume: CTVolume, labels: np.ndarray, train_idx: list[int], epochs: int,
             seed: int, device: torch.device, member: int = 0) -> dict[str, torch.Tensor]:
    """Fine-tune one member of the model file on the given slices (no validation: fixed epochs)."""
    p = finetune_params(ckpt, epochs)
    x, y = model_arrays(volume, labels, train_idx, ckpt)
    res = train_model(x, y, None, None, ModelConfig(**ckpt["model"]), p.train, seed, device, progress=False,
                      init_state=ckpt["state_dicts"][member], desc="fine-tune")
    return res.state_dict


# --------------------------------------------------------------------------------------------
# fine-tuning on a user's own labelled cases (``l3seg finetune``)


@dataclass
class FinetuneResult:
    """Result of fine-tuning: the model, held-out Dice and areas before and after, the split and the report."""
    model_path: Path
    """The fine-tuned model (ONNX; its weights as ``.pt`` beside it)."""
    before: pd.DataFrame
    """Per held-out slice: Dice and areas of the starting model."""
    after: pd.DataFrame
    """The same for the fine-tuned model."""
    split: pd.DataFrame
    report: Path


def finetune_on_cases(checkpoint: str | Path, manifest: str | Path, out_dir: str | Path, data: DataConfig,
                      epochs: int = 20, test_fraction: float = 0.25, seed: int = 0, lr_factor: float = 0.3,
                      progress: bool = True) -> FinetuneResult:
    """Fine-tune a model (``checkpoint``: its ``.pt`` weights) on the labelled cases of a
    manifest (ITK-SNAP NIfTI, PNG or Slice-O-Matic ``.tag`` masks, as for training).

    Patients are split: ``test_fraction`` of them (at least one) are held out and never train;
    the rest train for a fixed number of ``epochs`` (no selection on any data that is reported).
    Before and after are scored on the held-out patients; writes ``model.onnx``, ``model.pt``,
    ``before.csv``, ``after.csv``, ``split.csv`` and ``report.html`` to ``out_dir``.
    """
    from l3seg_lib.data.cases import iter_manifest
    from l3seg_lib.data.manifest import read_manifest
    from l3seg_lib.evaluation.evaluate import evaluate_cases
    from l3seg_lib.preprocessing.processed import export_processed
    from l3seg_lib.reporting.html import write_finetune_html
    from l3seg_lib.training.checkpoint import load_checkpoint, save_checkpoint
    from l3seg_lib.training.device import configure_torch, resolve_device
    from l3seg_lib.training.export import export_onnx
    from l3seg_lib.training.splits import subset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(checkpoint)
    p = finetune_params(ckpt, epochs, lr_factor)
    p.seed, p.data = seed, data
    processed = export_processed(iter_manifest(read_manifest(manifest), data), out / "processed", p.preprocess)
    patients = sorted(processed["patient_id"].unique())
    if len(patients) < 2:
        raise L3SegInputError(manifest, f"fine-tuning needs labelled cases of at least 2 patients (one held out); "
                                        f"found {len(patients)}")
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(test_fraction * len(patients))))
    test = set(rng.permutation(patients)[:n_test].tolist())
    split = pd.DataFrame({"patient_id": patients, "set": ["test" if pid in test else "dev" for pid in patients],
                          "fold": [-1 if pid in test else 0 for pid in patients]})
    split.to_csv(out / "split.csv", index=False)
    train_rows, test_rows = subset(processed, split, "dev"), subset(processed, split, "test")
    from l3seg_lib.training.dataset import load_slices

    x, y = load_slices(out / "processed", train_rows)
    configure_torch(p.num_threads, p.deterministic)
    start_onnx = export_onnx(ckpt["state_dicts"][:1], p, ckpt["image_size"], out / "start.onnx", "starting model")
    res = train_model(x, y, None, None, ModelConfig(**ckpt["model"]), p.train, seed, resolve_device(p.device),
                      init_state=ckpt["state_dicts"][0], desc="fine-tune", progress=progress)
    info = {"training_data": f"fine-tuned on {len(train_rows)} slices of {train_rows['patient_id'].nunique()} "
                             f"patients of {manifest}, from {ckpt.get('label', 'a model')}"}
    save_checkpoint(out / "model.pt", [res.state_dict], p, ckpt["image_size"], "fine-tuned", info)
    before, _, _ = evaluate_cases(start_onnx, out / "processed", test_rows, p.composition, progress=False)
    model_path = export_onnx([res.state_dict], p, ckpt["image_size"], out / "model.onnx", "fine-tuned", info)
    after, _, _ = evaluate_cases(model_path, out / "processed", test_rows, p.composition, progress=False)
    before.to_csv(out / "before.csv", index=False)
    after.to_csv(out / "after.csv", index=False)
    report = write_finetune_html(out / "report.html", before, after, str(manifest), len(train_rows),
                                 train_rows["patient_id"].nunique(), epochs)
    return FinetuneResult(model_path, before, after, split, report)
