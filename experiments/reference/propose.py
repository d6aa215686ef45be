"""Draft wall seeds for a new slice: muscle-range runs along rays from the body centre.

    .venv/bin/python -m experiments.reference.propose --data ../shared/data inputs/acrin/z041.yaml

Every ``--step`` degrees a ray from the body centre is walked inward from the skin; after the
subcutaneous fat, every run of smoothed HU in the muscle range (at least ``--min-run`` mm long)
that starts within ``--depth`` mm of the first muscle gets a seed at its middle, so that the
external oblique, internal oblique and transversus are all seeded.  The walk stops at bone or at
a fat run longer than ``--stop-fat`` mm (the cavity).  The proposals are only a draft: every seed
must be checked on the zooms (bowel touching the transversus, linea alba, vessels) and edited.
The file is rewritten with the seeds added (existing keys and leading comments kept).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage as ndi

from .inputs import POINT_KEYS, load_inputs
from .segment import body_mask
from .sources import read_slice

ORDER = ["patient", "level", "source", "options", "notes", "how_sure", "vert_seeds", "muscle_seeds", "organ_seeds",
         "bridges", "wall_lines", "cut_lines", "fascia_polys", "organ_polys", "cavity_polys", "canal_polys",
         "lumen_polys"]


def propose_wall_seeds(s: np.ndarray, px_mm: float, step_deg: float = 4.0, depth_mm: float = 18.0,
                       min_run_mm: float = 1.5, stop_fat_mm: float = 5.0,
                       min_sat_mm: float = 4.0) -> list[tuple[int, int]]:
    """Seeds (x, y) on muscle-range runs just inside the subcutaneous fat along rays."""
    body = body_mask(s)
    sm = ndi.gaussian_filter(s.astype(float), 0.7 / px_mm)
    cy, cx = ndi.center_of_mass(body)
    seeds: list[tuple[int, int]] = []
    h, w = s.shape
    dt = 0.5
    for ang in np.arange(0, 360, step_deg):
        dx, dy = np.cos(np.radians(ang)), np.sin(np.radians(ang))
        t = np.arange(0, max(h, w), dt)
        xs, ys = cx + t * dx, cy + t * dy
        ok = (xs >= 0) & (xs < w - 1) & (ys >= 0) & (ys < h - 1)
        xs, ys, t = xs[ok], ys[ok], t[ok]
        xi, yi = np.round(xs).astype(int), np.round(ys).astype(int)
        inb = body[yi, xi]
        if not inb.any():
            continue
        last = np.where(inb)[0].max()
        vals = sm[yi[: last + 1], xi[: last + 1]][::-1]  # from the skin inward
        pts = list(zip(xi[: last + 1][::-1], yi[: last + 1][::-1]))
        skin = max(1, int(round(1.5 / px_mm / dt)))
        fat = (vals >= -190) & (vals <= -30)
        mus = (vals >= -29) & (vals <= 150)
        i = skin
        while i < len(vals) and not fat[i]:
            i += 1
        f0 = i
        while i < len(vals) and not mus[i]:
            if vals[i] > 200:
                break
            i += 1
        if i >= len(vals) or not mus[i] or (i - f0) * dt * px_mm < min_sat_mm:
            continue
        start = i
        end_depth = start + depth_mm / px_mm / dt
        fat_run = 0
        while i < len(vals) and i < end_depth:
            if vals[i] > 200:
                break
            if mus[i]:
                j = i
                while j < len(vals) and mus[j]:
                    j += 1
                if (j - i) * dt * px_mm >= min_run_mm:
                    x, y = pts[(i + j) // 2]
                    seeds.append((int(x), int(y)))
                i, fat_run = j, 0
                continue
            fat_run = fat_run + 1 if fat[i] else 0
            if fat_run * dt * px_mm > stop_fat_mm:
                break
            i += 1
    out: list[tuple[int, int]] = []
    for p in seeds:
        if all(abs(p[0] - q[0]) + abs(p[1] - q[1]) > 2 for q in out):
            out.append(p)
    return out


def _flow(v) -> str:
    if isinstance(v, (list, tuple)) and v and isinstance(v[0], (list, tuple)):
        return "[" + ", ".join(_flow(x) for x in v) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def dump(path: Path, d: dict, comments: list[str]) -> None:
    """Write a hand-input mapping in the house style (one key per line, lists in flow style)."""
    lines = list(comments)
    for k in ORDER + [k for k in d if k not in ORDER]:
        if k not in d or d[k] in (None, [], {}):
            continue
        v = d[k]
        if k in POINT_KEYS or not isinstance(v, list):
            lines.append(f"{k}: {_flow(v)}")
        else:
            lines.append(f"{k}:")
            lines.extend(f"  - {_flow(item)}" for item in v)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("yaml", type=Path)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--step", type=float, default=4.0)
    ap.add_argument("--depth", type=float, default=18.0)
    ap.add_argument("--min-run", type=float, default=1.5)
    ap.add_argument("--stop-fat", type=float, default=5.0)
    ap.add_argument("--min-sat", type=float, default=4.0, help="mm of subcutaneous fat before the wall")
    args = ap.parse_args(argv)
    inp = load_inputs(args.yaml)
    sl = read_slice(args.data, inp)
    new = propose_wall_seeds(sl.hu, sl.px_mm, args.step, args.depth, args.min_run, args.stop_fat, args.min_sat)
    text = args.yaml.read_text()
    comments = [ln for ln in text.splitlines() if ln.startswith("#")]
    d = yaml.safe_load(text) or {}
    old = [tuple(p) for p in d.get("muscle_seeds") or []]
    d["muscle_seeds"] = [list(p) for p in old] + [list(p) for p in new if p not in old]
    dump(args.yaml, d, comments)
    print(f"{args.yaml}: {len(new)} proposed wall seeds added ({len(old)} kept)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
