"""The default model that ships with l3seg: trained from the built-in data by one command,

    l3seg train-default --out runs/default_model

(the synthetic phantom with ``realism`` on, physical-scale input, two cross-validation folds as a
two-member ensemble, about 15 minutes on 2 CPU cores). The resulting ``train/model.onnx`` is what
``l3seg_lib/models/default.onnx`` holds.
"""

from __future__ import annotations

import copy
from pathlib import Path

from l3seg_lib.config import Params, save_params
from l3seg_lib.preprocessing.processed import prepare_builtin
from l3seg_lib.training.crossval import CVResult, cross_validate
from l3seg_lib.training.splits import make_splits

DEFAULT_MEMBERS = 2
"""Cross-validation folds trained (the ensemble's members): 2 keep the ONNX file under 5 MB."""


def default_model_params(members: int = DEFAULT_MEMBERS, pixel_mm: float | None = 1.5, realism: bool = True,
                         seed: int = 42) -> Params:
    """The params of the default model: the dataclass defaults (= ``params/default.yaml``) with
    ``members`` folds trained, no optimisation."""
    p = Params(name="default_model", seed=seed)
    p.data.phantom.realism = realism
    p.preprocess.pixel_mm = pixel_mm
    p.train.folds_to_run = list(range(members))
    p.optimize.enabled = False
    return p


def train_default_model(out_dir: str | Path, params: Params | None = None, progress: bool = True) -> CVResult:
    """Generate the built-in data, preprocess it and cross-validate ``params`` (default:
    :func:`default_model_params`) under ``out_dir``; returns the result (ONNX in
    ``out_dir/train/model.onnx``)."""
    p = copy.deepcopy(params or default_model_params())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_params(p, out / "params.yaml")
    proc = out / "processed"
    manifest = prepare_builtin(out / "raw", proc, p, progress)
    split = make_splits(manifest, p.split, p.seed)
    split.to_csv(proc / "split.csv", index=False)
    return cross_validate(proc, manifest, split, p, out_dir=out / "train", label="l3seg default model",
                          progress=progress)
