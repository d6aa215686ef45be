"""Model files that ship with l3seg.

``default.onnx``: the default model, 8 networks (4 training seeds x 2 folds; see
:mod:`l3seg_lib.training.default_model` for the command that trains it, and docs/results.md for what it
was validated on). ``fast.onnx``: 2 networks (one seed), about a quarter of the default's network
time, lower real-CT muscle accuracy; ``--model fast``. ``real.onnx``: 4 networks of the default
fine-tuned on 26 careful real references of the three shared real CTs and blended half-way back
with their start (WiSE-FT; ``experiments/realct_lopo.py --interpolate 0.5``, docs/realct_training.md),
better than the default on every real patient left out of its training; ``--model real``. For
research use, not a medical device.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from l3seg_lib.errors import L3SegInputError

DEFAULT_MODEL = "default.onnx"
SHIPPED_MODELS = {"default": DEFAULT_MODEL, "fast": "fast.onnx", "real": "real.onnx"}
"""Names accepted by ``--model`` for the model files that ship with l3seg."""


def shipped_model_path(name: str = "default") -> Path:
    """The shipped model ``name`` (``default``, ``fast`` or ``real``); a clear error when this installation
    has none."""
    if name not in SHIPPED_MODELS:
        raise L3SegInputError(name, f"no shipped model of this name (shipped: {', '.join(SHIPPED_MODELS)})")
    path = Path(str(resources.files("l3seg_lib.models") / SHIPPED_MODELS[name]))
    if not path.is_file():
        raise L3SegInputError(path, f"no {name} model in this installation: give --model (a model.onnx of a run)")
    return path


def default_model_path() -> Path:
    """The shipped default model file; a clear error when this installation has none."""
    return shipped_model_path("default")


def resolve_model(path: str | Path | None) -> Path:
    """A ``--model`` value: a file, a shipped model's name (``default``, ``fast``, ``real``; a file of that
    name in the working folder wins), or None for the default model."""
    if path is None or str(path) == "":
        return default_model_path()
    p = Path(path)
    if str(path) in SHIPPED_MODELS and not p.exists():
        return shipped_model_path(str(path))
    return p
