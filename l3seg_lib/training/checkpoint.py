"""Training checkpoints (``.pt``): the network weights with everything needed to use them, to
fine-tune them, and to export them to ONNX (:mod:`.export`), the format inference reads.

A model file holds one network or a cross-validation ensemble (``state_dicts``), the
architecture (``model``), the input window in HU, the model input size in pixels and how slices
were padded, the class names, the training settings and free ``info``. It is written with
``torch.save`` from plain types and tensors only and read with ``weights_only=True``, so loading
a model file from someone else cannot run code.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from l3seg_lib import __version__
from l3seg_lib.config import CLASS_NAMES, ModelConfig, Params
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.training.network import UNet, build_model

CHECKPOINT_FORMAT = "l3seg-model-v1"
"""Format tag of the model files this version reads and writes."""


def _plain(value: Any) -> Any:
    """JSON-plain copy (dicts, lists, str, numbers, bools, None) of metadata."""
    return json.loads(json.dumps(value, default=float))


def save_checkpoint(path: str | Path, states: list[dict[str, torch.Tensor]], params: Params, image_size: int,
                    label: str = "model", info: dict[str, Any] | None = None) -> Path:
    """Save one model or a fold ensemble with what inference needs (architecture, window, size)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _plain({
        "format": CHECKPOINT_FORMAT,
        "l3seg_version": __version__,
        "label": label,
        "classes": list(CLASS_NAMES),
        "model": dataclasses.asdict(params.model),
        "train": params.to_dict()["train"],
        "window_hu": list(params.preprocess.window_hu),
        "image_size": int(image_size),
        "pad_to_square": params.preprocess.pad_to_square,
        "pixel_mm": params.preprocess.pixel_mm,
        "info": info or {},
    })
    states = [{k: v.detach().cpu() for k, v in s.items()} for s in states]
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
    except pickle.UnpicklingError as exc:
        raise L3SegInputError(path, "not a safe l3seg model file: it holds objects other than weights and plain "
                                    f"settings, which are not loaded because they could run code ({exc})") from None
    except Exception as exc:
        raise L3SegInputError(path, f"not a readable model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise L3SegInputError(path, f"not an l3seg model file (expected format {CHECKPOINT_FORMAT})")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise L3SegInputError(path, f"model file format {ckpt['format']!r} is not supported by l3seg {__version__} "
                                    f"(reads {CHECKPOINT_FORMAT}); retrain or convert the model")
    return ckpt


def models_from_checkpoint(ckpt: dict[str, Any], device: torch.device) -> list[UNet]:
    """The networks of a model file, in eval mode on ``device``."""
    cfg = ModelConfig(**ckpt["model"])
    models = []
    for state in ckpt["state_dicts"]:
        m = build_model(cfg, n_classes=len(ckpt["classes"]))
        m.load_state_dict(state)
        models.append(m.to(device).eval())
    return models
