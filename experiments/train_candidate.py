"""Train one candidate default model (issue 26): the default recipe with some settings changed.

    python experiments/train_candidate.py --out runs/cand_w16 --width 16 --epochs 30 --patients 200

Same code path as ``l3seg train-default`` (:func:`train_default_model`), so a candidate that wins
is re-trained by that command with the same settings. Runs on CUDA when present (params
``device: auto``), else on the CPU. Writes ``OUT/train/model.onnx`` and ``OUT/params.yaml``;
score candidates side by side with ``experiments/realct_eval.py --model NAME=OUT/train/model.onnx``.
"""

from __future__ import annotations

import argparse
import time

from l3seg_lib.training.default_model import default_model_params, train_default_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, default=8, help="U-Net base width (channels of the first level)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--patients", type=int, default=60, help="phantom patients generated")
    ap.add_argument("--members", type=int, default=2, help="cross-validation folds trained = ensemble members")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--basic", action="store_true", help="phantom without realism")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps per epoch (0: one pass over the data)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--strong-aug", action="store_true",
                    help="stronger intensity and scale augmentation (brightness 0.15, contrast 0.3, noise 0.05, "
                         "scale 0.8-1.25)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)

    p = default_model_params(members=a.members, realism=not a.basic, seed=a.seed)
    p.name = f"candidate_{a.out.rstrip('/').split('/')[-1]}"
    p.num_threads = a.threads
    p.model.base_width = a.width
    p.train.epochs = a.epochs
    p.train.batch_size = a.batch
    p.train.steps_per_epoch = a.steps or None
    p.data.phantom.n_patients = a.patients
    if a.strong_aug:
        aug = p.train.augment
        aug.brightness, aug.contrast, aug.noise_std, aug.scale = 0.15, 0.3, 0.05, [0.8, 1.25]
    t0 = time.perf_counter()
    res = train_default_model(a.out, p, progress=not a.quiet)
    print(f"{a.out}: cross-validated Dice {res.mean_fg_dice:.3f} in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
