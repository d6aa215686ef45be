"""Review flags: reasons to look at a measured slice before using its numbers.

Each check returns a reason (a sentence) or None; :func:`review_flags` collects them. A slice with
any reason has ``review_required`` true in ``measurements.csv`` and is highlighted in the HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from l3seg_lib.imageio.ct import ImageMeta
from l3seg_lib.localize.l3 import Confidence
from l3seg_lib.measurement.result import LevelSource
from l3seg_lib.preprocessing.geometry import body_mask, fill_holes
from l3seg_lib.units import pixel_area_cm2

ENTROPY_THRESHOLD = 0.35
"""Mean softmax entropy (nats) over tissue pixels above which a segmentation is flagged as
uncertain: the 95th percentile of the default model's slices on the built-in data's held-out test
patients (median 0.23, maximum 0.36; measured 2026-11-25)."""
MISSED_MUSCLE_CM2 = 12.0
"""Smallest unlabelled muscle-density band (cm², :meth:`WallProfile.band_cm2`) inside the anterior
and lateral abdominal wall that raises :func:`missed_muscle`. Set on synthetic calibration patients
that are no evaluation case and trained no model (phantom seed 0 with realism, patients 100-119,
44 slices, shipped default and fast models): their largest band was 10.6 cm² (95th percentile 8.0);
the threshold is that maximum rounded up to the next even cm² (measured 2026-12-06 with
``experiments/flag_validation.py --calibrate``)."""
MISSED_MUSCLE_FRACTION = 0.08
"""Smallest band, as a fraction of the predicted muscle area, that raises :func:`missed_muscle`: a
missed band this large leaves the muscle area about 8 % short, the bad-case limit of
``experiments/flag_validation.py``; set from that definition, not fitted."""
SAT_INSIDE_CM2 = 3.0
"""Smallest SAT-labelled area (cm², :meth:`WallProfile.sat_inside_cm2`) inside the abdominal-wall
muscle that raises :func:`sat_inside_ring`. On the synthetic calibration patients of
:data:`MISSED_MUSCLE_CM2` the largest was 0.3 cm² (95th percentile 0); 3 cm² is ten times that,
about 1-3 % of an adult's SAT area at L3. No real slice with this error was at hand to set it on."""
WALL_BAND_MM = (4.0, 20.0)
"""A run of unlabelled muscle-density tissue just inside the wall counts as a missed layer when it
is this thick (mm): thinner is a fascia or partial volume, thicker an organ or a bowel loop lying on
the wall (the internal oblique and transversus are each a few mm to ~1 cm thick)."""
PLAUSIBLE = {"sma_refined_cm2": (40.0, 350.0), "muscle_refined_hu_mean": (-20.0, 100.0), "smi_cm2_m2": (15.0, 90.0)}
"""Ranges outside which a number is implausible for an adult at L3."""


@dataclass
class SliceContext:
    """What the checks look at for one measured slice."""

    hu: np.ndarray
    labels: np.ndarray
    probs: np.ndarray | None
    spacing_mm: tuple[float, float]
    meta: ImageMeta
    """What is known of the image (its DICOM acquisition fields: KVP, SliceThickness, ContrastBolusAgent, ...)."""
    measures: dict[str, Any]
    """Areas, densities and SMI (from composition.measure_slice and assess)."""
    level: dict[str, Any]
    """How the slice was chosen (level_source, l3_method, l3_confidence, l3_notes, input_slices)."""
    body: np.ndarray | None = None
    """The body mask, when the caller has it (computed once otherwise)."""
    profile: Any = None
    """The :class:`WallProfile` of the slice, computed on first use by the wall checks."""

    def body_mask(self) -> np.ndarray | None:
        """Body mask of the slice, computed on first use and cached."""
        if self.body is None:
            self.body = body_mask(self.hu)
        return self.body


def body_cut_by_field_of_view(c: SliceContext) -> str | None:
    """The body outline touches the image edge or the reconstruction circle."""
    body = c.body_mask()
    if body is None:
        return None
    body = fill_holes(body)
    outline = body & ~ndimage.binary_erosion(body)
    n = int(outline.sum())
    if n == 0:
        return None
    rows, cols = body.shape
    rr, cc = np.nonzero(outline)
    at_edge = (rr <= 1) | (rr >= rows - 2) | (cc <= 1) | (cc >= cols - 2)
    radius = min(rows, cols) / 2.0
    corner = c.hu[:3, :3]
    circle = bool(np.all(corner <= -1023.5))  # padding outside a reconstruction circle
    beyond = np.hypot(rr - (rows - 1) / 2, cc - (cols - 1) / 2) >= radius - 2.0 if circle else np.zeros_like(at_edge)
    lost = float(np.mean(at_edge | beyond))
    if lost < 0.02:
        return None
    return (f"body cut by the field of view: {lost:.0%} of the body outline lies on the edge of the image or of the "
            "reconstruction circle, so SAT (and perhaps muscle) beyond it is missing")


def iv_contrast(c: SliceContext) -> str | None:
    """IV contrast: the DICOM header says so, or a bright round vessel (the aorta) is seen."""
    agent = str(c.meta.acquisition.contrast_agent or "").strip()
    why = []
    if agent and agent.upper() not in ("NONE", "NO", "N", "0"):
        why.append(f"ContrastBolusAgent '{agent}'")
    hu_vessel = _bright_round_vessel(c)
    if hu_vessel is not None:
        why.append(f"a round vessel at {hu_vessel:.0f} HU")
    if not why:
        return None
    return (f"IV contrast ({' and '.join(why)}): contrast raises muscle density, so read the myosteatosis "
            "verdict with care")


def _bright_round_vessel(c: SliceContext) -> float | None:
    """Mean HU of a round 1-12 cm² region of 150-500 HU inside the body, not bone (the aorta
    with contrast), or None."""
    body = c.body_mask()
    if body is None:
        return None
    bright = (c.hu > 150) & (c.hu < 500) & fill_holes(body)
    bright &= ~ndimage.binary_dilation(c.hu > 600, iterations=2)
    regions, n = ndimage.label(ndimage.binary_opening(bright, iterations=1))
    pixel_cm2 = pixel_area_cm2(c.spacing_mm)
    for k, sl in enumerate(ndimage.find_objects(regions), start=1):
        m = regions[sl] == k
        area = m.sum() * pixel_cm2
        if not 1.0 <= area <= 12.0:
            continue
        h, w = m.shape[0] * c.spacing_mm[0], m.shape[1] * c.spacing_mm[1]
        if 0.7 <= h / max(w, 1e-6) <= 1.4 and m.sum() / (math.pi / 4 * m.shape[0] * m.shape[1]) > 0.8:
            return float(c.hu[sl][m].mean())
    return None


def tube_voltage(c: SliceContext) -> str | None:
    """Flag when the tube voltage (KVP) is known and not 120 kVp, the voltage of the published cut-offs."""
    kvp = c.meta.acquisition.kvp
    try:
        value = float(kvp)
    except (TypeError, ValueError):
        return None
    if abs(value - 120.0) < 1.0:
        return None
    return (f"tube voltage {value:g} kVp, not 120: HU (and so the refined areas and muscle density) shift with kVp; "
            "the published cut-offs were set at 120 kVp")


def slice_thickness(c: SliceContext) -> str | None:
    """Flag when the slice thickness is known and above 5 mm."""
    try:
        value = float(c.meta.acquisition.slice_thickness)
    except (TypeError, ValueError):
        return None
    if value <= 5.0:
        return None
    return f"slice thickness {value:g} mm (> 5 mm): partial volume blurs fat and muscle"


def implausible_numbers(c: SliceContext) -> str | None:
    """Flag measures outside the plausible adult ranges at L3, or muscle + SAT + VAT areas (cm²) exceeding the
    body area."""
    odd = []
    for key, (lo, hi) in PLAUSIBLE.items():
        v = c.measures.get(key)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            continue
        if not lo <= float(v) <= hi:
            odd.append(f"{key} {float(v):.1f} outside {lo:g}-{hi:g}")
    body = c.body_mask()
    if body is not None:
        body_cm2 = float(fill_holes(body).sum()) * pixel_area_cm2(c.spacing_mm)
        tissue = sum(float(c.measures.get(k) or 0.0) for k in ("sma_cm2", "sat_cm2", "vat_cm2"))
        if tissue > 1.02 * body_cm2:
            odd.append(f"muscle + SAT + VAT ({tissue:.0f} cm²) exceed the body ({body_cm2:.0f} cm²)")
    return "implausible for an adult at L3: " + "; ".join(odd) if odd else None


def broken_muscle_ring(c: SliceContext) -> str | None:
    """The abdominal wall and back muscles should surround the cavity: rays from the body centre
    that meet no muscle mean a broken ring."""
    muscle = c.labels == 1
    if muscle.sum() < 20:
        return "almost no muscle segmented"
    body = c.body_mask()
    if body is None:
        return None
    rr, cc = np.nonzero(body)
    r0, c0 = rr.mean(), cc.mean()
    mr, mc = np.nonzero(muscle)
    angles = np.floor((np.degrees(np.arctan2(mr - r0, mc - c0)) + 180.0) / 5.0).astype(int) % 72
    covered = np.unique(angles).size / 72.0
    if covered >= 0.8:
        return None
    return f"broken muscle ring: muscle lies in only {covered:.0%} of the directions around the body centre"


@dataclass
class WallProfile:
    """What lies just inside the abdominal-wall muscle, ray by ray from the body centre
    (:func:`wall_band_profile`)."""

    band_mm: np.ndarray
    """(rays,) thickness (mm) of unlabelled muscle-density tissue (not muscle, not SAT, -29..150 HU)
    starting within a thin fat plane inside the wall's inner edge; 0 where none or no wall."""
    sat_inside_mm: np.ndarray
    """(rays,) length (mm) of SAT-labelled samples more than 2 mm inside the wall's inner edge."""
    inner_mm: np.ndarray
    """(rays,) distance (mm) from the body centre to the wall's inner edge (NaN: no muscle on the ray)."""
    anterior: np.ndarray
    """(rays,) bool: the ray points into the anterior two thirds (anterior at the top of the image)."""
    ray_deg: float
    """Angle between neighbouring rays (degrees)."""
    centre: tuple[float, float] = (0.0, 0.0)
    """(row, col) of the body centre the rays start from (pixels)."""
    band_outer_mm: np.ndarray | None = None
    """(rays,) distance (mm) from the centre to the outer end of each ray's band."""

    def band_hits(self) -> np.ndarray:
        """(rays,) bool: rays whose band counts (anterior, :data:`WALL_BAND_MM` thick)."""
        lo, hi = WALL_BAND_MM
        return self.anterior & (self.band_mm >= lo) & (self.band_mm <= hi)

    def band_cm2(self) -> float:
        """Area (cm²) of the rays' muscle-density runs of :data:`WALL_BAND_MM` thickness, anterior rays only."""
        hit = self.band_hits()
        return float(np.sum(self.band_mm[hit] * self._arc_mm()[hit])) / 100.0

    def band_arc_cm(self) -> float:
        """Length (cm) of wall along which such a band lies."""
        hit = self.band_hits()
        return float(np.sum(self._arc_mm()[hit])) / 10.0

    def sat_inside_cm2(self) -> float:
        """Area (cm²) of SAT-labelled tissue inside the wall, all rays."""
        return float(np.sum(self.sat_inside_mm * self._arc_mm())) / 100.0

    def _arc_mm(self) -> np.ndarray:
        """Width (mm) of each ray's sector at the wall's inner edge (midway into a band)."""
        return np.deg2rad(self.ray_deg) * np.nan_to_num(self.inner_mm)


def wall_band_profile(hu: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float], body: np.ndarray,
                      n_rays: int = 180, step_mm: float = 0.5, gap_mm: float = 1.5, plane_mm: float = 3.0,
                      max_band_mm: float = 30.0) -> WallProfile:
    """Walk ``n_rays`` rays outwards from the centre of ``body`` (canonical orientation, anterior at
    the top), sampled every ``step_mm``: on each, the outermost muscle run (gaps up to ``gap_mm``
    bridged) is the wall; inward of its inner edge, after a fat plane of at most ``plane_mm``, the
    run of muscle-density tissue the model left unlabelled (or called VAT) is measured up to
    ``max_band_mm``, and SAT labels more than 2 mm inside the edge are counted. ``hu`` in HU,
    ``spacing_mm`` the (row, col) pixel size in mm."""
    rows, cols = labels.shape
    rr, cc = np.nonzero(body)
    r0, c0 = rr.mean(), cc.mean()
    reach = float(np.max(np.hypot((rr - r0) * spacing_mm[0], (cc - c0) * spacing_mm[1]))) + 2 * step_mm
    radius = np.arange(0.0, reach, step_mm)
    theta = np.deg2rad(np.arange(n_rays) * 360.0 / n_rays)  # 0: anterior, 90: image right
    y = np.rint(r0 - np.outer(np.cos(theta), radius) / spacing_mm[0]).astype(int)
    x = np.rint(c0 + np.outer(np.sin(theta), radius) / spacing_mm[1]).astype(int)
    inside = (y >= 0) & (y < rows) & (x >= 0) & (x < cols)
    y, x = np.clip(y, 0, rows - 1), np.clip(x, 0, cols - 1)
    lab, val = labels[y, x], hu[y, x]
    lab = np.where(inside, lab, 0)
    muscle = lab == 1
    dense = inside & (lab != 1) & (lab != 2) & (val >= -29.0) & (val <= 150.0)
    gap = max(1, int(round(gap_mm / step_mm)))
    bridge = np.ones((1, gap + 1), bool)
    muscle_c = ndimage.binary_closing(muscle, bridge) | muscle
    dense_c = ndimage.binary_closing(dense, bridge) | dense
    n = radius.size
    j = np.arange(n)[None, :]
    has = muscle.any(axis=1)
    outer = np.where(has, n - 1 - np.argmax(muscle[:, ::-1], axis=1), 0)
    # inner edge: one past the last non-muscle sample inward of the outermost muscle run
    edge = np.where(~muscle_c & (j < outer[:, None]), j, -1).max(axis=1) + 1
    plane = int(round(plane_mm / step_mm))
    near = dense & (j < edge[:, None]) & (j >= (edge - plane)[:, None])
    start = np.where(near, j, -1).max(axis=1)  # outermost dense sample within the fat plane
    stop = np.where(~dense_c & (j < start[:, None]), j, -1).max(axis=1)
    band = np.where(has & (start >= 0), (start - stop) * step_mm, 0.0)
    band = np.minimum(band, max_band_mm + step_mm)
    margin = int(round(2.0 / step_mm))
    sat = (lab == 2) & (j < (edge - margin)[:, None])
    sat_mm = np.where(has, sat.sum(axis=1) * step_mm, 0.0)
    inner = np.where(has, edge * step_mm, np.nan)
    deg = np.degrees(theta)
    return WallProfile(band, sat_mm, inner, (deg <= 120.0) | (deg >= 240.0), 360.0 / n_rays, (float(r0), float(c0)),
                       np.where(start >= 0, start * step_mm, np.nan))


def _wall_profile(c: SliceContext) -> WallProfile | None:
    """The slice's :func:`wall_band_profile`, computed once per context; None without muscle or body."""
    if c.profile is None:
        body = c.body_mask()
        if body is None or not body.any() or int((c.labels == 1).sum()) < 20:
            return None
        c.profile = wall_band_profile(c.hu, c.labels, c.spacing_mm, body)
    return c.profile


def missed_muscle(c: SliceContext) -> str | None:
    """Unlabelled muscle-density tissue as a band just inside the anterior or lateral abdominal wall
    (the internal oblique and transversus the model tends to call background next to bowel): flagged
    when the band covers at least :data:`MISSED_MUSCLE_CM2` and :data:`MISSED_MUSCLE_FRACTION` of
    the predicted muscle area."""
    profile = _wall_profile(c)
    if profile is None:
        return None
    band = profile.band_cm2()
    muscle = float((c.labels == 1).sum()) * pixel_area_cm2(c.spacing_mm)
    if band < MISSED_MUSCLE_CM2 or band < MISSED_MUSCLE_FRACTION * muscle:
        return None
    return (f"possibly missed muscle: about {band:.0f} cm² of muscle-density tissue ({band / muscle:.0%} of the "
            f"segmented muscle) lies unlabelled along {profile.band_arc_cm():.0f} cm of the inner side of the "
            "abdominal wall: muscle area may be underestimated; check the overlay")


def sat_inside_ring(c: SliceContext) -> str | None:
    """SAT labelled inside the abdominal-wall muscle, where only VAT belongs (e.g. fat around the
    colon called SAT): flagged from :data:`SAT_INSIDE_CM2`."""
    profile = _wall_profile(c)
    if profile is None:
        return None
    area = profile.sat_inside_cm2()
    if area < SAT_INSIDE_CM2:
        return None
    return (f"SAT inside the muscle wall: about {area:.0f} cm² labelled SAT lies inside the abdominal-wall muscle, "
            "where fat is visceral: SAT may be overestimated and VAT underestimated; check the overlay")


def low_confidence(c: SliceContext) -> str | None:
    """Flag when the mean entropy of the model's probabilities over tissue pixels exceeds
    :data:`ENTROPY_THRESHOLD` (nats)."""
    if c.probs is None or not (c.labels > 0).any():
        return None
    entropy = mean_tissue_entropy(c.probs, c.labels)
    if entropy <= ENTROPY_THRESHOLD:
        return None
    return f"low model confidence: mean entropy {entropy:.2f} nats over tissue pixels (threshold {ENTROPY_THRESHOLD})"


def l3_uncertain(c: SliceContext) -> str | None:
    """Flag when L3 was located with less than high confidence (with the localiser's notes)."""
    confidence = c.level.get("l3_confidence")
    if confidence in (None, "", Confidence.HIGH):
        return None
    notes = c.level.get("l3_notes") or ""
    return f"L3 found with {confidence} confidence" + (f": {notes}" if notes else "")


def level_not_verified(c: SliceContext) -> str | None:
    """A slice measured as given (a single slice, or every slice of a short input): nothing
    checked that it lies at L3 (the localiser needs a whole series; a manifest's ``slice_index``
    vouches for the level)."""
    if c.level.get("level_source") != LevelSource.AS_GIVEN:
        return None
    n = c.level.get("input_slices")
    given = ("a single slice was given" if n in (None, 1) else
             f"a short input of {n} slices was measured slice by slice")
    return (f"vertebral level not verified ({given}): check that the slice lies at L3, or name it with a "
            "manifest's slice_index, or give the whole series so that the localiser finds L3")


CHECKS = (body_cut_by_field_of_view, iv_contrast, tube_voltage, slice_thickness, implausible_numbers,
          broken_muscle_ring, missed_muscle, sat_inside_ring, low_confidence, l3_uncertain, level_not_verified)


def review_flags(c: SliceContext) -> list[str]:
    """All reasons to review this slice (empty: none)."""
    return [r for check in CHECKS if (r := check(c))]


def mean_tissue_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax entropy (nats) over the pixels labelled muscle, SAT or VAT."""
    tissue = labels > 0
    if not tissue.any():
        return 0.0
    p = np.clip(probs[:, tissue], 1e-7, 1.0)
    return float(np.mean(-(p * np.log(p)).sum(axis=0)))
