"""Export trained networks to the ONNX model file that inference reads (:mod:`l3seg_lib.inference.model_file`).

A fold ensemble becomes one graph that averages its members' softmax, so inference runs one
session whatever the number of members. The metadata say how to prepare the input and where the
model comes from.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from l3seg_lib import __version__
from l3seg_lib.config import Params
from l3seg_lib.inference.model_file import ModelSpec, read_metadata
from l3seg_lib.tissues import CLASS_NAMES
from l3seg_lib.training.network import build_model

OPSET = 17


class MeanSoftmax(nn.Module):
    """Mean class probabilities of several networks: (N, 1, H, W) -> (N, C, H, W)."""

    def __init__(self, members: list[nn.Module]):
        """Ensemble of the networks ``members``."""
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the members of their softmax class probabilities (a running sum: only one
        member's output is held at a time, which keeps inference memory flat in the members)."""
        total = self.members[0](x).softmax(dim=1)
        for m in self.members[1:]:
            total = total + m(x).softmax(dim=1)
        return total / len(self.members)


def export_onnx(states: list[dict[str, torch.Tensor]], params: Params, image_size: int, path: str | Path,
                label: str = "model", info: dict[str, Any] | None = None, weights_dtype: str = "float32") -> Path:
    """Write ``states`` (one network or a fold ensemble) as one l3seg ONNX file.

    ``info`` (JSON-plain) is stored too, e.g. ``training_data``, ``accuracy``, ``folds``.
    ``weights_dtype="float16"`` stores the weights in half precision (half the file; see
    :func:`store_weights_float16`); the network still computes in float32.
    """
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights_dtype must be float32 or float16, not {weights_dtype!r}")
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
    spec = ModelSpec.from_params(params, image_size, label, members=len(states), info=info)
    del model.metadata_props[:]
    for key, value in spec.to_onnx_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "l3seg", __version__
    if weights_dtype == "float16":
        store_weights_float16(model)
    onnx.save(model, str(path))
    return path


def store_weights_float16(model: Any, min_elements: int = 16) -> int:
    """Store the float32 weights (initializers of at least ``min_elements`` values) of an ONNX
    ``model`` in float16, each followed by a Cast back to float32: the file halves, inference
    computes in float32 as before (onnxruntime folds the casts when the session is built).
    Returns the number of tensors converted."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts, kept, n = [], [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__to_fp32"))
        n += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return n


def add_metadata(path: str | Path, **values: Any) -> Path:
    """Add or replace l3seg metadata of an ONNX model file (e.g. its measured accuracy on real CT);
    the file's :class:`ModelSpec` is read, updated and written back, so it stays valid."""
    import dataclasses

    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    spec = read_metadata({p.key: p.value for p in model.metadata_props}, path)
    fields = {f.name for f in dataclasses.fields(ModelSpec)} - {"extra", "classes"}
    for key, value in json.loads(json.dumps(values, default=float)).items():
        if key in fields:
            setattr(spec, key, tuple(value) if key == "window_hu" else value)
        else:
            spec.extra[key] = value
    del model.metadata_props[:]
    for key, value in spec.to_onnx_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path
