"""The spine in a CT volume, as hospitals export it: the trunk without table and arms, the spinal
canal traced along the body axis, the vertebral-body centre in front of it, and the HU profile
along z whose minima are the intervertebral discs.

Why the canal: on real CT the brightest structure near the spine is often not bone (a
contrast-filled aorta in the arterial phase reaches 400 HU, more than an older patient's vertebral
body), and the table, arms and off-centre placement move the body's centre. The spinal canal is
unique: soft tissue (cord, CSF, epidural fat) enclosed by bone in front (vertebral body), at the
sides (pedicles) and behind (laminae), at every level from the thorax to the sacrum. It is found
from bone seen in a slab of neighbouring slices, so discs and the gaps between arches do not
break it.

All lengths in mm, values in HU; arrays are canonical (z inferior -> superior, rows anterior ->
posterior, columns patient right -> left) at about :data:`WORK_PIXEL_MM` in-plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from l3seg_lib.imageio.ct import CTVolume

WORK_PIXEL_MM = 2.0
"""In-plane pixel size the localiser works at (mm); finer images are averaged down, never up."""
TRUNK_HU = -500.0
"""Tissue vs air threshold for the body outline (HU)."""


@dataclass
class Spine:
    """The working volume and what was traced in it (see the module docstring)."""

    v: np.ndarray
    """(z, rows, cols) float32 HU at about WORK_PIXEL_MM in-plane."""
    row_scale: float
    """Working rows per original row (<= 1)."""
    col_scale: float
    dz: float
    """Slice spacing (mm)."""
    pr: float
    """mm per working row."""
    pc: float
    """mm per working column."""
    trunk: np.ndarray
    """(z, rows, cols) bool: the largest body part per slice, holes filled (no table, no separate
    arms); computed every ~4 mm along z, each slice taking the nearest."""
    body: np.ndarray
    """(z, 2) vertebral-body centre (working row, col), interpolated and smoothed over the traced span."""
    span: tuple[int, int]
    """First and last slice where the canal was traced."""
    profile: np.ndarray
    """(z,) 90th percentile of HU in a box at the vertebral-body centre: low at the discs."""

    def zmm(self, mm: float) -> int:
        """Slices for a length along z (at least 1)."""
        return max(1, int(round(mm / self.dz)))

    def lateral_mm(self, z: int, cols: np.ndarray | float) -> np.ndarray:
        """Signed left-right distance (mm) of working columns from the canal at slice ``z``."""
        return (np.asarray(cols, dtype=float) - self.body[z, 1]) * self.pc


def resample_inplane(volume: CTVolume) -> tuple[np.ndarray, float, float]:
    """(z, rows, cols) float32 at about WORK_PIXEL_MM (area-averaged), and the row and column scales."""
    _, rmm, cmm = volume.spacing_mm
    fr, fc = min(1.0, rmm / WORK_PIXEL_MM), min(1.0, cmm / WORK_PIXEL_MM)
    rows = max(8, int(round(volume.hu.shape[1] * fr)))
    cols = max(8, int(round(volume.hu.shape[2] * fc)))
    if (rows, cols) == volume.hu.shape[1:]:
        return volume.hu.astype(np.float32, copy=False), 1.0, 1.0
    out = np.empty((volume.n_slices, rows, cols), np.float32)
    for i in range(volume.n_slices):
        out[i] = cv2.resize(volume.hu[i].astype(np.float32, copy=False), (cols, rows), interpolation=cv2.INTER_AREA)
    return out, rows / volume.hu.shape[1], cols / volume.hu.shape[2]


def trunk_masks(v: np.ndarray, pr: float, pc: float) -> np.ndarray:
    """The trunk per slice: tissue above TRUNK_HU, opened by a 10 mm disc (cuts the table's thin
    shell, cables and thin contacts), the largest part kept (arms lying apart from the trunk,
    the table and the couch pad go) and its outline filled (lungs and bowel gas inside)."""
    nz = v.shape[0]
    out = np.zeros(v.shape, bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * max(1, round(5.0 / pc)) + 1, 2 * max(1, round(5.0 / pr)) + 1))
    for i in range(nz):
        m = cv2.morphologyEx((v[i] > TRUNK_HU).astype(np.uint8), cv2.MORPH_OPEN, k)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=4)
        if n < 2:
            continue
        big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        part = (lab == big).astype(np.uint8)
        contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        filled = np.zeros_like(part)
        cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
        out[i] = filled.astype(bool)
    return out


def _window_any(b: np.ndarray, axis: int, k1: int, k2: int) -> np.ndarray:
    """Whether ``b`` is True anywhere k1..k2 pixels along ``axis`` from each pixel (k < 0: backwards)."""
    lo, hi = min(k1, k2), max(k1, k2)
    size = hi - lo + 1
    m = ndimage.maximum_filter1d(b.view(np.uint8), size=size, axis=axis, mode="constant")
    shift = lo + size // 2  # result[i] = m[i + shift]
    out = np.zeros_like(m)
    n = b.shape[axis]
    src = [slice(None)] * b.ndim
    dst = [slice(None)] * b.ndim
    if shift >= 0:
        src[axis], dst[axis] = slice(shift, n), slice(0, n - shift)
    else:
        src[axis], dst[axis] = slice(0, n + shift), slice(-shift, n)
    out[tuple(dst)] = m[tuple(src)]
    return out.view(bool)


def canal_map(bone_slab: np.ndarray, v_slab: np.ndarray, trunk: np.ndarray, pr: float, pc: float) -> np.ndarray:
    """Pixels that look like the inside of the spinal canal: not bone, not air, inside the trunk,
    with bone within 3-22 mm in front, behind and to both sides (bone seen in a slab of slices)."""
    b = bone_slab
    r1, r2 = max(1, round(3.0 / pr)), max(2, round(22.0 / pr))
    c1, c2 = max(1, round(3.0 / pc)), max(2, round(22.0 / pc))
    enclosed = (_window_any(b, 1, r1, r2) & _window_any(b, 1, -r2, -r1)
                & _window_any(b, 2, c1, c2) & _window_any(b, 2, -c2, -c1))
    return enclosed & ~b & (v_slab > -150.0) & (v_slab < 150.0) & trunk


def trace_spine(volume: CTVolume, bone_hu: float) -> Spine | None:
    """Trace the spinal canal and the vertebral bodies (None when no column can be traced)."""
    v, fr, fc = resample_inplane(volume)
    nz, nr, nc = v.shape
    dz = float(volume.spacing_mm[0])
    pr, pc = volume.spacing_mm[1] / fr, volume.spacing_mm[2] / fc
    zmm = lambda mm: max(1, int(round(mm / dz)))  # noqa: E731
    # the trunk every ~4 mm along z (it changes slowly), each slice taking the nearest
    step = max(1, int(round(4.0 / dz)))
    zs = np.arange(0, nz, step)
    nearest = np.minimum(np.round(np.arange(nz) / step).astype(int), len(zs) - 1)
    trunk_s = trunk_masks(v[zs], pr, pc)
    trunk = trunk_s[nearest]
    counts = trunk_s.sum(axis=1)  # (zs, cols)
    cols = np.arange(nc)
    tot = counts.sum(axis=1)
    trunk_col = np.where(tot > 0, (counts * cols).sum(axis=1) / np.maximum(tot, 1), np.nan)  # at zs

    # bone and HU in a slab of +-12 mm (the canal stays enclosed across discs and arch gaps),
    # sampled every ~4 mm along z: the canal moves little over that
    half = zmm(12.0) if nz > 1 else 0
    bone_slab = (_slab_mean((v > bone_hu), step, half) > 0.3)
    v_slab = _slab_mean(v, step, half)
    canal = canal_map(bone_slab, v_slab, trunk_s, pr, pc)
    # score: canal pixels smoothed in-plane (a canal is 10-20 mm across) and along z, weighted
    # softly towards the trunk's left-right centre (sd 60 mm; scoliosis and rotation stay in)
    zsize = 2 * max(1, int(round(15.0 / (dz * step)))) + 1 if len(zs) > 1 else 1
    score = ndimage.uniform_filter(canal.astype(np.float32), size=(zsize, max(1, round(8.0 / pr)),
                                                                    max(1, round(8.0 / pc))), mode="constant")
    lat = (cols[None, :] - np.nan_to_num(trunk_col, nan=nc / 2)[:, None]) * pc
    score *= np.exp(-0.5 * (lat / 60.0) ** 2)[:, None, :]
    flat = score.reshape(len(zs), -1)
    best = flat.argmax(axis=1)
    found = flat[np.arange(len(zs)), best] > 0.15
    rc = np.full((len(zs), 2), np.nan)
    rc[found, 0], rc[found, 1] = np.divmod(best[found], nc)
    rc = _track(rc, dz * step, pr, pc)
    ok_s = np.isfinite(rc[:, 0])
    if ok_s.sum() * step < zmm(60.0):
        return None
    z_idx = np.arange(nz)
    span = (int(zs[ok_s][0]), int(min(nz - 1, zs[ok_s][-1] + step - 1)))

    # vertebral-body centre: the bone run in front of the canal (at most 45 mm deep)
    body_s = np.full((len(zs), 2), np.nan)
    half_c = max(1, round(6.0 / pc))
    for j in np.flatnonzero(ok_s):
        r0, c0 = int(round(rc[j, 0])), int(round(rc[j, 1]))
        strip = bone_slab[j, :r0, max(0, c0 - half_c): c0 + half_c + 1].mean(axis=1)[::-1]  # going anterior
        runs = [(a, b) for a, b in runs_of(strip > 0.5) if a * pr <= 14.0 and (b - a) * pr >= 8.0]
        if runs:
            a, b = runs[0]
            depth = min(b - a, int(round(45.0 / pr)))
            body_s[j] = (r0 - (a + depth / 2.0), rc[j, 1])
        elif strip.size and strip[: max(1, round(8.0 / pr))].max() > 0.5:
            # a hollow (osteoporotic) body: its posterior wall is there, its inside is not bone
            body_s[j] = (r0 - 24.0 / pr, rc[j, 1])
    have = np.isfinite(body_s[:, 0])
    if have.sum() * step < zmm(60.0):
        return None
    body = np.full((nz, 2), np.nan)
    for k in range(2):
        body[:, k] = np.interp(z_idx, zs[have], body_s[have, k])
        body[:, k] = ndimage.median_filter(body[:, k], size=2 * zmm(10.0) + 1, mode="nearest")

    # profile: 90th percentile of HU in a box at the body centre (24 mm wide, 16 mm deep)
    hx, hy = max(1, round(12.0 / pc)), max(1, round(8.0 / pr))
    profile = np.full(nz, -1000.0, np.float32)
    for i in range(nz):
        r0, c0 = int(round(body[i, 0])), int(round(body[i, 1]))
        box = v[i, max(0, r0 - hy): r0 + hy + 1, max(0, c0 - hx): c0 + hx + 1]
        if box.size:
            profile[i] = np.percentile(box, 90)
    if dz < 2.5:
        profile = ndimage.gaussian_filter1d(profile, 1.5 / dz)
    return Spine(v=v, row_scale=fr, col_scale=fc, dz=dz, pr=pr, pc=pc, trunk=trunk, body=body, span=span,
                 profile=profile)


def _slab_mean(a: np.ndarray, step: int, half: int) -> np.ndarray:
    """Mean of ``a`` (z, rows, cols) over a slab of about 2 * half + 1 slices centred on every
    ``step``-th slice (0, step, 2 step, ...), from sums over blocks of ``step`` slices (one pass)."""
    nz = a.shape[0]
    nb = -(-nz // step)
    blocks = a[0::step].astype(np.float32)  # strided adds: much faster than ufunc.reduceat here
    for k in range(1, step):
        part = a[k::step]
        blocks[: part.shape[0]] += part
    counts = np.diff(np.append(np.arange(0, nz, step), nz)).astype(np.float32)
    k = int(round(half / step))
    cs = np.concatenate([np.zeros((1, *a.shape[1:]), np.float32), np.cumsum(blocks, axis=0, dtype=np.float32)])
    cc = np.concatenate([[0.0], np.cumsum(counts)])
    lo = np.clip(np.arange(nb) - k, 0, nb)
    hi = np.clip(np.arange(nb) + k + 1, 0, nb)
    return (cs[hi] - cs[lo]) / (cc[hi] - cc[lo]).astype(np.float32)[:, None, None]


def _track(rc: np.ndarray, dz: float, pr: float, pc: float) -> np.ndarray:
    """Keep the longest run of canal positions that moves smoothly along z (at most 6 mm per
    slice and 15 mm per 10 mm of z) and drop the rest as outliers."""
    nz = len(rc)
    ok = np.isfinite(rc[:, 0])
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return rc
    # link consecutive found slices whose step is plausible; keep the biggest linked group
    groups, cur = [], [idx[0]]
    for a, b in zip(idx[:-1], idx[1:]):
        gap_mm = (b - a) * dz
        step = np.hypot((rc[b, 0] - rc[a, 0]) * pr, (rc[b, 1] - rc[a, 1]) * pc)
        if gap_mm <= 20.0 and step <= 6.0 + 1.5 * gap_mm:
            cur.append(b)
        else:
            groups.append(cur)
            cur = [b]
    groups.append(cur)
    keep = max(groups, key=len)
    out = np.full_like(rc, np.nan)
    out[keep] = rc[keep]
    return out


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """Start and end (exclusive) of each run of True in a 1-D mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))
