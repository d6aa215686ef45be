"""Validation variants of a real CT series with vertebra labels, for the L3 localiser.

Each function takes a :class:`~l3seg_lib.imageio.ct.CTVolume` and its vertebra label array
(canonical ``(z, row, col)``, the same shape) and returns a variant volume with its labels
transformed identically, so the expected answer always comes from the labels, never from the
localiser: coverage crops, slice thickness, an off-centre or rotated patient, the couch removed
or replaced, the stored axis order of a NIfTI file changed, image noise.

Labels are TotalSegmentator's (sacrum 25, S1 26, L5 27, L4 28, L3 29, L2 30, L1 31, T12 32, ...,
C1 50). :func:`prepare_labels` keeps the vertebrae and marks each vertebral *body* (the
anterior part of the vertebra, in front of the spinal canal) as ``value + BODY_OFFSET``.
The body matters because a vertebra's label also holds its posterior elements, which reach a
slab below the body (the inferior articular and spinous processes): in the TotalSegmentator
example the L3 label spans slices 65-79 but the L3 body only 69-79. The expected slice is the
middle of the L3 *body*; the label's whole range is reported beside it.

:func:`expect` gives the expected answer of a variant, :func:`score` scores a localiser result
against it, and :func:`standard_variants` lists the variants the validation runs
(``experiments/l3_real_validation.py``; ``tests/test_localize_real.py`` uses a few).
Units: HU for values, mm for lengths, degrees for angles, slices (canonical index, inferior ->
superior) for levels. Everything is deterministic; random noise takes its seed as an argument.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
from scipy import ndimage

from l3seg_lib.imageio.ct import AIR_HU, LOWEST_HU, CTVolume, voxel_sizes

VERTEBRAE = {"sacrum": 25, "S1": 26, "L5": 27, "L4": 28, "L3": 29, "L2": 30, "L1": 31,
             **{f"T{12 - i}": 32 + i for i in range(12)}, **{f"C{7 - i}": 44 + i for i in range(7)}}
"""TotalSegmentator (v2) label value of each vertebra."""
BODY_OFFSET = 100
""":func:`prepare_labels` stores the body of vertebra ``v`` as ``v + BODY_OFFSET``."""
BODY_FRACTION = 0.4
"""The vertebral body: the anterior 40 % of the vertebra label's antero-posterior extent."""
MIN_BODY_AREA_MM2 = 150.0
"""A slice holds a vertebral body when its body voxels cover at least this area (about a tenth
of a lumbar body's cross-section); smaller slivers are partial-volume edges."""
MIN_ANCHOR_MM = 15.0
"""How much of the sacrum, or of T12's body, must be in view (along z, mm) to count from it."""
WHOLE, CUT, ABSENT = "whole", "cut", "absent"
FOUND_INSIDE, WRONG_LEVEL, CANNOT_TELL = "found inside L3 body", "wrong level", "cannot tell"

Pair = tuple[CTVolume, np.ndarray]


# --------------------------------------------------------------------------------------------
# labels and the expected answer


def prepare_labels(labels: np.ndarray) -> np.ndarray:
    """Vertebra labels only (other structures set to 0), as uint8, with each vertebral body
    (not the sacrum) marked ``value + BODY_OFFSET``.

    The body is the label's voxels in the anterior :data:`BODY_FRACTION` of the vertebra's
    antero-posterior (row) extent over the whole volume; rows run anterior -> posterior.
    Call it on the original series, before deriving variants, so that a crop cannot change
    which voxels count as body.
    """
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.uint8)
    for name, value in VERTEBRAE.items():
        m = labels == value
        if not m.any():
            continue
        out[m] = value
        if name == "sacrum":
            continue
        rows = np.nonzero(m.any(axis=(0, 2)))[0]
        cut = rows[0] + BODY_FRACTION * (rows[-1] - rows[0])
        body = m & (np.arange(labels.shape[1])[None, :, None] <= cut)
        out[body] = value + BODY_OFFSET
    return out


def level_range(labels: np.ndarray, name: str, part: str = "body",
                pixel_area_mm2: float | None = None) -> tuple[int, int] | None:
    """First and last slice (canonical index) of vertebra ``name`` in ``labels``, or None.

    ``part="label"``: any voxel of the vertebra (body or posterior elements).
    ``part="body"``: slices whose body voxels (``value + BODY_OFFSET``, see
    :func:`prepare_labels`) cover at least :data:`MIN_BODY_AREA_MM2` (``pixel_area_mm2`` is
    the in-plane pixel area in mm^2; without it any body voxel counts).
    """
    value = VERTEBRAE[name]
    if part == "label":
        present = ((labels == value) | (labels == value + BODY_OFFSET)).any(axis=(1, 2))
    elif part == "body":
        area = (labels == value + BODY_OFFSET).sum(axis=(1, 2)).astype(float)
        present = area * pixel_area_mm2 >= MIN_BODY_AREA_MM2 if pixel_area_mm2 else area > 0
    else:
        raise ValueError(f"part must be 'body' or 'label', not {part!r}")
    z = np.flatnonzero(present)
    return (int(z[0]), int(z[-1])) if z.size else None


@dataclass
class Expectation:
    """What the localiser should say about a variant, from its labels alone."""

    coverage: str
    """``whole`` (the L3 body lies wholly inside the view), ``cut`` (the view starts or ends
    inside the L3 body) or ``absent`` (no L3 body in the view)."""
    status: str
    """``found`` when the coverage is whole, else ``cannot tell``."""
    body: tuple[int, int] | None
    """First and last slice of the L3 body."""
    label: tuple[int, int] | None
    """First and last slice of the whole L3 label (body and posterior elements)."""
    slice_mm: float
    """Slice spacing (mm)."""
    anchors: tuple[str, ...] = ()
    """What a vertebra count can start from in the view: ``sacrum`` (its label spans at least
    :data:`MIN_ANCHOR_MM` along z) and ``T12`` (the body of the lowest rib-bearing vertebra
    does). With L3 wholly in view but no anchor, "cannot tell" is a defensible answer too."""

    @property
    def mid(self) -> float | None:
        """Middle of the L3 body, (lo + hi) / 2 (slices)."""
        return None if self.body is None else (self.body[0] + self.body[1]) / 2

    @property
    def mid_label(self) -> float | None:
        """Middle of the whole L3 label (slices)."""
        return None if self.label is None else (self.label[0] + self.label[1]) / 2

    @property
    def tolerance_mm(self) -> float:
        """How far from the middle of the L3 body a found slice may lie: one slice or 3 mm,
        whichever is more."""
        return max(self.slice_mm, 3.0)


def expect(volume: CTVolume, labels: np.ndarray) -> Expectation:
    """The expected answer for ``volume`` from its prepared labels (:func:`prepare_labels`)."""
    area = volume.spacing_mm[1] * volume.spacing_mm[2]
    body = level_range(labels, "L3", "body", area)
    label = level_range(labels, "L3", "label")
    if body is None:
        coverage = ABSENT
    elif body[0] == 0 or body[1] == volume.n_slices - 1:
        coverage = CUT
    else:
        coverage = WHOLE
    anchors = []
    for name, part in (("sacrum", "label"), ("T12", "body")):
        r = level_range(labels, name, part, area)
        if r is not None and (r[1] - r[0] + 1) * volume.spacing_mm[0] >= MIN_ANCHOR_MM:
            anchors.append(name)
    return Expectation(coverage, "found" if coverage == WHOLE else "cannot tell", body, label,
                       float(volume.spacing_mm[0]), tuple(anchors))


def score(loc, exp: Expectation) -> dict:
    """Score a localiser result (:class:`~l3seg_lib.localize.l3.L3Location`) against ``exp``.

    ``outcome``: ``found inside L3 body`` (the chosen slice lies in the labelled L3 body),
    ``wrong level`` (found, but outside the L3 body or where it is absent) or ``cannot tell``.
    ``as_expected``: found inside the body where it is wholly in view; cannot tell where it is
    cut or absent. ``acceptable``: as expected, or found inside a cut L3 body (not a wrong
    level, but reported as ``found_in_cut_l3``). ``within_tolerance``: found inside the body
    within :attr:`Expectation.tolerance_mm` of its middle. Distances are chosen - middle
    (positive: superior), in slices and mm.
    """
    chosen = loc.slice_index if loc.found else None
    if chosen is None:
        outcome = CANNOT_TELL
    elif exp.body is not None and exp.body[0] <= chosen <= exp.body[1]:
        outcome = FOUND_INSIDE
    else:
        outcome = WRONG_LEVEL
    as_expected = outcome == (FOUND_INSIDE if exp.coverage == WHOLE else CANNOT_TELL)
    cut_found = exp.coverage == CUT and outcome == FOUND_INSIDE
    d = None if chosen is None or exp.mid is None else chosen - exp.mid
    return {
        "coverage": exp.coverage, "anchors": "+".join(exp.anchors) or "none", "expected": exp.status,
        "outcome": outcome, "as_expected": as_expected, "acceptable": as_expected or cut_found,
        "found_in_cut_l3": cut_found,
        "within_tolerance": bool(outcome == FOUND_INSIDE and abs(d) * exp.slice_mm <= exp.tolerance_mm + 1e-6),
        "l3_body": exp.body, "l3_label": exp.label, "mid_l3": exp.mid, "chosen": chosen,
        "found_range": tuple(loc.l3_range) if loc.found and loc.l3_range is not None else None,
        "slices_from_mid": d, "mm_from_mid": None if d is None else round(d * exp.slice_mm, 2),
        "confidence": loc.confidence, "reason": loc.reason, "seconds": round(float(loc.seconds), 3),
    }


# --------------------------------------------------------------------------------------------
# the variant volume


def _rebuild(volume: CTVolume, hu: np.ndarray, affine: np.ndarray, tag: str) -> CTVolume:
    """A new volume with ``hu`` (z, rows, cols) and ``affine`` ((col, row, z) -> RAS mm);
    spacing, slice ids and locations follow from them."""
    zooms = voxel_sizes(affine)
    n = hu.shape[0]
    name = volume.meta.extra.get("variant")
    tag = f"{name} + {tag}" if name else tag
    return replace(
        volume, hu=np.ascontiguousarray(hu, dtype=np.float32), affine=affine,
        spacing_mm=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        slice_ids=[f"{volume.patient_id}_v_z{k:03d}" for k in range(n)],
        slice_locations_mm=[float((affine @ np.array([0.0, 0.0, k, 1.0]))[2]) for k in range(n)],
        stored_transform=None, meta=replace(volume.meta, extra={**volume.meta.extra, "variant": tag}),
    )


def _translate(affine: np.ndarray, col: float = 0.0, row: float = 0.0, z: float = 0.0) -> np.ndarray:
    """The affine of a grid whose index 0 lies at index (col, row, z) of ``affine``'s grid."""
    out = affine.copy()
    out[:3, 3] = (affine @ np.array([col, row, z, 1.0]))[:3]
    return out


# --------------------------------------------------------------------------------------------
# coverage


def crop_z(volume: CTVolume, labels: np.ndarray, lo: int, hi: int) -> Pair:
    """Slices ``lo``..``hi`` (inclusive, canonical index) of the volume and of its labels."""
    lo, hi = max(0, int(lo)), min(volume.n_slices - 1, int(hi))
    if hi < lo:
        raise ValueError(f"empty crop {lo}..{hi}")
    out = _rebuild(volume, volume.hu[lo: hi + 1], _translate(volume.affine, z=lo), f"slices {lo}-{hi}")
    return out, labels[lo: hi + 1].copy()


def coverage_crops(volume: CTVolume, labels: np.ndarray) -> dict[str, tuple[int, int, str]]:
    """Crops (first slice, last slice, intended coverage of L3) that the labels allow.

    L3 wholly in view: from the sacrum up to L1 or T12, from L5, mid-L5 or mid-L4 up; L3
    absent: the view wholly above the L3 (or L2) label, or wholly below the L3 label; L3 cut:
    the view ends in the middle or upper part of the L3 body, or starts in its middle or lower
    part (only when the L3 body is wholly in the original view). A crop is left out when a
    landmark it needs is not in the labels, when it would keep fewer than 12 slices, or when it
    equals the whole volume. Slices are canonical indices of ``volume``, inclusive.
    """
    area = volume.spacing_mm[1] * volume.spacing_mm[2]
    dz = volume.spacing_mm[0]
    n = volume.n_slices
    last = n - 1
    margin = max(1, int(round(6.0 / dz)))  # about one disc (slices)

    def body(name):
        """Slice range of the vertebral body ``name`` (None when not in the labels)."""
        return level_range(labels, name, "body", area)

    def label(name):
        """Slice range of any voxel of vertebra or label ``name`` (None when not in the labels)."""
        return level_range(labels, name, "label")

    def mid(r):
        """Middle slice of range ``r`` (None for None)."""
        return None if r is None else (r[0] + r[1]) // 2

    def top(r):  # just above a vertebral body (within the disc above it)
        """Slice about one disc above the top of range ``r`` (None when absent or already at the last slice)."""
        return None if r is None or r[1] == last else min(last, r[1] + margin)

    l5, l4, l3, l2, l1, t12 = (body(v) for v in ("L5", "L4", "L3", "L2", "L1", "T12"))
    sac = label("sacrum")
    l3_label, l2_label = label("L3"), label("L2")
    crops = {
        "L3 whole: sacrum to L1": (mid(sac), top(l1), WHOLE),
        "L3 whole: sacrum to T12": (mid(sac), top(t12), WHOLE),
        "L3 whole: L5 to top of view": (None if l5 is None or l5[0] == 0 else l5[0] - margin, last, WHOLE),
        "L3 whole: mid-L5 to L2": (mid(l5), top(l2), WHOLE),
        "L3 whole: mid-L4 to top of view": (mid(l4), last, WHOLE),
        "L3 absent: view above L3": (None if l3_label is None else l3_label[1] + 1, last, ABSENT),
        "L3 absent: view above L2": (None if l2_label is None else l2_label[1] + 1, last, ABSENT),
        "L3 absent: view below L3": (0, None if l3_label is None else l3_label[0] - 1, ABSENT),
        "L3 cut: view ends mid-L3": (0, mid(l3), CUT),
        "L3 cut: view ends in upper L3": (0, None if l3 is None else l3[1] - max(1, int(round(5.0 / dz))), CUT),
        "L3 cut: view starts mid-L3": (mid(l3), last, CUT),
        "L3 cut: view starts in lower L3": (None if l3 is None else l3[0] + max(1, int(round(5.0 / dz))), last, CUT),
    }
    out = {}
    for name, (lo, hi, coverage) in crops.items():
        if lo is None or hi is None or lo < 0 or hi > last or hi - lo + 1 < 12 or (lo, hi) == (0, last):
            continue
        if coverage == CUT and (l3 is None or l3[0] == 0 or l3[1] == last):
            continue  # L3 is cut in the original already: the original is the cut case
        if (lo, hi) not in [v[:2] for v in out.values()]:
            out[name] = (int(lo), int(hi), coverage)
    return out


# --------------------------------------------------------------------------------------------
# slice thickness


def _z_weights(n: int, dz: float, thickness: float) -> tuple[list[list[tuple[int, float]]], float]:
    """For each new slice, the source slices and their weights, and the new first slice's
    position in source slice units. Thicker slices average the source over the slab (box
    profile, like a thick reconstruction); thinner ones interpolate linearly."""
    if thickness >= dz:
        m = int(np.floor(n * dz / thickness + 1e-9))
        start = -dz / 2 + (n * dz - m * thickness) / 2  # mm, lower edge of the first slab
        rows = []
        for k in range(m):
            a, b = start + k * thickness, start + (k + 1) * thickness
            ws = []
            for i in range(max(0, int(np.floor(a / dz))), min(n, int(np.ceil(b / dz)) + 1)):
                w = min(b, (i + 0.5) * dz) - max(a, (i - 0.5) * dz)
                if w > 1e-6:
                    ws.append((i, w / thickness))
            rows.append(ws)
        return rows, (start + thickness / 2) / dz
    m = int(np.floor((n - 1) * dz / thickness + 1e-9)) + 1
    first = ((n - 1) * dz - (m - 1) * thickness) / 2  # mm
    rows = []
    for k in range(m):
        p = (first + k * thickness) / dz
        i = min(int(np.floor(p)), n - 2)
        f = p - i
        rows.append([(i, 1.0 - f), (i + 1, f)] if n > 1 else [(0, 1.0)])
    return rows, first / dz


def resample_z(volume: CTVolume, labels: np.ndarray, thickness_mm: float) -> Pair:
    """Slices ``thickness_mm`` thick and apart over the same extent.

    Thicker than the source: each slice is the mean of the source over its slab (as a thick
    reconstruction), labels by a weighted majority over the slab. Thinner: linear interpolation
    between source slices, labels from the nearest source slice. Equal: a copy.
    """
    dz = float(volume.spacing_mm[0])
    if abs(thickness_mm - dz) < 1e-6:
        return _rebuild(volume, volume.hu.copy(), volume.affine.copy(), f"{thickness_mm:g} mm"), labels.copy()
    rows, first = _z_weights(volume.n_slices, dz, thickness_mm)
    hu = np.empty((len(rows),) + volume.hu.shape[1:], np.float32)
    lab = np.empty((len(rows),) + labels.shape[1:], labels.dtype)
    for k, ws in enumerate(rows):
        acc = np.zeros(volume.hu.shape[1:], np.float32)
        for i, w in ws:
            acc += np.float32(w) * volume.hu[i]
        hu[k] = acc
        if thickness_mm < dz:
            i, w = max(ws, key=lambda t: t[1])
            lab[k] = labels[i]
        else:
            cand = np.stack([labels[i] for i, _ in ws])  # per voxel: the label with most weight
            votes = np.stack([sum(w * (cand[j] == cand[a]) for j, (_, w) in enumerate(ws)) for a in range(len(ws))])
            lab[k] = np.take_along_axis(cand, votes.argmax(axis=0)[None], axis=0)[0]
    affine = _translate(volume.affine, z=first)
    affine[:3, 2] *= thickness_mm / dz
    return _rebuild(volume, hu, affine, f"{thickness_mm:g} mm slices"), lab


# --------------------------------------------------------------------------------------------
# position in the field of view


def shift_in_plane(volume: CTVolume, labels: np.ndarray, d_row_mm: float = 0.0, d_col_mm: float = 0.0) -> Pair:
    """The patient off-centre by (``d_row_mm``, ``d_col_mm``) in the field of view.

    As a reconstruction whose field of view is displaced from the patient: air (-1000 HU) is
    added on the side the patient moves away from, twice the shift wide, so nothing is cut and
    the patient's centre moves by the shift relative to the array centre. Positive: towards
    higher row (posterior) / column (patient left) indices. The affine keeps the world
    position of every voxel (the same patient, a different field of view).
    """
    pads, offset = [(0, 0)], [0, 0]
    for axis, d in ((1, d_row_mm), (2, d_col_mm)):
        p = int(round(2 * abs(d) / volume.spacing_mm[axis]))
        pads.append((p, 0) if d > 0 else (0, p))
        offset[axis - 1] = p if d > 0 else 0
    hu = np.pad(volume.hu, pads, constant_values=AIR_HU)
    lab = np.pad(labels, pads, constant_values=0)
    affine = _translate(volume.affine, col=-offset[1], row=-offset[0])
    return _rebuild(volume, hu, affine, f"off-centre {d_row_mm:g}/{d_col_mm:g} mm (row/col)"), lab


def rotate_in_plane(volume: CTVolume, labels: np.ndarray, degrees: float) -> Pair:
    """Every slice rotated by ``degrees`` about the array centre (the patient rolled on the
    table; the table turns with it): HU linearly, filled with air (-1000 HU), labels by
    nearest neighbour. Positive turns counter-clockwise as displayed (rows down, columns right).
    The affine is kept: the patient moved, not the scanner."""
    hu = ndimage.rotate(volume.hu, degrees, axes=(2, 1), reshape=False, order=1, mode="constant", cval=AIR_HU)
    lab = ndimage.rotate(labels, degrees, axes=(2, 1), reshape=False, order=0, mode="constant", cval=0)
    return _rebuild(volume, hu, volume.affine.copy(), f"rotated {degrees:g} deg"), lab


# --------------------------------------------------------------------------------------------
# the couch


def _disk(radius_px: int) -> np.ndarray:
    """Elliptical structuring element of ``radius_px`` pixels (at least 1)."""
    r = max(1, int(radius_px))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """A 2-D mask with its holes (background not connected to the border) filled."""
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8), (0, 0), 1)
    return (padded | (1 - flood)).astype(bool)[1:-1, 1:-1]


def body_mask(volume: CTVolume, threshold_hu: float = -500.0, opening_mm: float = 4.0) -> np.ndarray:
    """The patient's body (z, rows, cols): the largest 3-D connected component above
    ``threshold_hu`` after an in-plane opening of radius ``opening_mm`` (which breaks the
    couch, cables and blankets off the skin), with the skin's fine detail restored and the
    holes (lungs, bowel gas) filled slice by slice."""
    pix = min(volume.spacing_mm[1:])
    r = max(1, int(round(opening_mm / pix)))
    above = (volume.hu > threshold_hu).astype(np.uint8)
    opened = np.stack([cv2.morphologyEx(a, cv2.MORPH_OPEN, _disk(r)) for a in above]).astype(bool)
    lab, n = ndimage.label(opened)
    if n == 0:
        return np.zeros(above.shape, bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = (lab == int(np.argmax(sizes))).astype(np.uint8)
    return np.stack([_fill_holes(cv2.dilate(k, _disk(r + 1)) & a) for k, a in zip(keep, above)])


def remove_table(volume: CTVolume, labels: np.ndarray, body: np.ndarray | None = None) -> Pair:
    """Everything outside the body (:func:`body_mask`) set to air (-1000 HU): couch, cables,
    blankets. Labels outside the body are cleared (the vertebrae lie inside it)."""
    body = body_mask(volume) if body is None else body
    hu = np.where(body, volume.hu, np.float32(AIR_HU))
    lab = np.where(body, labels, 0).astype(labels.dtype)
    return _rebuild(volume, hu, volume.affine.copy(), "table removed"), lab


def add_table(volume: CTVolume, labels: np.ndarray, gap_mm: float = 10.0, shell_mm: float = 4.0,
              shell_hu: float = 300.0, core_mm: float = 40.0, core_hu: float = -880.0, base_mm: float = 6.0,
              base_hu: float = 250.0, rise_mm: float = 30.0, min_width_mm: float = 460.0,
              body: np.ndarray | None = None) -> Pair:
    """Replace whatever lies outside the body by a curved CT couch.

    The couch: a carbon-fibre shell ``shell_mm`` thick at ``shell_hu``, curved like a cradle
    under the back (its edges ``rise_mm`` higher than its centre, a parabola), its lowest inner
    point ``gap_mm`` below the most posterior skin of the whole series; a foam core at
    ``core_hu`` between the shell and a flat base plate (``base_mm`` at ``base_hu``) that lies
    ``core_mm`` below the shell's centre. It is wider than the body (at least
    ``min_width_mm``, or the body's width + 80 mm), clipped to the field of view, the same on
    every slice, and never drawn inside the body. Rows of air are added posteriorly when the
    field of view ends too close below the patient (the affine is unchanged: new rows come
    after the last). ``body``: :func:`body_mask` of the volume, when already computed.
    """
    body = body_mask(volume) if body is None else body
    vol, lab = remove_table(volume, labels, body)
    pr, pc = volume.spacing_mm[1], volume.spacing_mm[2]
    rows_any = np.flatnonzero(body.any(axis=(0, 2)))
    cols_any = np.flatnonzero(body.any(axis=(0, 1)))
    skin = float(rows_any[-1]) * pr  # mm, most posterior skin
    bottom = skin + gap_mm + shell_mm + core_mm + base_mm + 10.0
    need = int(np.ceil(bottom / pr)) + 1 - vol.hu.shape[1]
    hu = vol.hu
    if need > 0:
        hu = np.pad(hu, [(0, 0), (0, need), (0, 0)], constant_values=AIR_HU)
        lab = np.pad(lab, [(0, 0), (0, need), (0, 0)], constant_values=0)
        body = np.pad(body, [(0, 0), (0, need), (0, 0)], constant_values=False)
    nr, nc = hu.shape[1:]
    centre = (cols_any[0] + cols_any[-1]) / 2 * pc
    half = max(min_width_mm, (cols_any[-1] - cols_any[0]) * pc + 80.0) / 2
    x = np.arange(nc) * pc - centre  # mm from the couch centre
    y = np.arange(nr)[:, None] * pr  # mm, rows
    inner = skin + gap_mm - rise_mm * (x / half) ** 2  # shell's upper surface at each column
    on = np.abs(x) <= half
    shell = on & (y >= inner) & (y < inner + shell_mm)
    base_top = skin + gap_mm + shell_mm + core_mm
    core = on & (y >= inner + shell_mm) & (y < base_top)
    base = on & (y >= base_top) & (y < base_top + base_mm)
    couch = np.full((nr, nc), np.nan, np.float32)
    couch[core], couch[shell], couch[base] = core_hu, shell_hu, base_hu
    paint = np.isfinite(couch)[None] & ~body
    hu = np.where(paint, couch[None], hu)
    affine = vol.affine.copy()
    out = _rebuild(volume, hu, affine, f"curved couch {gap_mm:g} mm below the back")
    return out, lab


# --------------------------------------------------------------------------------------------
# stored axis order (through a NIfTI file)


def through_nifti(volume: CTVolume, labels: np.ndarray, flip: tuple[int, ...] = (),
                  permute: tuple[int, int, int] = (0, 1, 2), tmp_dir: str | Path | None = None) -> Pair:
    """Write the series as NIfTI with another stored axis order and read it back.

    The canonical (col, row, z) array is flipped along the axes in ``flip`` (0 col, 1 row,
    2 z) and its axes then stored in the order ``permute``, with the affine changed so that
    every voxel keeps its world position; image and labels are written with nibabel into a
    temporary folder (deleted afterwards; int16 when the HU are whole numbers, else float32)
    and read back with :func:`~l3seg_lib.imageio.nifti.read_nifti` and
    :func:`~l3seg_lib.imageio.labels.read_mask_for`. A correct reader returns the original
    canonical arrays.
    """
    from l3seg_lib.imageio.labels import read_mask_for
    from l3seg_lib.imageio.nifti import read_nifti

    xyz = volume.hu.transpose(2, 1, 0)
    lxyz = labels.transpose(2, 1, 0)
    affine = volume.affine.copy()
    for axis in flip:
        xyz, lxyz = np.flip(xyz, axis), np.flip(lxyz, axis)
        f = np.eye(4)
        f[axis, axis], f[axis, 3] = -1.0, xyz.shape[axis] - 1
        affine = affine @ f
    xyz, lxyz = xyz.transpose(permute), lxyz.transpose(permute)
    affine = affine[:, list(permute) + [3]]
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        paths = []
        whole = bool(np.all(np.rint(volume.hu) == volume.hu)) and np.abs(volume.hu).max() < 32000
        for data, name, dtype in ((xyz, "ct", np.int16 if whole else np.float32), (lxyz, "labels", np.uint8)):
            img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=dtype), affine)
            img.set_sform(affine, code=1)
            img.set_qform(affine, code=1)
            paths.append(Path(tmp) / f"{volume.patient_id}_{name}.nii")
            nib.save(img, str(paths[-1]))
        back = read_nifti(paths[0])
        lab = read_mask_for(paths[1], back, "labels").astype(labels.dtype)
    tag = f"stored flipped {flip}" if flip else ""
    tag += (", " if tag else "") + (f"stored axes {permute}" if permute != (0, 1, 2) else "")
    out = replace(back, patient_id=volume.patient_id, source=volume.source, meta=volume.meta)
    return _rebuild(out, back.hu, back.affine, f"NIfTI {tag or 'as stored'}"), lab


# --------------------------------------------------------------------------------------------
# noise


def add_noise(volume: CTVolume, labels: np.ndarray, sd_hu: float = 30.0, seed: int = 0) -> Pair:
    """White Gaussian noise of ``sd_hu`` HU added to every voxel (seeded), clipped at -1024 HU."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(volume.hu.shape, dtype=np.float32) * np.float32(sd_hu)
    hu = np.maximum(volume.hu + noise, np.float32(LOWEST_HU))
    return _rebuild(volume, hu, volume.affine.copy(), f"noise {sd_hu:g} HU (seed {seed})"), labels.copy()


# --------------------------------------------------------------------------------------------
# the standard set


@dataclass
class VariantSpec:
    """A named variant, made on demand (``make()`` returns the volume and its labels)."""

    name: str
    kind: str
    """coverage, thickness, position, table, header, noise or combined."""
    make: Callable[[], Pair]


def standard_variants(volume: CTVolume, labels: np.ndarray, seed: int = 0) -> list[VariantSpec]:
    """The variants the validation runs on one series (``labels`` from :func:`prepare_labels`):
    the original, every crop of :func:`coverage_crops`, 1 / 2.5 / 5 mm slices (a thickness equal
    to the source's is left out), off-centre by 50 mm (left) and 40 + 40 mm (posterior and
    right), rotated +5 and -8 degrees, table removed, a curved couch added 0 and 25 mm below
    the back, NIfTI stored flipped (left-right; superior-inferior; antero-posterior and
    superior-inferior) and with rows and columns swapped, noise of 20 and 40 HU, and four
    combinations. ``seed`` seeds the noise."""
    v, lab = volume, labels
    cache: dict[str, np.ndarray] = {}

    def body() -> np.ndarray:  # computed once, for the table variants
        """Body mask of the volume, computed on first use and cached."""
        if "body" not in cache:
            cache["body"] = body_mask(v)
        return cache["body"]

    specs = [VariantSpec("original", "coverage", lambda: (v, lab))]
    for name, (lo, hi, _) in coverage_crops(v, lab).items():
        specs.append(VariantSpec(f"{name} (slices {lo}-{hi})", "coverage", lambda lo=lo, hi=hi: crop_z(v, lab, lo, hi)))
    for t in (1.0, 2.5, 5.0):
        if abs(t - v.spacing_mm[0]) > 1e-6:
            specs.append(VariantSpec(f"{t:g} mm slices", "thickness", lambda t=t: resample_z(v, lab, t)))
    specs += [
        VariantSpec("off-centre 50 mm left", "position", lambda: shift_in_plane(v, lab, 0.0, 50.0)),
        VariantSpec("off-centre 40 mm posterior, 40 mm right", "position", lambda: shift_in_plane(v, lab, 40.0, -40.0)),
        VariantSpec("rotated +5 deg", "position", lambda: rotate_in_plane(v, lab, 5.0)),
        VariantSpec("rotated -8 deg", "position", lambda: rotate_in_plane(v, lab, -8.0)),
        VariantSpec("table removed", "table", lambda: remove_table(v, lab, body())),
        VariantSpec("curved couch, 0 mm gap", "table", lambda: add_table(v, lab, gap_mm=0.0, body=body())),
        VariantSpec("curved couch, 25 mm gap", "table",
                    lambda: add_table(v, lab, gap_mm=25.0, shell_mm=6.0, body=body())),
        VariantSpec("NIfTI flipped left-right", "header", lambda: through_nifti(v, lab, flip=(0,))),
        VariantSpec("NIfTI flipped superior-inferior", "header", lambda: through_nifti(v, lab, flip=(2,))),
        VariantSpec("NIfTI flipped AP and SI", "header", lambda: through_nifti(v, lab, flip=(1, 2))),
        VariantSpec("NIfTI rows and columns swapped", "header", lambda: through_nifti(v, lab, permute=(1, 0, 2))),
        VariantSpec("noise 20 HU", "noise", lambda: add_noise(v, lab, 20.0, seed)),
        VariantSpec("noise 40 HU", "noise", lambda: add_noise(v, lab, 40.0, seed + 1)),
        VariantSpec("5 mm slices + noise 30 HU", "combined",
                    lambda: add_noise(*resample_z(v, lab, 5.0), 30.0, seed + 2)),
        VariantSpec("off-centre 50 mm + rotated 6 deg", "combined",
                    lambda: rotate_in_plane(*shift_in_plane(v, lab, 0.0, 50.0), 6.0)),
        VariantSpec("table removed + 1 mm slices", "combined", lambda: resample_z(*remove_table(v, lab, body()), 1.0)),
        VariantSpec("curved couch + noise 25 HU", "combined",
                    lambda: add_noise(*add_table(v, lab, gap_mm=15.0, body=body()), 25.0, seed + 3)),
    ]
    return specs
