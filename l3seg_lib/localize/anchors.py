"""What the vertebrae are counted from: the intervertebral discs along the traced column, the
sacrum below the lowest disc, and the ribs that name the last rib-bearing vertebra (T12).

Each function takes the :class:`~l3seg_lib.localize.spine.Spine` traced by
:func:`~l3seg_lib.localize.spine.trace_spine`; lengths in mm, values in HU.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
from scipy import ndimage

from l3seg_lib.localize.spine import Spine, runs_of

PELVIS_BONE_HU = 250.0
"""Cortical bone of the ilium (HU), blurred by thick slices; the pelvis test also asks for bone joining the column."""
LUNG_FRACTION = 0.05
"""Share of the trunk below -600 HU above which a slice is taken to hold lung (no pelvis there)."""


def disc_chain(profile: np.ndarray, span: tuple[int, int], dz: float) -> list[int]:
    """Intervertebral discs (slice indices, inferior -> superior): the chain of profile minima
    spaced like vertebrae (:func:`_best_chain`) that is deepest overall, extended up and down at the
    chain's own pitch. Minima in the middle of vertebral bodies (softer cancellous bone) form a
    weaker chain in between and lose."""
    # imported here: ~50 MB that a batch of single slices never needs
    from scipy import signal

    lo, hi = span
    inside = profile[lo: hi + 1]
    body_level = float(np.percentile(inside, 75))
    cand, _ = signal.find_peaks(-profile, distance=max(1, int(round(10.0 / dz))), prominence=15.0)
    keep = [(int(c), float(body_level - profile[c])) for c in cand if lo <= c <= hi and profile[c] < body_level]
    if not keep:
        return []
    # each minimum scores its depth less half the depth of a typical disc, so that shallow minima
    # (inside bodies) cost more than they bring and a chain cannot win by taking them as well
    depths = np.sort([d for _, d in keep])
    floor = 0.5 * float(np.median(depths[len(depths) // 2:]))
    keep = [(z, d - floor) for z, d in keep]
    chain = _best_chain([z for z, _ in keep], [d for _, d in keep], dz)
    if len(chain) < 2:
        return chain
    depth = float(np.mean([body_level - profile[c] for c in chain]))  # the chain's own disc depth
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


def disc_width_mm(profile: np.ndarray, discs: list[int], dz: float) -> float:
    """Median width (mm, at half depth) of the profile's minima at ``discs``. A disc is a narrow
    dip between two endplates (5-10 mm); a dip as wide as a vertebral body means the minima are
    the bodies' soft centres (low bone density with bright endplates), not the discs."""
    from scipy import signal

    if not discs:
        return 0.0
    widths = signal.peak_widths(-profile, np.asarray(discs), rel_height=0.5)[0] * dz
    return float(np.median(widths))


def _best_chain(z: list[int], score: list[float], dz: float) -> list[int]:
    """The highest-scoring chain of minima whose gaps are vertebra-like (22-50 mm) and regular
    (each gap 0.7-1.43 times the one before: vertebral heights change slowly along the spine),
    by dynamic programming over the chain's last two members."""
    n = len(z)
    best: dict[tuple[int, int], float] = {}
    back: dict[tuple[int, int], tuple[int, int] | None] = {}
    top, top_score = [int(np.argmax(score))] if n else [], max(score) if n else 0.0
    for i in range(n):
        for j in range(i):
            gap = (z[i] - z[j]) * dz
            if not 22.0 <= gap <= 50.0:
                continue
            value, prev = score[j] + score[i], None
            for k in range(j):
                if (k, j) in best and 0.7 <= gap / ((z[j] - z[k]) * dz) <= 1.43 and best[(k, j)] + score[i] > value:
                    value, prev = best[(k, j)] + score[i], (k, j)
            best[(j, i)], back[(j, i)] = value, prev
            if value > top_score:
                top_score, top = value, [j, i]
    if len(top) == 2:
        pair: tuple[int, int] | None = (top[0], top[1])
        members = [top[1]]
        while pair is not None:
            members.append(pair[0])
            pair = back[pair]
        top = members
    return sorted(z[m] for m in top)


def lung_fraction(spine: Spine, z: int) -> float:
    """Share of the trunk's area below -600 HU in slice ``z`` (lungs; bowel gas gives a little)."""
    t = spine.trunk[z]
    return float((spine.v[z][t] < -600.0).mean()) if t.any() else 0.0


def pelvis_beside(spine: Spine, z: int) -> bool:
    """Cortical bone of the ilium on both sides of the column in slice ``z``: inside the trunk,
    35-160 mm to each side, level with the spine, at least 150 mm2 on each side."""
    t = spine.trunk[z]
    rows = np.arange(spine.v.shape[1])
    dy = (rows - spine.body[z, 0]) * spine.pr
    band = (dy >= -60.0) & (dy <= 90.0)
    dense = (spine.v[z] > PELVIS_BONE_HU) & t & band[:, None]
    lat = spine.lateral_mm(z, np.arange(spine.v.shape[2]))
    px_mm2 = spine.pr * spine.pc
    left = dense[:, (lat >= 35.0) & (lat <= 160.0)].sum() * px_mm2
    right = dense[:, (lat <= -35.0) & (lat >= -160.0)].sum() * px_mm2
    return bool(left >= 150.0 and right >= 150.0)


def sacral_alae(spine: Spine, z: int, bone_hu: float) -> bool:
    """Slice ``z`` cuts the sacrum's upper part: bone continuous from the column (within 40 mm of
    its centre) to at least 60 mm on both sides (the alae and the sacroiliac joints), the ilium
    beside it and no lung in the trunk."""
    if lung_fraction(spine, z) > LUNG_FRACTION or not pelvis_beside(spine, z):
        return False
    b = ((spine.v[z] > bone_hu) & spine.trunk[z]).astype(np.uint8)
    n, lab = cv2.connectedComponents(b, connectivity=8)
    ys, xs = np.nonzero(lab)
    if ys.size == 0:
        return False
    d = np.hypot((ys - spine.body[z, 0]) * spine.pr, (xs - spine.body[z, 1]) * spine.pc)
    k = int(np.argmin(d))
    if d[k] > 40.0:
        return False
    cols = np.flatnonzero((lab == lab[ys[k], xs[k]]).any(axis=0))
    lat = spine.lateral_mm(z, cols)
    return bool(lat.min() <= -60.0 and lat.max() >= 60.0)


def lumbosacral_disc(spine: Spine, discs: list[int], bone_hu: float) -> tuple[list[int] | None, str]:
    """The discs with L5/S1 first, when the sacrum is in view below the lowest disc, else (None,
    why not). The sacrum is the highest run (at least 12 mm long) of slices cutting the sacral
    alae (:func:`sacral_alae`) below the lowest disc: when it starts within half a vertebra below
    that disc, the disc is L5/S1; when a whole vertebra (0.5-1.5 pitches) lies between them, that
    vertebra is L5 and L5/S1 (oblique, often faint on the profile) lies on the sacrum's top."""
    dz = spine.dz
    pitch = float(np.median(np.diff(discs[:4])))
    lo = max(0, int(discs[0] - 2.0 * pitch))
    hi = discs[min(2, len(discs) - 1)]  # a rudimentary S1/S2 disc may have been taken as the lowest
    flags = np.array([sacral_alae(spine, z, bone_hu) for z in range(lo, hi)], bool)
    # thin cortex at coarse slices joins and parts from slice to slice: bridge gaps up to 6 mm
    gap = spine.zmm(6.0)
    flags = ndimage.binary_closing(np.pad(flags, gap), structure=np.ones(gap + 1, bool))[gap: gap + flags.size]
    runs = [(a + lo, b + lo) for a, b in runs_of(flags) if (b - a) * dz >= 12.0]
    if not runs:
        return None, (f"no sacrum below the lowest disc found (slice {discs[0]}): no bone joining the column to "
                      "both ilia over 12 mm (the field of view may end above the sacrum)")
    top = runs[-1][1] - 1
    discs = [d for d in discs if d > top]  # discs inside the sacrum are remnants (S1/S2)
    if len(discs) < 3:
        return None, f"fewer than 3 discs above the sacrum (top at slice {top})"
    gap = (discs[0] - top) / pitch
    if gap <= 0.5:
        return list(discs), ""
    if gap <= 1.5:
        return [int(top + 1), *discs], ""
    return None, (f"the sacrum (top at slice {top}) lies {gap:.1f} vertebrae below the lowest disc found (slice "
                  f"{discs[0]}): discs between them were missed")


RIB_MAX_DROP_MM = 180.0
"""Largest drop (mm along z) of one traced rib from head to tip. The 11th and 12th ribs of a real
patient fall 100-140 mm over their length at 5 mm slices (ACRIN-FLT-Breast_001); the ilium, which is
taller still, is told apart by its thickness and by rising towards its crest."""
RIB_HEAD_REACH_MM = 60.0
"""A rib's medial part (within this distance of the midline) is split into its own 3-D parts: two
ribs joined further out (partial volume at thick slices) keep one head each."""


class RibHead(NamedTuple):
    """A traced rib where it meets the spine."""

    z: float
    """Slice of the head (fractional), 20 mm from the midline."""
    side: int
    """-1 the patient's right, +1 the left."""
    reach_mm: float
    """How far the rib reaches to the side of the column's centre (mm): the 12th rib is short."""


def rib_levels(spine: Spine, bone_hu: float) -> list[RibHead]:
    """Slices where ribs meet the spine: 3-D bone components outside the vertebral column (more
    than 28 mm to the side of its centre, level with it) that reach from near the spine (< 42 mm)
    far to the side (> 60 mm), are thin like a rib (median cross-section < 400 mm2 per slice, at
    most :data:`RIB_MAX_DROP_MM` tall) and run downwards as they run out (their part beyond 55 mm
    lies at least 5 mm lower than their part within 45 mm). Each component's medial part (within
    :data:`RIB_HEAD_REACH_MM`) is split into its 3-D parts, one head each (ribs joined laterally).
    Returns a :class:`RibHead` for each head, sorted from inferior to superior."""
    v = spine.v
    nz, nr, nc = v.shape
    lo_r = int(max(0, np.floor(np.nanmin(spine.body[:, 0]) - 20.0 / spine.pr)))
    hi_r = int(min(nr, np.ceil(np.nanmax(spine.body[:, 0]) + 65.0 / spine.pr)))
    sub = v[:, lo_r:hi_r]
    lat = np.abs(np.arange(nc)[None, :] - spine.body[:, 1][:, None]) * spine.pc  # (z, cols)
    dy = (np.arange(lo_r, hi_r)[None, :] - spine.body[:, 0][:, None]) * spine.pr  # (z, rows)
    region = ((sub > bone_hu) & spine.trunk[:, lo_r:hi_r]
              & (lat[:, None, :] >= 28.0) & (dy[:, :, None] >= -20.0) & (dy[:, :, None] <= 60.0))
    labels, _ = ndimage.label(region)
    px_mm2 = spine.pr * spine.pc
    ends = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        zz, rr, cc = np.nonzero(labels[box] == k)
        if zz.size < 5:
            continue
        zz = zz + box[0].start
        if zz.min() == 0 or zz.max() == nz - 1:
            continue  # cut by the field of view: its medial end need not be its head
        lateral = lat[zz, cc + box[2].start]
        if lateral.min() > 42.0 or lateral.max() < 60.0:
            continue
        per_slice = np.bincount(zz - zz.min()) * px_mm2
        if np.median(per_slice[per_slice > 0]) > 400.0 or (zz.max() - zz.min()) * spine.dz > RIB_MAX_DROP_MM:
            continue  # a plate or a tall structure (the ilium), not a rib
        if zz[lateral >= 55.0].mean() > zz[lateral <= 45.0].mean() - 5.0 / spine.dz:
            continue  # ribs run down as they run out; the iliac wing rises towards its crest
        medial = lateral <= RIB_HEAD_REACH_MM
        part = np.zeros(labels[box].shape, bool)
        part[zz[medial] - box[0].start, rr[medial], cc[medial]] = True
        heads, n_heads = ndimage.label(part, structure=np.ones((3, 3, 3), bool))
        which = heads[zz - box[0].start, rr, cc]
        for h in range(1, n_heads + 1):
            sel = which == h
            if sel.sum() < 3 or lateral[sel].min() > 42.0:
                continue  # a fragment that does not reach the spine
            j = int(np.flatnonzero(sel)[np.argmin(lateral[sel])])
            side = int(np.sign(cc[j] + box[2].start - spine.body[zz[j], 1])) or 1
            ends.append(RibHead(_head_level(zz[sel], lateral[sel], spine.dz), side, float(lateral.max())))
    return sorted(ends)


def vertebra_of(z: float, discs: list[int]) -> int:
    """Index of the vertebra holding slice ``z``: vertebra k lies between discs k and k+1 (-1: below
    the lowest disc; ``len(discs) - 1``: above the highest)."""
    return int(np.searchsorted(discs, z, side="right")) - 1


def ribs_by_vertebra(ribs: list[RibHead], discs: list[int]) -> dict[int, set[int]]:
    """The sides (-1 right, +1 left) on which rib heads meet each vertebra (see :func:`vertebra_of`)."""
    out: dict[int, set[int]] = {}
    for rib in ribs:
        out.setdefault(vertebra_of(rib.z, discs), set()).add(rib.side)
    return out


CREST_BONE_HU = 200.0
"""Cortical bone of the iliac wing (HU) for the crest anchor; lower than PELVIS_BONE_HU since the
crest's thin cortex is blurred most at thick slices."""


def iliac_crests(spine: Spine, z_max: int | None = None) -> tuple[float | None, str]:
    """The intercristal line: the mean slice (fractional) of the tops of the two iliac crests, or
    (None, why not), searched in slices up to ``z_max``. Each iliac wing is the largest 3-D bone
    component on its side of the column (35-170 mm to the side, from 60 mm in front of the
    vertebral-body centre to 100 mm behind it, above :data:`CREST_BONE_HU`) that is a plate
    (median cross-section >= 300 mm2) of cortical bone (95th percentile >= 400 HU: enhancing
    kidneys reach 300), at least 30 mm tall and not cut by the top of the searched slab; its crest
    is the highest slice where its cross-section reaches 40 mm2. The two tops must lie within 20 mm
    of each other along z."""
    z_max = spine.v.shape[0] if z_max is None else max(1, min(z_max, spine.v.shape[0]))
    nz, nr, nc = spine.v[:z_max].shape
    px_mm2 = spine.pr * spine.pc
    body = spine.body[:nz]
    # only the box the wings can lie in is labelled (rows in front of / behind the column, each side)
    r0 = int(max(0, np.floor(np.nanmin(body[:, 0]) - 60.0 / spine.pr)))
    r1 = int(min(nr, np.ceil(np.nanmax(body[:, 0]) + 100.0 / spine.pr) + 1))
    dy = (np.arange(r0, r1)[None, :] - body[:, 0][:, None]) * spine.pr  # (z, rows)
    near = ((dy >= -60.0) & (dy <= 100.0))[:, :, None]
    tops = {}
    for side in (-1, 1):
        edge = body[:, 1] + side * np.array([35.0, 170.0])[:, None] / spine.pc  # (2, z) columns
        c0 = int(max(0, np.floor(np.nanmin(edge)))), int(min(nc, np.ceil(np.nanmax(edge)) + 1))
        if c0[1] <= c0[0]:
            continue
        v = spine.v[:nz, r0:r1, c0[0]:c0[1]]
        s_lat = side * (np.arange(c0[0], c0[1])[None, :] - body[:, 1][:, None]) * spine.pc
        region = ((v > CREST_BONE_HU) & spine.trunk[:nz, r0:r1, c0[0]:c0[1]] & near
                  & ((s_lat >= 35.0) & (s_lat <= 170.0))[:, None, :])
        labels, n = ndimage.label(region)
        if n == 0:
            continue
        sizes = ndimage.sum_labels(region, labels, index=np.arange(1, n + 1))
        boxes = ndimage.find_objects(labels)
        for k in np.argsort(sizes)[::-1][:3] + 1:
            box = boxes[k - 1]
            zz, rr, cc = np.nonzero(labels[box] == k)
            zz = zz + box[0].start
            per_slice = np.bincount(zz, minlength=nz) * px_mm2
            rows = np.flatnonzero(per_slice >= 40.0)
            if rows.size == 0:
                continue
            top, bottom = int(rows.max()), int(zz.min())
            if top >= nz - 1 or (top - bottom) * spine.dz < 30.0:
                continue
            values = v[zz, rr + box[1].start, cc + box[2].start]
            if np.median(per_slice[per_slice > 0]) < 300.0 or np.percentile(values, 95) < 400.0:
                continue  # a rib, a thin strut or an enhancing kidney, not the iliac wing
            tops[side] = float(top)
            break
    if len(tops) < 2:
        return None, ("no iliac crest on " + ("either side" if not tops else "one side")
                      + " (the field of view may start above the pelvis)")
    if abs(tops[-1] - tops[1]) * spine.dz > 20.0:
        return None, (f"the iliac crests' tops (slices {tops[-1]:.0f} and {tops[1]:.0f}) lie "
                      f"{abs(tops[-1] - tops[1]) * spine.dz:.0f} mm apart: not read as crests")
    return (tops[-1] + tops[1]) / 2.0, ""


def _head_level(zz: np.ndarray, lateral: np.ndarray, dz: float) -> float:
    """Slice (fractional) of a rib's head, 20 mm from the midline: its medial part (within
    45 mm) extrapolated along the rib's own slope, since the part nearer the spine is left out
    and ribs rise towards their heads (at most 15 mm of extrapolation)."""
    near = lateral <= 45.0
    z0, x0 = float(zz[near].mean()), float(lateral[near].mean())
    fit = lateral <= 60.0
    slope = 0.0
    if np.ptp(lateral[fit]) > 5.0:
        slope = min(0.0, float(np.polyfit(lateral[fit], zz[fit], 1)[0]))  # slices per mm, <= 0
    return z0 + min(-slope * (x0 - 20.0), 15.0 / dz)

