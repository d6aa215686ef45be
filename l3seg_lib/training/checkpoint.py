"""Training checkpoints (``.pt``): the network weights with everything needed to use them, to
fine-tune them, and to export them to ONNX (:mod:`.export`), the format inference reads.

A model file holds one network or a cross-validation ensemble (``state_dicts``), the
architecture (``model``), the input window in HU, the model input size in pixels and how slices
were padded, the class names, the training settings and free extras (one :class:`~l3seg_lib.inference.model_file.ModelSpec`). It is written with
``torch.save`` from plain types and tensors only and read with ``weights_only=True``, so loading
a model file from someone else cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from l3seg_lib.config import ModelConfig, Params
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.inference.model_file import ModelSpec
from l3seg_lib.training.network import UNet, build_model

CHECKPOINT_FORMAT = "l3seg-model-v1"
"""Format tag of the model files this version reads and writes."""


def save_checkpoint(path: str | Path, states: list[dict[str, torch.Tensor]], params: Params, image_size: int,
                    label: str = "model", info: dict[str, Any] | None = None, weights_dtype: str = "float32") -> Path:
    """Save one model or a fold ensemble with what inference needs (architecture, window, size).

    ``weights_dtype="float16"`` stores floating-point tensors in half precision (half the file);
    :func:`models_from_checkpoint` loads them into float32 networks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = ModelSpec.from_params(params, image_size, label, members=len(states), info=info).to_metadata(CHECKPOINT_FORMAT)
    half = weights_dtype == "float16"
    states = [{k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
               for k, v in s.items()} for s in states]
    torch.save({**meta, "state_dicts": states}, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a model file safely (``weights_only=True``); clear errors for a missing file, a
    file that is not an l3seg model, or one of another format version."""
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "model file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise L3SegInputError(path, "not a safe l3seg model file: it holds objects other than weights and plain "
                                    "settings, which are not loaded because they could run code") from None
    except Exception as exc:
        raise L3SegInputError(path, f"not a readable model file ({type(exc).__name__}: {exc})") from None
    spec = ModelSpec.from_metadata(ckpt, path, CHECKPOINT_FORMAT, remedy="retrain or convert the model")
    if not isinstance(ckpt.get("state_dicts"), list) or not ckpt["state_dicts"] or "model" not in spec.extra:
        raise L3SegInputError(path, "l3seg model file lacks its networks (state_dicts) or architecture (model)")
    if "members" not in ckpt:  # files of l3seg <= 0.1.0 do not say; every network is a member
        spec.members = len(ckpt["state_dicts"])
    ckpt["spec"] = spec
    return ckpt


def checkpoint_spec(ckpt: dict[str, Any]) -> ModelSpec:
    """The :class:`ModelSpec` of a checkpoint read by :func:`load_checkpoint`."""
    return ckpt["spec"] if isinstance(ckpt.get("spec"), ModelSpec) else ModelSpec.from_metadata(ckpt, None, CHECKPOINT_FORMAT)


def models_from_checkpoint(ckpt: dict[str, Any], device: torch.device) -> list[UNet]:
    """The networks of a model file, in eval mode on ``device``."""
    cfg = ModelConfig(**ckpt["model"])
    models = []
    for state in ckpt["state_dicts"]:
        m = build_model(cfg, n_classes=len(ckpt["classes"]))
        m.load_state_dict(state)
        models.append(m.to(device).eval())
    return models
