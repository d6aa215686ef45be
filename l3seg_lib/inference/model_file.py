"""Model files for inference: ONNX graphs run by onnxruntime, with l3seg's metadata.

An l3seg ONNX file maps a batch of windowed slices ``image`` (N, 1, size, size), float32 in
[0, 1], to class probabilities ``probs`` (N, 4, size, size): a single network or the mean
softmax of a cross-validation ensemble, in one graph. Its ``metadata_props`` say how to prepare
the input (HU window, input size in pixels, padding to square), the classes, and where the
model comes from (label, training data and settings, params hash, l3seg version, measured
accuracy). ONNX holds no code, so a model file from someone else is safe to open.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from l3seg_lib import __version__
from l3seg_lib.config import Params
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.tissues import CLASS_NAMES

ONNX_FORMAT = "l3seg-onnx-v1"
"""Format tag of the ONNX model files this version reads and writes."""
REQUIRED_KEYS = ("format", "window_hu", "image_size", "pad_to_square", "classes")


def providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers: CUDA when present (``auto``) or asked for, else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise L3SegInputError(None, "device: cuda was requested but onnxruntime has no CUDA provider "
                                    "(install onnxruntime-gpu)")
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass
class ModelSpec:
    """What an l3seg model file says about itself: how to prepare the input, the classes, and
    where the model comes from. The one description of a model, written and read here only:
    training's ``export`` writes it into ONNX ``metadata_props`` (:meth:`to_onnx_props`) and its
    ``checkpoint`` into ``.pt`` files (:meth:`to_metadata`); both are read and checked by
    :meth:`from_metadata` (:func:`read_metadata` for ONNX)."""

    window_hu: tuple[float, float]
    """HU window clipped and scaled to [0, 1]."""
    image_size: int
    """Model input size in pixels (square)."""
    pad_to_square: bool
    classes: tuple[str, ...] = CLASS_NAMES
    pixel_mm: float | None = None
    """Physical scale of the model input (mm per pixel), or None (the whole image resized)."""
    label: str = "model"
    l3seg_version: str = ""
    members: int = 1
    """Networks averaged in the graph (a cross-validation ensemble)."""
    params_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Architecture (``model``), training settings (``train``), training data, measured accuracy, ..."""

    @classmethod
    def from_params(cls, params: Params, image_size: int, label: str = "model", members: int = 1,
                    info: dict[str, Any] | None = None) -> ModelSpec:
        """The spec of a network trained with ``params`` (``info``: JSON-plain extras such as
        ``training_data``, ``accuracy``, ``folds``)."""
        extra = {"model": dataclasses.asdict(params.model), "train": params.to_dict()["train"], **(info or {})}
        return cls(window_hu=(float(params.preprocess.window_hu[0]), float(params.preprocess.window_hu[1])),
                   image_size=int(image_size), pad_to_square=bool(params.preprocess.pad_to_square),
                   classes=CLASS_NAMES, pixel_mm=params.preprocess.pixel_mm, label=label, l3seg_version=__version__,
                   members=int(members), params_sha256=params_sha256(params), extra=_plain(extra))

    def to_metadata(self, fmt: str = ONNX_FORMAT) -> dict[str, Any]:
        """JSON-plain metadata with format tag ``fmt`` (extras at the top level)."""
        meta = {"format": fmt, "l3seg_version": self.l3seg_version, "label": self.label,
                "classes": list(self.classes), "window_hu": list(self.window_hu), "image_size": int(self.image_size),
                "pad_to_square": bool(self.pad_to_square), "pixel_mm": self.pixel_mm, "members": int(self.members),
                "params_sha256": self.params_sha256}
        clash = sorted(set(self.extra) & (set(meta) | {"info", "state_dicts"}))
        if clash:
            raise ValueError(f"model metadata extras may not be named {clash}")
        return _plain({**meta, **self.extra})

    def to_onnx_props(self) -> dict[str, str]:
        """ONNX ``metadata_props``: ``l3seg.<key>`` -> JSON string."""
        return {f"l3seg.{k}": json.dumps(v) for k, v in self.to_metadata(ONNX_FORMAT).items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], path: str | Path | None, fmt: str = ONNX_FORMAT,
                      remedy: str = "export the model again with this version") -> ModelSpec:
        """Check and parse metadata written by :meth:`to_metadata` (format ``fmt``); an
        :class:`L3SegInputError` naming ``path`` says what is wrong."""
        if not isinstance(meta, dict) or "format" not in meta:
            raise L3SegInputError(path, f"not an l3seg model file (no l3seg metadata; expected format {fmt})")
        if meta["format"] != fmt:
            raise L3SegInputError(path, f"model file format {meta['format']!r} is not supported by l3seg {__version__} "
                                        f"(reads {fmt}); {remedy}")
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise L3SegInputError(path, f"l3seg metadata lacks {', '.join(missing)}")
        if tuple(meta["classes"]) != CLASS_NAMES:
            raise L3SegInputError(path, f"model classes {meta['classes']} are not l3seg's {list(CLASS_NAMES)}")
        try:
            window = (float(meta["window_hu"][0]), float(meta["window_hu"][1]))
            spec = cls(window_hu=window, image_size=int(meta["image_size"]), pad_to_square=bool(meta["pad_to_square"]),
                       classes=tuple(meta["classes"]), label=str(meta.get("label", "model")),
                       pixel_mm=None if meta.get("pixel_mm") is None else float(meta["pixel_mm"]),
                       l3seg_version=str(meta.get("l3seg_version", "")), members=int(meta.get("members", 1)),
                       params_sha256=str(meta.get("params_sha256", "")))
        except (TypeError, ValueError, IndexError) as exc:
            raise L3SegInputError(path, f"l3seg metadata has an invalid value ({exc})") from None
        if not window[0] < window[1] or spec.image_size < 1:
            raise L3SegInputError(path, f"l3seg metadata: invalid window_hu {list(window)} or image_size {spec.image_size}")
        known = set(REQUIRED_KEYS) | {"label", "l3seg_version", "members", "params_sha256", "pixel_mm", "state_dicts"}
        extra = {k: v for k, v in meta.items() if k not in known and k != "info"}
        if isinstance(meta.get("info"), dict):  # .pt files of l3seg <= 0.1.0 nest their extras under "info"
            extra.update(meta["info"])
        spec.extra = extra
        return spec

    def describe(self) -> str:
        """One line for outputs and reports: the model, its training data and its accuracy."""
        parts = [self.label]
        data = self.extra.get("training_data")
        if data:
            parts.append(f"trained on {data}")
        for key in ("accuracy", "real_ct_accuracy"):
            if self.extra.get(key):
                parts.append(str(self.extra[key]))
        return "; ".join(parts)


def _plain(value: Any) -> Any:
    """JSON-plain copy (dicts, lists, str, numbers, bools, None) of metadata."""
    return json.loads(json.dumps(value, default=float))


def params_sha256(params: Params) -> str:
    """Hash of the params (as YAML) a model was trained with."""
    return hashlib.sha256(yaml.safe_dump(params.to_dict(), sort_keys=True).encode()).hexdigest()


def read_metadata(props: dict[str, str], path: Path) -> ModelSpec:
    """Parse and check l3seg metadata (ONNX ``metadata_props``, all JSON strings)."""
    try:
        meta = {k[len("l3seg."):]: json.loads(v) for k, v in props.items() if k.startswith("l3seg.")}
    except json.JSONDecodeError as exc:
        raise L3SegInputError(path, f"l3seg metadata is not valid JSON ({exc})") from None
    return ModelSpec.from_metadata(meta, path, ONNX_FORMAT)


class OnnxModel:
    """An l3seg ONNX model file, opened with onnxruntime.

    Args:
        path: the ``.onnx`` file.
        device: ``auto`` (CUDA provider when present), ``cpu`` or ``cuda``.
        num_threads: CPU threads for onnxruntime (0 = all cores).
    """

    def __init__(self, path: str | Path, device: str = "auto", num_threads: int = 0):
        """Open the model in an onnxruntime session and read its l3seg metadata; an input error when the file
        is missing or not a readable ONNX model."""
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise L3SegInputError(self.path, "model file not found")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # idle onnxruntime threads sleep instead of spinning, leaving the cores to the threads that
        # read the next inputs and write pictures (measured: 7.0 -> 9.9 slices/s in measure)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if num_threads > 0:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers(device))
        except L3SegInputError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            hint = " (a PyTorch checkpoint? predict and measure read the .onnx file next to it)" \
                if self.path.suffix == ".pt" else ""
            raise L3SegInputError(self.path, f"not a readable ONNX model file{hint}: {str(exc).splitlines()[0]}") from None
        self.info = read_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """(N, H, W) float32 images in [0, 1] -> (N, C, H, W) float32 class probabilities."""
        out = []
        for start in range(0, len(images), batch_size):
            x = np.ascontiguousarray(images[start: start + batch_size, None], dtype=np.float32)
            out.append(self.session.run(None, {self.input_name: x})[0])
        if not out:
            return np.zeros((0, len(self.info.classes)) + images.shape[1:], np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

