"""Check pictures of a reference slice: the whole-slice overlay and four zooms (patient-right and
patient-left lateral wall, anterior wall, posterior / psoas), in radiological display.

Muscle red, SAT cyan, VAT yellow (40 %); in the zooms also the cavity (lime dashed), the envelope
(magenta dotted), hand muscle seeds (white dots), organ seeds (black dots), bridges (magenta),
wall lines (orange), polygons (fascia blue, lumen orange, organ/canal/cavity grey) and a
coordinate grid in display pixels (x = column, y = row) for editing the YAML.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .inputs import SliceInputs  # noqa: E402

COL = {1: (1.0, 0.15, 0.15), 2: (0.1, 0.8, 1.0), 3: (1.0, 0.9, 0.1)}
WINDOW = (-160.0, 240.0)


def _rgb(s: np.ndarray, lab: np.ndarray, alpha: float) -> np.ndarray:
    g = np.clip((s.astype(float) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1)
    rgb = np.stack([g] * 3, -1)
    for k, c in COL.items():
        m = lab == k
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(c)
    return rgb


def zoom_boxes(body: np.ndarray, vert: np.ndarray) -> dict[str, tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of the four zooms from the body's bounding box and the vertebra."""
    ys, xs = np.where(body)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    vx = int(np.where(vert)[1].mean()) if vert.any() else (x0 + x1) // 2
    pad = max(3, int(0.02 * w))
    sh = body.shape

    def clip(b):
        a, bb, c, d = b
        return max(0, int(a)), min(sh[0], int(bb)), max(0, int(c)), min(sh[1], int(d))

    return {
        "right_wall": clip((y0 + 0.12 * h, y1 - 0.02 * h, x0 - pad, x0 + 0.36 * w)),
        "left_wall": clip((y0 + 0.12 * h, y1 - 0.02 * h, x1 - 0.36 * w, x1 + pad)),
        "anterior": clip((y0 - pad, y0 + 0.45 * h, x0 + 0.18 * w, x1 - 0.18 * w)),
        "posterior": clip((y0 + 0.45 * h, y1 + pad, vx - 0.3 * w, vx + 0.3 * w)),
    }


def render_zoom(s, lab, masks, inp: SliceInputs, box, path: Path, title: str, target_px: int = 800) -> None:
    """One zoom: raw slice (narrow window -220..180 HU) beside the overlay with contours, hand
    inputs and a coordinate grid (display pixels)."""
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    sc = float(np.clip(target_px / max(h, w), 2, 40))
    raw = np.clip((s.astype(float) + 220) / 400, 0, 1)[y0:y1, x0:x1]
    rgb = _rgb(s, lab, 0.3)[y0:y1, x0:x1]
    fig = plt.figure(figsize=(2 * w * sc / 100 + 0.1, h * sc / 100), dpi=100)
    axr = fig.add_axes([0, 0, 0.495, 1])
    ax = fig.add_axes([0.505, 0, 0.495, 1])
    ext = (x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5)
    axr.imshow(raw, cmap="gray", vmin=0, vmax=1, extent=ext, interpolation="nearest")
    ax.imshow(rgb, extent=ext, interpolation="nearest")
    X, Y = np.arange(x0, x1), np.arange(y0, y1)

    def contour(m, color, ls="solid", lw=0.8):
        sub = m[y0:y1, x0:x1]
        if sub.any() and not sub.all():
            ax.contour(X, Y, sub.astype(float), levels=[0.5], colors=[color], linewidths=lw, linestyles=ls)

    for k, c in COL.items():
        contour(lab == k, c)
    contour(masks["cav"], "lime", "dashed", 1.0)
    contour(masks["E"], "magenta", "dotted", 0.9)
    for key, color in (("fascia_polys", "royalblue"), ("lumen_polys", "orange"), ("organ_polys", "grey"),
                       ("canal_polys", "grey"), ("cavity_polys", "grey")):
        for p in getattr(inp, key):
            q = np.array(p + [p[0]])
            ax.plot(q[:, 0], q[:, 1], "-", color=color, lw=1.0)
    for key, color in (("bridges", "magenta"), ("wall_lines", "orange"), ("cut_lines", "white")):
        for p in getattr(inp, key):
            q = np.array(p)
            ax.plot(q[:, 0], q[:, 1], "-", color=color, lw=1.2, alpha=0.8)
    ms = max(2.0, sc * 0.5)
    for key, color in (("muscle_seeds", "white"), ("organ_seeds", "black"), ("vert_seeds", "yellow")):
        pts = [p for p in getattr(inp, key) if x0 <= p[0] < x1 and y0 <= p[1] < y1]
        if pts:
            q = np.array(pts)
            ax.plot(q[:, 0], q[:, 1], "o", color=color, ms=ms, mec="grey", mew=0.5)
    step = next(st for st in (2, 5, 10, 20, 50) if max(h, w) / st <= 16)
    for a in (axr, ax):
        for xx in range(x0 - x0 % step + step, x1, step):
            a.axvline(xx, color="w", alpha=0.18, lw=0.5)
            a.text(xx, y0 + 0.02 * h, str(xx), color="w", fontsize=7)
        for yy in range(y0 - y0 % step + step, y1, step):
            a.axhline(yy, color="w", alpha=0.18, lw=0.5)
            a.text(x0 + 0.01 * w, yy, str(yy), color="w", fontsize=7)
        a.set_xlim(x0 - 0.5, x1 - 0.5)
        a.set_ylim(y1 - 0.5, y0 - 0.5)
        a.axis("off")
    ax.text(x0 + 0.01 * w, y1 - 0.02 * h, title, color="w", fontsize=9,
            bbox=dict(facecolor="black", alpha=0.5, lw=0))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_overlay(s, lab, body, path: Path, caption: str, areas: dict[str, float], target_px: int = 1200) -> None:
    """Whole body cross-section (+20 px), labelled, areas underneath."""
    ys, xs = np.where(body)
    m = max(2, int(0.04 * (xs.max() - xs.min())))
    y0, y1 = max(ys.min() - m, 0), min(ys.max() + m + 1, s.shape[0])
    x0, x1 = max(xs.min() - m, 0), min(xs.max() + m + 1, s.shape[1])
    rgb = _rgb(s, lab, 0.4)[y0:y1, x0:x1]
    h, w = rgb.shape[:2]
    sc = target_px / max(h, w)
    foot = 70
    fig = plt.figure(figsize=(w * sc / 100, (h * sc + foot) / 100), dpi=100)
    ax = fig.add_axes([0, foot / (h * sc + foot), 1, h * sc / (h * sc + foot)])
    ax.imshow(rgb, extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5), interpolation="nearest")
    ax.axis("off")
    step = 20 if max(h, w) > 150 else 10
    for xx in range(x0 - x0 % step + step, x1, step):
        ax.axvline(xx, color="w", alpha=0.12, lw=0.5)
        ax.text(xx, y0 + 0.015 * h, str(xx), color="w", fontsize=6, alpha=0.7)
    for yy in range(y0 - y0 % step + step, y1, step):
        ax.axhline(yy, color="w", alpha=0.12, lw=0.5)
        ax.text(x0 + 0.005 * w, yy, str(yy), color="w", fontsize=6, alpha=0.7)
    kw = dict(color="w", fontsize=14)
    ax.text(x0 + 0.01 * w, (y0 + y1) / 2, "R", va="center", **kw)
    ax.text(x1 - 0.04 * w, (y0 + y1) / 2, "L", va="center", **kw)
    ax.text((x0 + x1) / 2, y0 + 0.05 * h, "A", ha="center", **kw)
    ax.text((x0 + x1) / 2, y1 - 0.02 * h, "P", ha="center", **kw)
    fig.text(0.01, 0.5 * foot / (h * sc + foot) + 0.25 * foot / (h * sc + foot), caption, fontsize=8)
    fig.text(0.01, 0.15 * foot / (h * sc + foot),
             f"red muscle {areas['muscle_cm2']:.1f} cm²  (mean {areas['muscle_mean_hu']:.1f} HU)   "
             f"cyan SAT {areas['sat_cm2']:.1f} cm²   yellow VAT {areas['vat_cm2']:.1f} cm²   "
             f"IMAT (unlabelled) {areas['imat_cm2']:.1f} cm²", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_all(s, res, inp: SliceInputs, out_dir: Path, stem: str, caption: str, areas: dict[str, float]) -> list[Path]:
    """Overlay + four zooms; returns the PNG paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}_overlay.png"]
    render_overlay(s, res.labels, res.masks["body"], paths[0], caption, areas)
    for name, box in zoom_boxes(res.masks["body"], res.masks["vert"]).items():
        p = out_dir / f"{stem}_zoom_{name}.png"
        render_zoom(s, res.labels, res.masks, inp, box, p, f"{stem} {name.replace('_', ' ')}")
        paths.append(p)
    return paths
