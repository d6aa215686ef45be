"""Finding L3 in a CT volume by counting vertebrae from the sacrum, with a rib check at T12.

Method (bone-based, offline, CPU, no learned weights):

1. Resample each slice to about 2 mm pixels; find the body's left-right centre per slice.
2. Trace the vertebral-body column in a midline sagittal band: the most anterior run of bone
   (> ``bone_hu``) at least 14 mm deep in the posterior half of the body, smoothed along z.
3. The mean HU in a small box at the body centre along z is high in vertebral bodies and drops
   at the intervertebral discs: its minima are the discs.
   The discs are the chain of minima spaced like vertebrae (22-48 mm) that is deepest overall;
   minima inside the bodies (softer cancellous bone) form a weaker chain in between and lose.
4. The sacrum: the field of view goes on for more than a vertebra's pitch below the lowest disc,
   with no disc where the next would be (the sacral vertebrae are fused), and the ilium flanks it. That
   disc is L5/S1; the vertebrae above it are L5, L4, L3, ...
5. Checks: the vertebra counted as T12 must bear ribs and L1 must not (else transitional anatomy
   is suspected: six lumbar-type vertebrae, eleven or thirteen rib pairs); the lumbar vertebrae
   must have similar heights (else a disc was missed); L3 must lie wholly in the field of view.

When a check fails or an anchor is missing, no slice is chosen: :class:`L3Location` says
``cannot tell`` and why, and the case goes to review. Never a silent guess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from l3seg_lib.config import LocalizeConfig
from l3seg_lib.imageio.ct import CTVolume

FOUND, CANNOT_TELL = "found", "cannot tell"
WORK_PIXEL_MM = 2.0
"""In-plane pixel size the localiser works at."""


@dataclass
class Vertebra:
    name: str
    z_lo: int
    """Lowest slice of the vertebral body (canonical index, inferior -> superior)."""
    z_hi: int
    ribs: bool | None = None
    """Whether ribs arise at this level (checked for T12 and L1 only)."""

    @property
    def middle(self) -> int:
        return (self.z_lo + self.z_hi) // 2


@dataclass
class L3Location:
    """Where L3 is, or why that cannot be told."""

    status: str
    """``found`` or ``cannot tell``."""
    reason: str
    """What was found, or why it cannot be told."""
    slice_index: int | None = None
    """The slice to measure (canonical index)."""
    slices: list[int] = field(default_factory=list)
    """All slices to measure (one, or several to average)."""
    l3_range: tuple[int, int] | None = None
    """First and last slice of the L3 vertebral body."""
    confidence: str = "none"
    """``high`` (sacrum and rib check agree), ``medium`` (T12 out of the field of view: ribs not
    checked) or ``none``."""
    vertebrae: list[Vertebra] = field(default_factory=list)
    discs: list[int] = field(default_factory=list)
    """Disc slice indices, inferior to superior."""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    method: str = "vertebra count from the sacrum (bone)"
    # for the review picture
    centre_col: int | None = None
    centre_row: np.ndarray | None = None

    @property
    def found(self) -> bool:
        return self.status == FOUND

    def summary(self) -> str:
        if not self.found:
            return f"L3 cannot be told: {self.reason}"
        return (f"L3 body in slices {self.l3_range[0]}-{self.l3_range[1]}, measured at slice {self.slice_index} "
                f"(confidence {self.confidence}; {self.reason})")


def _resample(volume: CTVolume) -> tuple[np.ndarray, float, float]:
    """(z, rows, cols) float32 at about WORK_PIXEL_MM, and the row and column scale factors."""
    _, rmm, cmm = volume.spacing_mm
    fr, fc = min(1.0, rmm / WORK_PIXEL_MM), min(1.0, cmm / WORK_PIXEL_MM)  # never upsample
    rows = max(8, int(round(volume.hu.shape[1] * fr)))
    cols = max(8, int(round(volume.hu.shape[2] * fc)))
    if (rows, cols) == volume.hu.shape[1:]:
        return volume.hu.astype(np.float32, copy=False), 1.0, 1.0
    out = np.empty((volume.n_slices, rows, cols), np.float32)
    for i in range(volume.n_slices):
        out[i] = cv2.resize(volume.hu[i].astype(np.float32, copy=False), (cols, rows), interpolation=cv2.INTER_AREA)
    return out, rows / volume.hu.shape[1], cols / volume.hu.shape[2]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Start and end (exclusive) of each run of True in a 1-D mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def locate_l3(volume: CTVolume, cfg: LocalizeConfig | None = None) -> L3Location:
    """Find the L3 vertebral body and the slice to measure in a CT volume (see the module docstring)."""
    cfg = cfg or LocalizeConfig()
    t0 = time.perf_counter()
    loc = _locate(volume, cfg)
    loc.seconds = time.perf_counter() - t0
    return loc


def _locate(volume: CTVolume, cfg: LocalizeConfig) -> L3Location:
    dz = float(volume.spacing_mm[0])
    if volume.n_slices * dz < 60.0:
        return L3Location(CANNOT_TELL, f"the volume covers only {volume.n_slices * dz:.0f} mm along the body axis; "
                                       "counting vertebrae needs the lumbar spine down to the sacrum")
    v, fr, fc = _resample(volume)
    nz, nr, nc = v.shape
    pr, pc = volume.spacing_mm[1] / fr, volume.spacing_mm[2] / fc  # mm per working pixel
    zmm = lambda mm: max(1, int(round(mm / dz)))  # noqa: E731 - slices for a length in mm

    # 1. body centre (left-right) per slice
    body = v > -400.0
    cols = np.arange(nc)
    counts = body.sum(axis=1)  # (z, cols)
    xc = np.where(counts.sum(1) > 0, (counts * cols).sum(1) / np.maximum(counts.sum(1), 1), nc / 2)
    xc = ndimage.median_filter(xc, size=zmm(31), mode="nearest")
    rows_of_body = body.any(axis=2)
    # 2. sagittal band around the midline: bone fraction and mean HU (z, rows)
    half = max(1, int(round(8.0 / pc)))
    bone = v > cfg.bone_hu
    bone_dense = v > 200.0  # cortical bone, for the ilium
    band_b = np.empty((nz, nr), np.float32)
    band_hu = np.empty((nz, nr), np.float32)
    for i in range(nz):
        c0 = int(round(xc[i]))
        sl = slice(max(0, c0 - half), min(nc, c0 + half + 1))
        band_b[i] = bone[i, :, sl].mean(axis=1)
        band_hu[i] = np.clip(v[i, :, sl], -200, 1000).mean(axis=1)
    smooth_b = ndimage.gaussian_filter(band_b, sigma=(6.0 / dz, 1.5 / pr))
    yc = np.full(nz, np.nan)
    min_run = 14.0 / pr
    for i in range(nz):
        r_body = np.flatnonzero(rows_of_body[i])
        if r_body.size < 10:
            continue
        mid = (r_body[0] + r_body[-1]) / 2
        runs = [(a, b) for a, b in _runs(smooth_b[i] > 0.35) if b - a >= min_run and a >= mid - 5.0 / pr]
        if runs:
            a, b = runs[0]
            yc[i] = a + min(b - a, 32.0 / pr) / 2
    ok = np.isfinite(yc)
    if ok.sum() < zmm(60):
        return L3Location(CANNOT_TELL, "no vertebral column found (too little bone along the midline)")
    z_idx = np.arange(nz)
    span = (z_idx[ok][0], z_idx[ok][-1])
    yc_f = ndimage.median_filter(np.interp(z_idx, z_idx[ok], yc[ok]), size=zmm(25), mode="nearest")
    # 3. profile along z of the vertebral body's cross-section (90th percentile of HU in a box at
    # the body centre): high in bodies (cortical rim and endplates), low at the discs
    hx = max(1, int(round(12.0 / pc)))
    a0, a1 = int(round(14.0 / pr)), int(round(6.0 / pr))
    profile = np.empty(nz, np.float32)
    for i in range(nz):
        r0, c0 = int(round(yc_f[i])), int(round(xc[i]))
        box = v[i, max(0, r0 - a0): r0 + a1 + 1, max(0, c0 - hx): c0 + hx + 1]
        profile[i] = np.percentile(box, 90) if box.size else -1000.0
    if dz < 2.5:
        profile = ndimage.gaussian_filter1d(profile, 1.5 / dz)
    discs = _disc_chain(profile, span, dz)
    loc = L3Location(CANNOT_TELL, "", discs=discs, centre_col=int(round(np.median(xc) / fc)), centre_row=yc_f / fr)
    if len(discs) < 3:
        loc.reason = f"only {len(discs)} intervertebral disc(s) found; the lumbar spine is not covered"
        return loc

    # 4. the sacrum: below the lowest disc the column goes on, with no disc where the next one
    # would be (the sacral vertebrae are fused), and the ilium flanks it (sacroiliac joints)
    pitch = float(np.median(np.diff(discs))) * dz
    below = discs[0] * dz
    if below < 1.2 * pitch:
        loc.reason = (f"the field of view ends {below:.0f} mm below the lowest disc found (slice {discs[0]}), "
                      f"less than a vertebra ({pitch:.0f} mm) further: the sacrum is not covered, so the vertebrae "
                      "cannot be counted from it")
        return loc
    lo_s, hi_s = max(0, discs[0] - zmm(30)), max(0, discs[0] - zmm(5))
    flanked = [_ilium_both_sides(bone_dense[i], xc[i], yc_f[i], pr, pc) for i in range(lo_s, hi_s + 1)]
    if np.mean(flanked) < 0.5:
        loc.reason = (f"no pelvis beside the column below the lowest disc (slice {discs[0]}): it cannot be "
                      "confirmed as the sacrum")
        return loc
    # name the vertebrae above L5/S1
    names = ["L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8"]
    trim = zmm(cfg.disc_margin_mm)
    above = discs
    verts = []
    for k in range(len(above) - 1):
        lo, hi = above[k] + trim, above[k + 1] - trim
        verts.append(Vertebra(names[k] if k < len(names) else f"T{8 - (k - len(names))}", lo, max(lo, hi)))
    loc.vertebrae = verts
    by_name = {vt.name: vt for vt in verts}
    if "L3" not in by_name:
        loc.reason = ("L3 is not wholly in the field of view (its upper disc is missing)" if len(verts) >= 2
                      else "L3 is not in the field of view")
        return loc

    # 5. checks: heights, ribs at T12 and not at L1
    heights = [(vt.z_hi - vt.z_lo + 2 * trim) * dz for vt in verts if vt.name.startswith("L")]
    if len(heights) >= 3 and max(heights) > 1.7 * min(heights):
        loc.reason = (f"count ambiguous: lumbar vertebra heights {', '.join(f'{h:.0f}' for h in heights)} mm are "
                      "irregular (a disc may have been missed)")
        return loc

    rib_levels = _rib_medial_ends(bone, xc, yc_f, pr, pc, low_z=above[0] + zmm(30))
    confidence = "high"

    def bears_ribs(vt: Vertebra) -> bool:
        return any(vt.z_lo - trim <= z <= vt.z_hi + trim for z in rib_levels)

    for name in ("L1", "T12"):
        if name in by_name:
            by_name[name].ribs = bears_ribs(by_name[name])
    if "T12" in by_name and by_name["T12"].z_hi + trim < span[1]:
        if not by_name["T12"].ribs:
            loc.reason = ("transitional anatomy suspected: the sixth vertebra above the sacrum bears no ribs "
                          "(six lumbar-type vertebrae, or eleven rib pairs)")
            return loc
        if by_name["L1"].ribs:
            loc.reason = ("transitional anatomy suspected: the fifth vertebra above the sacrum bears ribs "
                          "(four lumbar-type vertebrae, or thirteen rib pairs)")
            return loc
    else:
        confidence = "medium"
        loc.notes.append("T12 is not wholly in the field of view: its ribs were not checked, so transitional "
                         "anatomy is not excluded")
    l3 = by_name["L3"]
    loc.status, loc.confidence, loc.l3_range = FOUND, confidence, (l3.z_lo, l3.z_hi)
    loc.slice_index = _measure_slice(l3, cfg, v, bone, xc, yc_f, pc, pr)
    n = cfg.average_slices
    loc.slices = [i for i in range(loc.slice_index - n, loc.slice_index + n + 1) if l3.z_lo <= i <= l3.z_hi]
    loc.reason = (f"{len(verts)} vertebrae counted up from the lumbosacral disc (slice {above[0]})"
                  + ("; ribs at T12, none at L1" if confidence == "high" else ""))
    return loc


def _ilium_both_sides(dense: np.ndarray, xc: float, yc: float, pr: float, pc: float) -> bool:
    """Cortical bone 40-160 mm to both sides of the midline, level with the spine (the ilium)."""
    nr, nc = dense.shape
    rows = slice(max(0, int(yc - 40.0 / pr)), int(yc + 60.0 / pr) + 1)
    cols = (np.arange(nc) - xc) * pc
    hits = dense[rows].any(axis=0)
    return bool(hits[(cols <= -40.0) & (cols >= -160.0)].any() and hits[(cols >= 40.0) & (cols <= 160.0)].any())


def _disc_chain(profile: np.ndarray, span: tuple[int, int], dz: float) -> list[int]:
    """Intervertebral discs: the chain of profile minima spaced like vertebrae (22-48 mm apart)
    that is deepest overall, extended up and down at the chain's own pitch. Minima in the middle
    of vertebral bodies (softer cancellous bone) form a weaker chain in between and lose."""
    # imported here: ~50 MB that a batch of single slices never needs
    from scipy import signal

    lo, hi = span
    inside = profile[lo: hi + 1]
    body_level = float(np.percentile(inside, 75))
    cand, props = signal.find_peaks(-profile, distance=max(1, int(round(10.0 / dz))), prominence=15.0)
    keep = [(int(c), float(body_level - profile[c])) for c in cand if lo <= c <= hi and profile[c] < body_level]
    if not keep:
        return []
    # dynamic programme: best-scoring chain with vertebra-like spacing
    best = [s for _, s in keep]
    prev = [-1] * len(keep)
    for i, (zi, si) in enumerate(keep):
        for j in range(i):
            gap = (zi - keep[j][0]) * dz
            if 22.0 <= gap <= 48.0 and best[j] + si > best[i]:
                best[i], prev[i] = best[j] + si, j
    i = int(np.argmax(best))
    chain = []
    while i >= 0:
        chain.append(keep[i][0])
        i = prev[i]
    chain = sorted(chain)
    if len(chain) < 2:
        return chain
    depth = float(np.mean([body_level - profile[c] for c in chain]))
    # extend at the local pitch: a shallower disc (e.g. the oblique lumbosacral one) is accepted
    # where a vertebra's height predicts it
    for direction in (-1, 1):
        while True:
            end = chain[0] if direction < 0 else chain[-1]
            pair = chain[:2] if direction < 0 else chain[-2:]
            pitch = abs(pair[1] - pair[0])
            centre = end + direction * pitch
            w = max(1, int(round(0.3 * pitch)))
            a, b = max(lo, centre - w), min(hi, centre + w)
            if b - a < 1:
                break
            k = a + int(np.argmin(profile[a: b + 1]))
            local = profile[max(lo, k - w): min(hi, k + w) + 1]
            if k in (a, b) or body_level - profile[k] < 0.35 * depth or float(local.max() - profile[k]) < 15.0:
                break
            chain = [k] + chain if direction < 0 else chain + [k]
    return chain


def _rib_medial_ends(bone: np.ndarray, xc: np.ndarray, yc: np.ndarray, pr: float, pc: float, low_z: int
                     ) -> list[int]:
    """Slices where ribs meet the spine: 3-D bone components outside the spinal column that
    reach from near the spine (< 40 mm from the midline) far laterally (> 75 mm), at the level
    of their most medial voxel. Components starting below ``low_z`` (the pelvis) are left out."""
    nz, nr, nc = bone.shape
    lat = np.abs(np.arange(nc)[None, :] - xc[:, None]) * pc  # (z, cols)
    dy = (np.arange(nr)[None, :] - yc[:, None]) * pr  # (z, rows)
    region = bone & (lat[:, None, :] >= 28.0) & (dy[:, :, None] >= -15.0) & (dy[:, :, None] <= 60.0)
    region[: max(low_z, 0)] = False
    labels, _ = ndimage.label(region)
    ends = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        zz, _, cc = np.nonzero(labels[box] == k)
        if zz.size < 5:
            continue
        zz = zz + box[0].start
        lateral = lat[zz, cc + box[2].start]
        if lateral.min() <= 40.0 and lateral.max() >= 75.0:
            ends.append(int(zz[np.argmin(lateral)]))
    return sorted(ends)


def _measure_slice(l3: Vertebra, cfg: LocalizeConfig, v, bone, xc, yc, pc, pr) -> int:
    """The middle of the L3 body, or the slice through its transverse processes."""
    if cfg.slice == "middle":
        return l3.middle
    widths = []
    for i in range(l3.z_lo, l3.z_hi + 1):
        r0 = int(round(yc[i] + 20.0 / pr))
        rb = slice(max(0, r0 - int(round(8.0 / pr))), r0 + int(round(8.0 / pr)) + 1)
        line = bone[i, rb, :].any(axis=0)
        lat = np.abs(np.arange(bone.shape[2]) - xc[i]) * pc
        widths.append(float(lat[line].max()) if line.any() else 0.0)
    return int(l3.z_lo + int(np.argmax(widths)))
