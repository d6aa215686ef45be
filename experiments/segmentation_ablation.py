"""Segmentation on real CT, step by step: zero-shot Dice and area error per tissue on the real
example's 30 labelled slices (T11-L2, 3 mm voxels, TotalSegmentator tissue masks; evaluation data
only: nothing here trains on it) after each step (a study script, run from the repository root):

    .venv/bin/python experiments/segmentation_ablation.py train --out runs/ablation     # ~40 min, 2 cores
    .venv/bin/python experiments/segmentation_ablation.py evaluate --out runs/ablation \\
        --real ../shared/data/totalsegmentator_example

Steps: (1) today's recipe: whole image resized to 256 px, the basic phantom; (2) physical scale
(1.5 mm pixels, body centred); (3) new training data (phantom realism on); (4) post-processing.
Every model: the default architecture and training, two cross-validation folds as an ensemble.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from realct_check import (  # experiments/, beside this script
    evaluate_slices,
    load_tissue_crop,
)

from l3seg_lib.tissues import TISSUES
from l3seg_lib.imageio.nifti import read_nifti
from l3seg_lib.inference.predictor import Predictor

STEPS = {
    "1 today's recipe (whole image, basic phantom)": {"pixel_mm": None, "realism": False},
    "2 + physical scale (1.5 mm pixels)": {"pixel_mm": 1.5, "realism": False},
    "3 + new training data (realism)": {"pixel_mm": 1.5, "realism": True},
}


def train(out: Path) -> None:
    from l3seg_lib.training.default_model import (
        default_model_params,
        train_default_model,
    )

    for k, (name, kw) in enumerate(STEPS.items(), start=1):
        folder = out / f"step{k}"
        if (folder / "train" / "model.onnx").is_file():
            print(f"{name}: already trained ({folder})")
            continue
        print(f"training {name} -> {folder}", flush=True)
        res = train_default_model(folder, default_model_params(**kw))
        print(f"  cross-validated Dice on its own data: {res.mean_fg_dice:.3f}", flush=True)


def evaluate_model(model: Path, volume, labels, postprocess: bool) -> pd.DataFrame:
    return evaluate_slices(Predictor(model, "cpu", postprocess=postprocess), volume, labels,
                           list(range(volume.n_slices)))[0]


def evaluate(out: Path, real: Path) -> pd.DataFrame:
    volume, labels = load_tissue_crop(real)
    rows = []
    for k, name in enumerate(STEPS, start=1):
        model = out / f"step{k}" / "train" / "model.onnx"
        runs = [(name, False)] + ([("4 + post-processing", True)] if k == len(STEPS) else [])
        for label, post in runs:
            df = evaluate_model(model, volume, labels, post)
            rows.append({"step": label, **{f"Dice {t}": df[f"dice_{t}"].mean() for t in TISSUES},
                         **{f"area error {t} (%)": 100 * (df[f"area_pred_{t}_cm2"].sum() - df[f"area_true_{t}_cm2"].sum())
                            / df[f"area_true_{t}_cm2"].sum() for t in TISSUES}})
    table = pd.DataFrame(rows).set_index("step")
    table.to_csv(out / "ablation.csv")
    (out / "ablation.json").write_text(json.dumps(table.round(4).to_dict(orient="index"), indent=2))
    return table


def thin_sat(out: Path, patient: str = "L3P0020") -> pd.DataFrame:
    """Built-in test patients (never trained on) at the old and the new scale: mean Dice per tissue,
    and the SAT Dice of the cachectic patient whose 2-3 mm SAT ring the old scale lost."""
    from l3seg_lib.evaluation.evaluate import evaluate_cases
    from l3seg_lib.preprocessing.processed import read_processed_manifest
    from l3seg_lib.training.splits import subset

    rows = []
    for k, name in ((1, "whole image resized to 256 px"), (2, "physical scale, 1.5 mm pixels")):
        folder = out / f"step{k}"
        manifest = read_processed_manifest(folder / "processed")
        split = pd.read_csv(folder / "processed" / "split.csv", dtype={"patient_id": str})
        test = subset(manifest, split, "test")
        df, _, _ = evaluate_cases(folder / "train" / "model.onnx", folder / "processed", test, progress=False,
                                  postprocess=False)
        pat = df[df["patient_id"] == patient]
        rows.append({"input": name, "model pixel (mm), median": float(np.median(test["eff_spacing_row_mm"])),
                     **{f"test Dice {t}": df[f"dice_{t}"].mean() for t in TISSUES},
                     f"{patient} SAT Dice": pat["dice_sat"].mean() if len(pat) else np.nan,
                     "test patients": test["patient_id"].nunique()})
    table = pd.DataFrame(rows).set_index("input")
    table.to_csv(out / "thin_sat.csv")
    return table


def real_l3_figure(out: Path, real: Path, docs: Path | None = None, model_path: Path | None = None) -> Path:
    """The default-recipe model (the last step's, or ``model_path``, e.g. the shipped default) on the
    real CT: the L3 slice the localiser picks, and a labelled crop slice beside its reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from l3seg_lib.localize.l3 import locate_l3
    from l3seg_lib.measurement.composition import measure_slice
    from l3seg_lib.reporting.figures import legend_handles
    from l3seg_lib.reporting.overlays import crop_to_body, overlay_rgb

    model = Predictor(model_path or out / f"step{len(STEPS)}" / "train" / "model.onnx", "cpu")
    full = read_nifti(real / "example_ct.nii.gz")
    z = locate_l3(full).slice_index
    spacing = (full.spacing_mm[1], full.spacing_mm[2])
    pred = model.predict_hu(full.hu[z], spacing)
    m = measure_slice(full.hu[z], pred.labels, spacing)
    volume, labels = load_tissue_crop(real)
    k = volume.n_slices // 2
    crop_pred = model.predict_hu(volume.hu[k], spacing).labels
    panels = [(f"real L3 slice {z} (found by l3seg locate): SMA {m['sma_refined_cm2']:.0f}, "
               f"SAT {m['sat_refined_cm2']:.0f}, VAT {m['vat_refined_cm2']:.0f} cm²", full.hu[z], pred.labels),
              (f"labelled slice {k} (T12-L1): reference", volume.hu[k], labels[k]),
              (f"labelled slice {k}: default model", volume.hu[k], crop_pred)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, (title, hu, lab) in zip(axes, panels):
        hu_c, lab_c = crop_to_body(hu, lab, margin=3)
        ax.imshow(overlay_rgb(hu_c, lab_c), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.legend(handles=legend_handles(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "real_ct_default_model.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    if docs is not None:
        fig.savefig(docs / "realct_default_model.png", dpi=70, bbox_inches="tight")
    plt.close(fig)
    return path


def install_default(out: Path) -> None:
    """Copy the last step's model (the ``l3seg train-default`` recipe) into the package as the
    default model, with its measured real-CT accuracy (from ``evaluate``) in its metadata."""
    import shutil

    from l3seg_lib.models import DEFAULT_MODEL
    from l3seg_lib.training.export import add_metadata

    table = json.loads((out / "ablation.json").read_text())
    last = table[list(table)[-1]]
    target = Path(__file__).resolve().parents[1] / "l3seg_lib" / "models"
    step = out / f"step{len(STEPS)}" / "train"
    shutil.copy(step / "model.onnx", target / DEFAULT_MODEL)
    shutil.copy(step / "model.pt", (target / DEFAULT_MODEL).with_suffix(".pt"))
    add_metadata(target / DEFAULT_MODEL, label="l3seg default model",
                 real_ct_accuracy=(f"zero-shot on one real CT (TotalSegmentator example, 30 slices T11-L2, 3 mm, "
                                   f"model-made labels), with post-processing: Dice muscle {last['Dice muscle']:.3f}, "
                                   f"SAT {last['Dice sat']:.3f}, VAT {last['Dice vat']:.3f}"),
                 intended_use="research use only; not a medical device")
    print(f"installed {target / DEFAULT_MODEL} ({(target / DEFAULT_MODEL).stat().st_size / 1e6:.1f} MB)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["train", "evaluate", "install-default", "figure"])
    ap.add_argument("--model", type=Path, help="figure: the model to show (default: the shipped default model)")
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--real", type=Path, help="the totalsegmentator_example folder (evaluate)")
    ap.add_argument("--docs", type=Path, help="also write the real-CT figure into this folder (evaluate)")
    args = ap.parse_args()
    if args.action == "train":
        train(args.out)
        return 0
    if args.action == "install-default":
        install_default(args.out)
        return 0
    if args.real is None:
        print(f"error: {args.action} needs --real", file=sys.stderr)
        return 2
    if args.action == "figure":
        from l3seg_lib.models import default_model_path

        print(f"figure: {real_l3_figure(args.out, args.real, args.docs, args.model or default_model_path())}")
        return 0
    table = evaluate(args.out, args.real)
    print(table.round(3).to_string())
    print(thin_sat(args.out).round(3).to_string())
    print(f"figure: {real_l3_figure(args.out, args.real, args.docs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
