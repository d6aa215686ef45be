"""Export trained networks to the ONNX model file that inference reads (:mod:`l3seg_lib.inference.model_file`).

A fold ensemble becomes one graph that averages its members' softmax, so inference runs one
session whatever the number of members. The metadata say how to prepare the input and where the
model comes from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from l3seg_lib import __version__
from l3seg_lib.config import CLASS_NAMES, Params
from l3seg_lib.inference.model_file import ONNX_FORMAT
from l3seg_lib.training.network import build_model

OPSET = 17


class MeanSoftmax(nn.Module):
    """Mean class probabilities of several networks: (N, 1, H, W) -> (N, C, H, W)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)


def params_sha256(params: Params) -> str:
    """Hash of the params (as YAML) a model was trained with."""
    return hashlib.sha256(yaml.safe_dump(params.to_dict(), sort_keys=True).encode()).hexdigest()


def export_onnx(states: list[dict[str, torch.Tensor]], params: Params, image_size: int, path: str | Path,
                label: str = "model", info: dict[str, Any] | None = None) -> Path:
    """Write ``states`` (one network or a fold ensemble) as one l3seg ONNX file.

    ``info`` (JSON-plain) is stored too, e.g. ``training_data``, ``accuracy``, ``folds``.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = []
    for state in states:
        m = build_model(params.model, n_classes=len(CLASS_NAMES))
        m.load_state_dict(state)
        members.append(m.eval())
    graph = MeanSoftmax(members).eval()
    x = torch.zeros(1, 1, image_size, image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, (x,), str(path), input_names=["image"], output_names=["probs"],
                          dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    model = onnx.load(str(path))
    meta = {
        "format": ONNX_FORMAT, "l3seg_version": __version__, "label": label, "classes": list(CLASS_NAMES),
        "window_hu": list(params.preprocess.window_hu), "image_size": int(image_size),
        "pad_to_square": params.preprocess.pad_to_square, "pixel_mm": params.preprocess.pixel_mm,
        "members": len(states),
        "model": dataclasses.asdict(params.model), "train": params.to_dict()["train"],
        "params_sha256": params_sha256(params), **(info or {}),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"l3seg.{key}", json.dumps(value, default=float)
    model.producer_name, model.producer_version = "l3seg", __version__
    onnx.save(model, str(path))
    return path


def add_metadata(path: str | Path, **values: Any) -> Path:
    """Add or replace l3seg metadata of an ONNX model file (e.g. its measured accuracy on real CT)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({f"l3seg.{k}": json.dumps(v, default=float) for k, v in values.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return Path(path)
