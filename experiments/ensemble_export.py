"""Join the networks of several l3seg model files (``model.pt``) into one ensemble model.

    python experiments/ensemble_export.py --out runs/ens runs/a/train/model.pt runs/b/train/model.pt

Writes ``OUT/model.onnx`` and ``OUT/model.pt``. Every member's softmax is averaged, as within one
fold ensemble, and the files are what :func:`l3seg_lib.training.default_model.train_default_model`
writes for its seeds. Used to join trainings run separately (e.g. one seed per process on a GPU
machine). The files must share the architecture and preprocessing; a mismatch is an error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from l3seg_lib.config import ModelConfig, TrainConfig
from l3seg_lib.training.checkpoint import checkpoint_spec, load_checkpoint, save_checkpoint
from l3seg_lib.training.default_model import DEFAULT_WEIGHTS_DTYPE, default_model_params
from l3seg_lib.training.export import export_onnx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder to write model.onnx and model.pt into")
    ap.add_argument("--label", default="l3seg default model")
    ap.add_argument("--per-file", type=int, default=0, help="networks taken from each file (0: all)")
    ap.add_argument("--weights-dtype", default=DEFAULT_WEIGHTS_DTYPE, choices=["float32", "float16"])
    ap.add_argument("--note", default=None, help="stored as metadata 'trained_on' (where/how it was trained)")
    ap.add_argument("checkpoints", nargs="+", help="model.pt files (l3seg checkpoints)")
    a = ap.parse_args(argv)
    states, first, seeds = [], None, []
    for path in a.checkpoints:
        ckpt = load_checkpoint(path)
        spec = checkpoint_spec(ckpt)
        key = (tuple(sorted(ckpt["model"].items())), spec.image_size, spec.pixel_mm, tuple(spec.window_hu))
        if first is None:
            first = (key, ckpt)
        elif key != first[0]:
            raise SystemExit(f"error: {path}: architecture or preprocessing differs from {a.checkpoints[0]}")
        states.extend(ckpt["state_dicts"][: a.per_file or None])
        seeds.append(ckpt.get("seed"))
    key, ckpt = first
    spec = checkpoint_spec(ckpt)
    p = default_model_params(members=len(ckpt["state_dicts"]))
    p.model = ModelConfig(**ckpt["model"])
    train = dict(ckpt["train"])
    augment = train.pop("augment")
    p.train = TrainConfig(**train)
    for k, v in augment.items():
        setattr(p.train.augment, k, v)
    p.preprocess.pixel_mm, p.preprocess.window_hu = spec.pixel_mm, list(spec.window_hu)
    info = {"joined_from": [Path(c).name for c in a.checkpoints], "weights_dtype": a.weights_dtype,
            "training_data": ckpt.get("training_data")}
    if a.note:
        info["trained_on"] = a.note
    out = Path(a.out)
    save_checkpoint(out / "model.pt", states, p, spec.image_size, a.label, info, weights_dtype=a.weights_dtype)
    export_onnx(states, p, spec.image_size, out / "model.onnx", a.label, info, weights_dtype=a.weights_dtype)
    print(f"{out}/model.onnx, model.pt: {len(states)} networks from {len(a.checkpoints)} files ({a.weights_dtype})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
