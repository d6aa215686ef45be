"""Figures (matplotlib) for the notebooks and reports: comparisons, distributions, curves, agreement."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from l3seg_lib.metrics import bland_altman
from l3seg_lib.reporting.overlays import (
    TISSUE_COLOURS,
    TISSUE_LABELS,
    crop_to_body,
    ct_gray,
    error_map_rgb,
    overlay_rgb,
)
from l3seg_lib.tissues import CLASSES


def legend_handles() -> list[Patch]:
    """Matplotlib legend patches, one per tissue, in the overlay colours."""
    return [Patch(color=np.array(c) / 255, label=TISSUE_LABELS[k]) for k, c in TISSUE_COLOURS.items()]


def comparison_figure(hu: np.ndarray, true: np.ndarray | None, pred: np.ndarray, title: str = "",
                      width: float = 12.0) -> plt.Figure:
    """CT | reference overlay | predicted overlay | error map (reference panels when given)."""
    arrays = crop_to_body(hu, pred, *( [true] if true is not None else []))
    hu_c, pred_c = arrays[0], arrays[1]
    true_c = arrays[2] if true is not None else None
    panels = [("CT", ct_gray(hu_c))]
    if true_c is not None:
        panels.append(("reference", overlay_rgb(hu_c, true_c)))
    panels.append(("prediction", overlay_rgb(hu_c, pred_c)))
    if true_c is not None:
        panels.append(("errors (magenta missed, green extra)", error_map_rgb(hu_c, pred_c, true_c)))
    aspect = hu_c.shape[0] / hu_c.shape[1]
    fig, axes = plt.subplots(1, len(panels), figsize=(width, width / len(panels) * aspect + 1.0))
    for ax, (name, img) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.legend(handles=legend_handles(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


# --------------------------------------------------------------------------------------------
# figures for the notebooks

TISSUE_NAMES = {t.key: t.short for t in CLASSES}
"""Short display name per class key (from :mod:`l3seg_lib.tissues`)."""
TISSUE_HEX = {t.key: t.hex for t in CLASSES}
"""Colour per class key, the overlays' colours as ``#rrggbb``."""


def examples_grid(items: list[tuple[np.ndarray, np.ndarray, str]], ncols: int = 4) -> plt.Figure:
    """CT above its labelled overlay for a few (HU, class mask, title) items."""
    n = len(items)
    ncols = min(ncols, n) or 1
    nrows = 2 * int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (hu, mask, title) in enumerate(items):
        r, c = 2 * (k // ncols), k % ncols
        hu_c, mask_c = crop_to_body(hu, mask)
        axes[r, c].imshow(ct_gray(hu_c), cmap="gray")
        axes[r, c].set_title(title, fontsize=8)
        axes[r + 1, c].imshow(overlay_rgb(hu_c, mask_c))
    fig.legend(handles=legend_handles(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def hu_by_tissue(samples: dict[str, np.ndarray], ranges: dict[str, tuple[float, float]] | None = None) -> plt.Figure:
    """Histograms of HU per reference tissue, with the refinement ranges shaded."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, values in samples.items():
        ax.hist(np.clip(values, -300, 300), bins=120, range=(-300, 300), histtype="step", lw=1.5,
                color=TISSUE_HEX.get(name), label=TISSUE_NAMES.get(name, name), density=True)
    for name, (lo, hi) in (ranges or {}).items():
        if name in TISSUE_HEX:
            ax.axvspan(lo, hi, color=TISSUE_HEX[name], alpha=0.07)
    ax.set_xlabel("HU")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(logs: dict[str, pd.DataFrame]) -> plt.Figure:
    """Training loss and validation Dice per epoch for each fold."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, log in logs.items():
        axes[0].plot(log["epoch"], log["train_loss"], label=name)
        if "val_dice_mean_fg" in log:
            axes[1].plot(log["epoch"], log["val_dice_mean_fg"], label=name)
    axes[0].set(xlabel="epoch", ylabel="training loss (CE + Dice)", title="Training loss")
    axes[1].set(xlabel="epoch", ylabel="mean foreground Dice", title="Validation Dice (held-out patients)")
    axes[1].set_ylim(max(0.0, axes[1].get_ylim()[0]), 1.0)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def dice_boxplot(df: pd.DataFrame, by: str | None = None, title: str = "Dice per tissue") -> plt.Figure:
    """Box plots of Dice per tissue (optionally split by a column such as the model)."""
    import seaborn as sns

    cols = [f"dice_{t}" for t in TISSUE_NAMES]
    long = df.melt(id_vars=[c for c in ([by] if by else []) if c in df.columns], value_vars=cols,
                   var_name="tissue", value_name="Dice").dropna(subset=["Dice"])
    long["tissue"] = long["tissue"].str.replace("dice_", "").map(TISSUE_NAMES)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.boxplot(data=long, x="tissue", y="Dice", hue=by, ax=ax, fliersize=2)
    sns.stripplot(data=long, x="tissue", y="Dice", hue=by, dodge=bool(by), ax=ax, size=2.5,
                  palette="dark:k" if by else None, color=None if by else "k", alpha=0.5, legend=False)
    ax.set_title(title)
    ax.set_xlabel("")
    fig.tight_layout()
    return fig


def area_agreement(df: pd.DataFrame) -> plt.Figure:
    """Per tissue: predicted vs reference area (with identity line) and a Bland-Altman plot."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for j, t in enumerate(TISSUE_NAMES):
        pred, true = df[f"area_pred_{t}_cm2"].to_numpy(float), df[f"area_true_{t}_cm2"].to_numpy(float)
        ax = axes[0, j]
        ax.scatter(true, pred, s=14, color=TISSUE_HEX[t], edgecolor="k", lw=0.3)
        lim = (0, max(np.nanmax(true), np.nanmax(pred)) * 1.05 if len(true) else 1)
        ax.plot(lim, lim, "k--", lw=0.8)
        r = np.corrcoef(true, pred)[0, 1] if len(true) > 2 else np.nan
        ax.set(xlim=lim, ylim=lim, xlabel="reference area (cm²)", ylabel="predicted area (cm²)",
               title=f"{TISSUE_NAMES[t]} (r = {r:.3f})" if np.isfinite(r)
               else f"{TISSUE_NAMES[t]} (r not computable with n = {len(true)})")
        ba = bland_altman(pred, true)
        ax = axes[1, j]
        mean, diff = (pred + true) / 2, pred - true
        ax.scatter(mean, diff, s=14, color=TISSUE_HEX[t], edgecolor="k", lw=0.3)
        ax.axhline(ba["bias"], color="k", lw=1, label=f"bias {ba['bias']:.1f}")
        for key in ("loa_low", "loa_high"):
            ax.axhline(ba[key], color="k", lw=0.8, ls="--")
        bias = f"bias {ba['bias']:.1f}" if np.isfinite(ba["bias"]) else "bias not computable"
        loa = (f"LoA {ba['loa_low']:.1f} to {ba['loa_high']:.1f} cm²" if np.isfinite([ba["loa_low"], ba["loa_high"]]).all()
               else f"LoA not computable with n = {len(true)}")
        ax.set(xlabel="mean of predicted and reference (cm²)", ylabel="predicted - reference (cm²)",
               title=f"Bland-Altman: {bias}, {loa}")
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def confusion_heatmap(cm: np.ndarray) -> plt.Figure:
    """Row-normalised confusion matrix (reference rows, predicted columns)."""
    import seaborn as sns

    names = ["background", "muscle", "SAT", "VAT"]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.8, 4))
    sns.heatmap(norm, annot=True, fmt=".3f", cmap="Blues", xticklabels=names, yticklabels=names, ax=ax, cbar=False)
    ax.set(xlabel="predicted", ylabel="reference", title="Pixel confusion (fraction of reference)")
    fig.tight_layout()
    return fig


def optimisation_trace(trials: pd.DataFrame) -> plt.Figure:
    """Objective of each trial and the best so far."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    colours = trials["kind"].map({"baseline": "#d62728", "random": "#999999", "bayes": "#1f77b4"})
    ax.scatter(trials["trial"], trials["target"], c=colours, zorder=3,
               label="trial (red baseline setting, grey random, blue GP-suggested)")
    ax.plot(trials["trial"], trials["best_so_far"], "k-", lw=1.2, label="best so far")
    ax.set(xlabel="trial", ylabel="mean foreground Dice (validation folds)", title="Optimisation trace")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def search_space(trials: pd.DataFrame, names: list[str]) -> plt.Figure:
    """Each search parameter against the objective, coloured by trial order."""
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        sc = ax.scatter(trials[name], trials["target"], c=trials["trial"], cmap="viridis", edgecolor="k", lw=0.3)
        base = trials[trials["kind"] == "baseline"]
        ax.scatter(base[name], base["target"], s=120, facecolor="none", edgecolor="#d62728", lw=1.5,
                   label="baseline setting")
        ax.set_xlabel(name)
    axes[0, 0].set_ylabel("mean foreground Dice")
    if (trials["kind"] == "baseline").any():
        axes[0, 0].legend(fontsize=7)
    fig.colorbar(sc, ax=axes[0].tolist(), label="trial", shrink=0.8)
    return fig
