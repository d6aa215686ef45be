"""Model files that ship with l3seg.

``default.onnx``: the default model (see :mod:`l3seg_lib.training.default_model` for the command
that trains it, and the README for what it was validated on). For research use, not a medical
device.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from l3seg_lib.errors import L3SegInputError

DEFAULT_MODEL = "default.onnx"


def default_model_path() -> Path:
    """The shipped default model file; a clear error when this installation has none."""
    path = Path(str(resources.files("l3seg_lib.models") / DEFAULT_MODEL))
    if not path.is_file():
        raise L3SegInputError(path, "no default model in this installation: give --model (a model.onnx of a run)")
    return path
