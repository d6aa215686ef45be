"""Real-CT check of a model: the TotalSegmentator example CT (a study script, not library code).

Run from the repository root, with the example folder from ``../shared/data``::

    .venv/bin/python experiments/realct_check.py --data ../shared/data/totalsegmentator_example \
        --model runs/<run>/train/model.pt --out runs/realct [--docs docs]


The folder holds one real abdominal CT (NIfTI, 3 mm voxels), a 30-slice crop (T11-L2) with
model-made masks of skeletal muscle, subcutaneous fat and torso fat (taken as VAT), a 117-class
label map that marks the L3 vertebra (label 29), and a 20-slice DICOM series (JPEG 2000).

:func:`run_realct` measures how a model trained on the synthetic default data transfers:
Dice and area errors on the 30 labelled slices; then fine-tuning on contiguous slice blocks
(train on two blocks, test on the third, with buffer slices left out at the block edges because
neighbouring 3 mm slices look alike); then the real L3 slice (the middle of label 29) segmented
with areas in cm2; and the DICOM series loaded and checked for plausible HU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from l3seg_lib.errors import L3SegError
from l3seg_lib.metrics import slice_metrics, summary_table
from l3seg_lib.tissues import TISSUES
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.imageio.dicom import read_dicom_series
from l3seg_lib.imageio.labels import combine_binary_masks, read_label_file
from l3seg_lib.imageio.nifti import read_nifti
from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.localize.selection import TOTALSEGMENTATOR_L3, select_vertebra_slices
from l3seg_lib.measurement.composition import measure_slice
from l3seg_lib.reporting.figures import comparison_figure, legend_handles
from l3seg_lib.reporting.overlays import crop_to_body, ct_gray, overlay_rgb
from l3seg_lib.training.checkpoint import load_checkpoint
from l3seg_lib.training.device import resolve_device
from l3seg_lib.training.export import export_onnx
from l3seg_lib.training.finetune import block_folds, finetune, params_of_checkpoint

TISSUE_FILES = {"muscle": "skeletal_muscle.nii.gz", "sat": "subcutaneous_fat.nii.gz", "vat": "torso_fat.nii.gz"}


def load_tissue_crop(data_dir: str | Path) -> tuple[CTVolume, np.ndarray]:
    """The labelled 30-slice crop and its 4-class labels (z, rows, cols), canonical orientation."""
    data_dir = Path(data_dir)
    volume = read_nifti(data_dir / "example_ct_sm.nii.gz")
    paths = {k: data_dir / "tissue_types" / f for k, f in TISSUE_FILES.items()}
    masks = {k: read_label_file(p) for k, p in paths.items()}
    labels = combine_binary_masks(masks, {k: str(p) for k, p in paths.items()})
    if labels.shape != volume.hu.shape:
        raise ValueError(f"tissue masks {labels.shape} do not match the CT crop {volume.hu.shape}")
    return volume, labels


def l3_slices(data_dir: str | Path, margin: int = 0) -> tuple[CTVolume, int, list[int]]:
    """The full CT and its L3 middle slice (+- margin) from the vertebra label map."""
    data_dir = Path(data_dir)
    volume = read_nifti(data_dir / "example_ct.nii.gz")
    seg_path = data_dir / "example_seg_fast_force_split.nii.gz"
    seg = read_label_file(seg_path)
    if seg.shape != volume.hu.shape:
        raise ValueError(f"{seg_path}: label map {seg.shape} does not match the CT {volume.hu.shape}")
    middle, indices = select_vertebra_slices(seg, TOTALSEGMENTATOR_L3, margin, str(seg_path))
    return volume, middle, indices


def evaluate_slices(predictor: Predictor, volume: CTVolume, labels: np.ndarray, indices: list[int]
                    ) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Per-slice Dice, IoU and areas (cm2) of ``predictor`` on the labelled slices ``indices``,
    and its label maps by slice."""
    spacing = (volume.spacing_mm[1], volume.spacing_mm[2])
    preds = predictor.predict_many([volume.hu[i] for i in indices], [spacing] * len(indices))
    rows, out = [], {}
    for i, p in zip(indices, preds):
        rows.append({"slice_index": i, "patient_id": volume.patient_id, **slice_metrics(p.labels, labels[i], spacing)})
        out[i] = p.labels
    return pd.DataFrame(rows), out


def run_realct(data_dir: str | Path, model: str | Path, out_dir: str | Path, finetune_epochs: int = 30,
               device: str = "auto", n_blocks: int = 3, buffer: int = 1, seed: int = 0,
               docs_dir: str | Path | None = None) -> dict[str, Any]:
    """The whole real-CT check; writes CSVs, figures and ``summary.json`` under ``out_dir``."""
    data_dir, out = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: real CT example folder not found")
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    ckpt = load_checkpoint(model)
    t_start = time.perf_counter()
    volume, labels = load_tissue_crop(data_dir)
    all_idx = list(range(volume.n_slices))

    # 1. transfer as is: the ensemble, and its first member (the starting point of fine-tuning)
    ensemble = Predictor(export_onnx(ckpt["state_dicts"], params_of_checkpoint(ckpt), ckpt["image_size"],
                                     out / "ensemble.onnx", "ensemble"), device)
    before, pred_before = evaluate_slices(ensemble, volume, labels, all_idx)
    member0_path = export_onnx([ckpt["state_dicts"][0]], params_of_checkpoint(ckpt), ckpt["image_size"], out / "member0.onnx", "member 0")
    before_m0, _ = evaluate_slices(Predictor(member0_path, device), volume, labels, all_idx)

    # 2. fine-tuning on contiguous blocks: each slice scored by a model that did not train on it
    after_parts, pred_after = [], {}
    for k, (train_idx, test_idx) in enumerate(block_folds(volume.n_slices, n_blocks, buffer)):
        state = finetune(ckpt, volume, labels, train_idx, finetune_epochs, seed + k, dev)
        path = export_onnx([state], params_of_checkpoint(ckpt), ckpt["image_size"], out / f"finetuned_block{k}.onnx", f"fine-tuned block {k}")
        df, preds = evaluate_slices(Predictor(path, device), volume, labels, test_idx)
        after_parts.append(df.assign(block=k, train_slices=len(train_idx)))
        pred_after.update(preds)
    after = pd.concat(after_parts, ignore_index=True).sort_values("slice_index")
    for name, df in (("before_ensemble", before), ("before_member0", before_m0), ("after_finetune", after)):
        df.to_csv(out / f"crop_{name}.csv", index=False)
    table = pd.DataFrame({
        name: {**{f"Dice {t}": df[f"dice_{t}"].mean() for t in TISSUES}, "Dice mean": df["dice_mean_fg"].mean(),
               **{f"|area error| {t} (%)": df[f"area_err_{t}_pct"].abs().mean() for t in TISSUES}}
        for name, df in (("model as trained (ensemble)", before), ("model as trained (member 0)", before_m0),
                         ("member 0 fine-tuned on other blocks", after))
    }).T
    table.to_csv(out / "transfer_summary.csv")

    # 3. the real L3 slice, with the model as trained and fine-tuned on all 30 labelled slices
    full, l3, _ = l3_slices(data_dir)
    state_all = finetune(ckpt, volume, labels, all_idx, finetune_epochs, seed + 100, dev)
    ft_all = export_onnx([state_all], params_of_checkpoint(ckpt), ckpt["image_size"], out / "finetuned_all.onnx", "fine-tuned on all crop slices")
    spacing = (full.spacing_mm[1], full.spacing_mm[2])
    l3_rows, l3_preds = [], {}
    for name, pred in (("model as trained (ensemble)", ensemble), ("fine-tuned on the 30 real slices", Predictor(ft_all, device))):
        p = pred.predict_hu(full.hu[l3], spacing)
        l3_preds[name] = p.labels
        m = measure_slice(full.hu[l3], p.labels, spacing)
        l3_rows.append({"model": name, "slice_index": l3, **{k: m[k] for k in (
            "sma_cm2", "sma_refined_cm2", "sat_cm2", "sat_refined_cm2", "vat_cm2", "vat_refined_cm2", "imat_cm2",
            "muscle_refined_hu_mean")}, "inference_s": p.seconds})
    l3_table = pd.DataFrame(l3_rows).set_index("model")
    l3_table.to_csv(out / "l3_slice.csv")

    # 4. the DICOM series (JPEG 2000): HU plausibility and a segmentation of its middle slice
    series = read_dicom_series(data_dir / "dicom_series")
    mid = series.n_slices // 2
    s_spacing = (series.spacing_mm[1], series.spacing_mm[2])
    s_pred = ensemble.predict_hu(series.hu[mid], s_spacing)
    dicom_check = {
        "slices": series.n_slices, "pixel_spacing_mm": list(s_spacing), "slice_spacing_mm": series.spacing_mm[0],
        "transfer_syntax": "JPEG 2000 lossless",
        "air_hu_p1": float(np.percentile(series.hu, 1)),
        **{f"{t}_median_hu": float(np.median(series.hu[mid][s_pred.labels == c])) if (s_pred.labels == c).any() else None
           for c, t in enumerate(TISSUES, start=1)},
    }

    # figures
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    picks = [all_idx[len(all_idx) // 6], all_idx[len(all_idx) // 2], all_idx[5 * len(all_idx) // 6]]
    for i in picks:
        fig = _before_after_figure(volume.hu[i], labels[i], pred_before[i], pred_after[i],
                                   f"real CT crop, slice {i}: Dice before {before.set_index('slice_index').loc[i, 'dice_mean_fg']:.2f}, "
                                   f"after {after.set_index('slice_index').loc[i, 'dice_mean_fg']:.2f}")
        fig.savefig(figs / f"crop_slice{i:02d}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    fig = _l3_figure(full.hu[l3], l3_preds, l3_table, l3)
    fig.savefig(figs / "l3_overlay.png", dpi=110, bbox_inches="tight")
    if docs_dir is not None:
        Path(docs_dir).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(docs_dir) / "realct_l3_overlay.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    fig = comparison_figure(series.hu[mid], None, s_pred.labels, title="real DICOM series (JPEG 2000), middle slice (T11/T12, not L3)")
    fig.savefig(figs / "dicom_series_mid.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    summary = {
        "model": str(model), "data": str(data_dir), "finetune_epochs": finetune_epochs, "blocks": n_blocks,
        "buffer_slices": buffer, "crop_slices": volume.n_slices, "l3_slice": l3,
        "transfer": table.round(4).to_dict(orient="index"), "l3": l3_table.round(2).to_dict(orient="index"),
        "dicom_series": dicom_check, "minutes": (time.perf_counter() - t_start) / 60,
        "caveats": "one patient; reference masks are TotalSegmentator model output, not a human reader; 3 mm voxels; "
                   "the labelled crop is T11-L2, not L3; torso fat is taken as VAT",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    summary_table(before).to_csv(out / "crop_before_table.csv")
    return summary


def _before_after_figure(hu, true, before, after, title):
    hu_c, true_c, before_c, after_c = crop_to_body(hu, true, before, after, margin=3)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for ax, (name, img) in zip(axes, (("CT (3 mm pixels)", ct_gray(hu_c)), ("reference (TotalSegmentator)", overlay_rgb(hu_c, true_c)),
                                      ("model as trained", overlay_rgb(hu_c, before_c)), ("after fine-tuning", overlay_rgb(hu_c, after_c)))):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.legend(handles=legend_handles(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def _l3_figure(hu, preds, table, l3):
    crops = crop_to_body(hu, *preds.values(), margin=3)
    fig, axes = plt.subplots(1, 1 + len(preds), figsize=(4.2 * (1 + len(preds)), 4.2))
    axes[0].imshow(ct_gray(crops[0]), cmap="gray", interpolation="nearest")
    axes[0].set_title(f"real CT, L3 middle slice (z = {l3})", fontsize=9)
    for ax, (name, _), lab in zip(axes[1:], preds.items(), crops[1:]):
        r = table.loc[name]
        ax.imshow(overlay_rgb(crops[0], lab), interpolation="nearest")
        ax.set_title(f"{name}\nSMA {r['sma_refined_cm2']:.0f}, SAT {r['sat_refined_cm2']:.0f}, VAT {r['vat_refined_cm2']:.0f} cm²",
                     fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.legend(handles=legend_handles(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the totalsegmentator_example folder (in ../shared/data)")
    ap.add_argument("--model", required=True, help="model trained on the default data (runs/<run>/train/model.pt)")
    ap.add_argument("--out", default="runs/realct")
    ap.add_argument("--finetune-epochs", type=int, default=30)
    ap.add_argument("--docs", help="also write the L3 overlay picture into this folder (e.g. docs)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        summary = run_realct(args.data, args.model, args.out, finetune_epochs=args.finetune_epochs,
                             device=args.device, docs_dir=args.docs)
    except (L3SegError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(pd.DataFrame(summary["transfer"]).T.round(3).to_string())
    print(pd.DataFrame(summary["l3"]).T.round(1).to_string())
    print(f"figures and tables in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
