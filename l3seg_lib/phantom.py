"""Synthetic axial CT slices at L3 with ground-truth labels: the built-in default data set.

Each patient gets a body habitus (sex, age, height, BMI), from which the geometry follows:
skin and a subcutaneous fat ring of varying thickness (Scarpa's fascia inside it), the
abdominal wall muscles (rectus with linea alba, obliques), psoas, quadratus lumborum and
paraspinal muscles, the L3 vertebra (cortex, cancellous bone, canal, posterior elements),
kidneys, a liver tip, colon and small bowel loops with mesenteric (visceral) fat between
them, aorta, IVC and mesenteric vessels, and the CT table. HU are drawn from physiological
ranges (muscle 20-55 HU mean, fat about -90 to -110 HU, bone > 200 HU; optional IV and oral
contrast), then blurred (partial volume) and overlaid with correlated CT-like noise whose
level grows with body size. Pixel spacing is 0.6-1.0 mm per patient.

Output (all readable by the normal loaders): one DICOM series per patient
(``dicom/<patient>/``, 1-3 L3 slices 3 mm apart), one NIfTI label volume per patient with
ITK-SNAP-style anatomical labels (``masks/<patient>.nii.gz``, described in ``labels.txt``),
``manifest.csv`` and ``clinical.csv``. :data:`PHANTOM_LABEL_MAP` maps the anatomical labels
to the four classes. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from .io import dicom_affine, write_nifti_labels
from .labels import LabelDescription, write_itksnap_labels

# anatomical source labels written to the masks (ITK-SNAP style)
AIR, PSOAS, PARASPINAL, QL, WALL, SAT, VAT, BONE, KIDNEY, LIVER, BOWEL, VESSEL, OTHER = range(13)
LABELS = [
    LabelDescription(AIR, "Clear Label", (0, 0, 0)),
    LabelDescription(PSOAS, "psoas", (220, 60, 60)),
    LabelDescription(PARASPINAL, "paraspinal (erector spinae, multifidus)", (200, 40, 40)),
    LabelDescription(QL, "quadratus lumborum", (240, 100, 80)),
    LabelDescription(WALL, "abdominal wall and other muscle", (255, 120, 120)),
    LabelDescription(SAT, "subcutaneous fat", (250, 220, 90)),
    LabelDescription(VAT, "visceral fat", (90, 200, 240)),
    LabelDescription(BONE, "vertebra", (240, 240, 240)),
    LabelDescription(KIDNEY, "kidney", (150, 90, 200)),
    LabelDescription(LIVER, "liver", (150, 80, 40)),
    LabelDescription(BOWEL, "bowel", (120, 180, 90)),
    LabelDescription(VESSEL, "vessel", (200, 0, 120)),
    LabelDescription(OTHER, "other soft tissue (skin, linea alba, spinal canal)", (128, 128, 128)),
]
PHANTOM_LABEL_MAP = {
    "background": [AIR, BONE, KIDNEY, LIVER, BOWEL, VESSEL, OTHER],
    "muscle": [PSOAS, PARASPINAL, QL, WALL],
    "sat": [SAT],
    "vat": [VAT],
}
SLICE_GAP_MM = 3.0


@dataclass
class PatientSpec:
    """Habitus and acquisition of one synthetic patient (lengths in mm, HU in HU)."""

    patient_id: str
    sex: str
    age: int
    height_m: float
    weight_kg: float
    bmi: float
    n_slices: int
    spacing_mm: float
    iv_contrast: bool
    oral_contrast: bool
    mirrored_storage: bool
    """Stored with the row direction pointing to the patient's right (exercises orientation)."""
    muscle_scale: float
    vat_level: float
    sat_mm: float
    muscle_hu: float
    sat_hu: float
    vat_hu: float
    noise_sd: float
    seed: int


def make_patient(index: int, seed: int, matrix: int = 512, slices: tuple[int, int] = (1, 3)) -> PatientSpec:
    rng = np.random.default_rng([seed, index, 1])
    sex = "M" if rng.random() < 0.5 else "F"
    age = int(rng.integers(28, 88))
    height = rng.normal(1.76, 0.07) if sex == "M" else rng.normal(1.63, 0.065)
    height = float(np.clip(height, 1.45, 2.02))
    bmi = float(np.clip(np.exp(rng.normal(np.log(26.0), 0.2)), 16.5, 45.0))
    weight = bmi * height**2
    # muscle: SMI target drawn around published means, lower with age; scale ~ sqrt(area)
    smi = (rng.normal(50.0, 8.0) if sex == "M" else rng.normal(40.0, 6.5)) - 0.12 * (age - 50) + 0.35 * (bmi - 25)
    smi = float(np.clip(smi, 26.0, 75.0))
    muscle_scale = math.sqrt(smi * height**2 / (165.0 if sex == "M" else 190.0))
    vat = 0.06 + 0.03 * (bmi - 19.0) * (1.25 if sex == "M" else 0.8) + 0.003 * (age - 45) + rng.normal(0, 0.05)
    sat_mm = (3.0 + 2.1 * (bmi - 17.5) * (1.45 if sex == "F" else 0.95)) * rng.lognormal(0, 0.2)
    muscle_hu = 48.0 - 0.28 * (age - 40) - 0.55 * (bmi - 25) + rng.normal(0, 5.0)
    lo, hi = slices
    return PatientSpec(
        patient_id=f"L3P{index + 1:04d}",
        sex=sex, age=age, height_m=round(height, 3), weight_kg=round(weight, 1), bmi=round(bmi, 2),
        n_slices=int(rng.integers(lo, hi + 1)),
        spacing_mm=float(rng.uniform(0.6, 1.0)),
        iv_contrast=bool(rng.random() < 0.55),
        oral_contrast=bool(rng.random() < 0.25),
        mirrored_storage=bool(rng.random() < 0.1),
        muscle_scale=float(muscle_scale),
        vat_level=float(np.clip(vat, 0.03, 0.8)),
        sat_mm=float(np.clip(sat_mm, 2.5, 85.0)),
        muscle_hu=float(np.clip(muscle_hu, 12.0, 62.0)),
        sat_hu=float(rng.normal(-104.0, 6.0)),
        vat_hu=float(rng.normal(-92.0, 6.0)),
        noise_sd=0.0,
        seed=int(rng.integers(0, 2**31 - 1)),
    )


# --------------------------------------------------------------------------------------------
# drawing helpers (world coordinates in mm: x to the patient's left, y posterior)


class Canvas:
    def __init__(self, n: int, spacing: float, cx: float, cy: float):
        self.n, self.s = n, spacing
        c = (np.arange(n) - n / 2 + 0.5) * spacing
        self.x = (c + cx)[None, :].astype(np.float32)
        self.y = (c + cy)[:, None].astype(np.float32)
        self.hu = np.full((n, n), -1000.0, dtype=np.float32)
        self.lab = np.zeros((n, n), dtype=np.uint8)

    def bbox(self, x0, x1, y0, y1):
        s, n = self.s, self.n
        c0 = int(np.clip(np.floor((x0 - self.x[0, 0]) / s), 0, n))
        c1 = int(np.clip(np.ceil((x1 - self.x[0, 0]) / s) + 1, 0, n))
        r0 = int(np.clip(np.floor((y0 - self.y[0, 0]) / s), 0, n))
        r1 = int(np.clip(np.ceil((y1 - self.y[0, 0]) / s) + 1, 0, n))
        return slice(r0, r1), slice(c0, c1)

    def ellipse(self, cx, cy, a, b, rot=0.0, wobble=None):
        """(region slices, boolean mask) of a rotated, optionally wobbly ellipse."""
        r = max(a, b) * (1.25 if wobble is not None else 1.0) + self.s
        rs, cs = self.bbox(cx - r, cx + r, cy - r, cy + r)
        dx, dy = self.x[:, cs] - cx, self.y[rs, :] - cy
        cr, sr = math.cos(rot), math.sin(rot)
        u = dx * cr + dy * sr
        v = -dx * sr + dy * cr
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        if wobble is not None:
            t = np.arctan2(v / b, u / a)
            lim = 1.0 + sum(amp * np.cos(k * t + ph) for k, amp, ph in wobble)
            return (rs, cs), rho <= lim
        return (rs, cs), rho <= 1.0

    def paint(self, region, mask, label, hu, only=None):
        rs, cs = region
        if only is not None:
            mask = mask & np.isin(self.lab[rs, cs], only)
        self.lab[rs, cs][mask] = label
        if np.ndim(hu):
            self.hu[rs, cs][mask] = hu[rs, cs][mask] if hu.shape == self.hu.shape else hu[mask]
        else:
            self.hu[rs, cs][mask] = hu


def _wobble(rng, kmax=4, amp=0.06):
    return [(k, rng.uniform(0, amp) / k**0.5, rng.uniform(0, 2 * math.pi)) for k in range(2, kmax + 1)]


def _radial(theta, a, b_ant, b_post, p_ant, p_post):
    """Superellipse radius with different anterior/posterior depth and squareness."""
    c, s = np.abs(np.cos(theta)), np.sin(theta)
    b = np.where(s > 0, b_post, b_ant)
    p = np.where(s > 0, p_post, p_ant)
    return (np.power(c / a, p) + np.power(np.abs(s) / b, p)) ** (-1.0 / p)


def _fourier(theta, rng, amp, kmax=5):
    out = np.ones_like(theta)
    for k in range(1, kmax + 1):
        out += rng.uniform(-amp, amp) / k**0.7 * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    return out


def render_slice(spec: PatientSpec, slice_index: int, matrix: int = 512) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render one slice: (HU float32, anatomical labels uint8, info) in canonical orientation."""
    prng = np.random.default_rng([spec.seed, 0])  # patient-level shapes, identical for every slice
    srng = np.random.default_rng([spec.seed, slice_index + 1])  # slice-level variation
    dz = (slice_index - (spec.n_slices - 1) / 2) * SLICE_GAP_MM  # mm from the middle of L3
    k = spec.muscle_scale * (1.0 + 0.004 * dz)
    v = spec.vat_level

    # ---- body-level geometry (mm)
    t_rect, t_obl, t_post = 9.5 * k, 12.5 * k, 6.0 * k
    a_cav = 92.0 + 70.0 * v + prng.normal(0, 5) + (6 if spec.sex == "M" else 0)
    b_cav = 60.0 + 75.0 * v + prng.normal(0, 4)
    kb = float(np.clip(prng.normal(1.0 if spec.sex == "M" else 0.9, 0.05), 0.8, 1.15))
    vb_a, vb_b = 23.0 * kb, 16.5 * kb
    para_a, para_b = 24.0 * k, 20.0 * k
    d_v = 0.22 * b_cav + 6.0  # vertebral body centre, posterior of body centre
    d_post = d_v + vb_b + 19.0 + 2 * para_b + 3.0  # posterior extent of the muscle envelope
    a_m = a_cav + t_obl
    b_ant_m = b_cav + t_rect
    sat_mean = spec.sat_mm * (1.0 + 0.01 * dz)
    # field of view from slice-independent sizes (+5%), so all slices of a patient share spacing
    a_m0 = a_cav + 12.5 * spec.muscle_scale
    half_w = a_m0 + spec.sat_mm * 1.25 + 3
    half_d = max(b_cav + 9.5 * spec.muscle_scale, d_v + vb_b + 22.0 + 40.0 * spec.muscle_scale) + spec.sat_mm * 1.1 + 3
    fov_needed = 2 * max(half_w, half_d) * 1.05 + 40.0
    # 1.0 mm at 512 px is the largest field of view (512 mm); larger bodies are truncated at the
    # image edge, as on real scanners
    spacing = min(max(spec.spacing_mm, fov_needed / matrix), 1.0 * 512 / matrix)
    cv = Canvas(matrix, spacing, cx=prng.normal(0, 6), cy=prng.normal(-8, 6))
    cx0, cy0 = 0.0, 0.0  # body centre
    vx, vy = cx0 + srng.normal(0, 0.5), cy0 + d_v

    # polar description around the body centre
    dx, dy = cv.x - cx0, cv.y - cy0
    theta = np.arctan2(dy, dx)
    rho = np.sqrt(dx**2 + dy**2)
    grid = np.linspace(-math.pi, math.pi, 721)
    phi = np.abs((grid + math.pi / 2 + math.pi) % (2 * math.pi) - math.pi)  # 0 anterior .. pi posterior
    r_m = _radial(grid, a_m, b_ant_m, d_post, 2.1, 2.8) * _fourier(grid, prng, 0.025)
    t_wall = np.interp(phi, [0, 0.35, 0.55, 0.9, 1.3, 1.8, 2.3, math.pi],
                       [t_rect, t_rect, 0.75 * t_rect, 0.9 * t_obl, t_obl, 0.8 * t_obl, t_post, t_post])
    r_cav = r_m - t_wall
    sat_shape = np.interp(phi, [0, 0.6, 1.2, 1.8, 2.5, math.pi], [1.15, 1.05, 0.9, 1.05, 1.2, 0.9])
    t_sat = np.maximum(2.0, sat_mean * sat_shape * _fourier(grid, prng, 0.15, kmax=4))
    skin = 1.8 + prng.uniform(0, 0.8)
    r_b = r_m + t_sat + skin

    def at(values):
        return np.interp(theta, grid, values).astype(np.float32)

    R_b, R_m, R_cav, T_sat = at(r_b), at(r_m), at(r_cav), at(t_sat)
    inside_body = rho <= R_b
    body_post = float(cy0 + r_b[np.argmin(np.abs(grid - math.pi / 2))])

    # ---- table (outside the body, label 0)
    ty = body_post + 1.0
    curve = 0.0009 * (cv.x - cx0) ** 2
    table_top = (cv.y >= ty + curve) & (cv.y <= ty + curve + 2.0) & (np.abs(cv.x - cx0) < 230)
    table_core = (cv.y > ty + curve + 2.0) & (cv.y <= ty + curve + 14.0) & (np.abs(cv.x - cx0) < 225)
    cv.hu[table_core] = -550.0
    cv.hu[table_top] = 150.0

    # ---- soft tissue envelope
    rng_tex = np.random.default_rng([spec.seed, 100 + slice_index])
    smooth = gaussian_filter(rng_tex.standard_normal((matrix, matrix)).astype(np.float32), 6.0)
    smooth *= 6.0 / max(float(smooth.std()), 1e-6)
    cv.lab[inside_body] = OTHER
    cv.hu[inside_body] = 40.0
    sat_zone = rho <= R_b - skin
    cv.lab[sat_zone] = SAT
    cv.hu[sat_zone] = spec.sat_hu + 0.6 * smooth[sat_zone]
    # Scarpa's fascia and a few septa inside the SAT (stay SAT, soft-tissue HU)
    if sat_mean > 8:
        frac = prng.uniform(0.35, 0.55)
        scarpa = sat_zone & (np.abs(rho - (R_m + frac * T_sat)) < 0.5 * max(spacing, 0.7)) & (rho > R_m)
        cv.hu[scarpa] = prng.uniform(-20, 10)
    musc_zone = rho <= R_m
    cv.lab[musc_zone] = WALL
    cv.hu[musc_zone] = spec.muscle_hu + smooth[musc_zone]

    # linea alba (fibrous, not muscle)
    gap = 3.0 + 10.0 * v + prng.uniform(0, 3)
    la = musc_zone & (rho > R_cav) & (np.abs(cv.x - cx0) < gap / 2) & (cv.y < cy0)
    cv.lab[la] = OTHER
    cv.hu[la] = 35.0
    # fat planes between oblique layers (IMAT, inside the muscle compartment)
    for f in (0.35, 0.68):
        plane = musc_zone & (rho > R_cav) & (np.abs(rho - (R_cav + f * (R_m - R_cav))) < 0.45 * max(spacing, 0.8))
        lateral = np.abs(np.cos(theta)) > 0.55
        cv.hu[plane & lateral] = spec.sat_hu + 25

    # ---- abdominal cavity (VAT + organs); posterior limit follows the posterior muscles
    y_lim = vy + vb_b + 2.0 + 30.0 * ((cv.x - vx) / a_cav) ** 2
    cavity = (rho <= R_cav) & (cv.y < y_lim)
    cv.lab[cavity] = VAT
    cv.hu[cavity] = spec.vat_hu + 0.6 * smooth[cavity]

    iv = spec.iv_contrast
    blood = srng.normal(165, 15) if iv else srng.normal(42, 3)

    # ---- organs in the cavity (background class), painted only over VAT
    only_vat = [VAT]
    # kidneys (lower poles at L3)
    for side in (-1, 1):
        if prng.random() < 0.05:
            continue
        ka, kb_ = (20.0 + 4 * prng.random()) * (1 - 0.02 * dz), 27.0 + 5 * prng.random()
        kx = vx + side * (vb_a + 36.0 + 14.0 * v + prng.normal(0, 3))
        ky = vy - 6.0 + prng.normal(0, 3)
        rim = 3.0 + 8.0 * v  # perirenal fat
        reg, m = cv.ellipse(kx, ky, ka + rim, kb_ + rim, rot=side * 0.5)
        cv.paint(reg, m, VAT, spec.vat_hu, only=[VAT, WALL])
        reg, m = cv.ellipse(kx, ky, ka, kb_, rot=side * 0.5, wobble=_wobble(prng, amp=0.05))
        cv.paint(reg, m, KIDNEY, srng.normal(170, 12) if iv else srng.normal(32, 3), only=[VAT, WALL])
        reg, m = cv.ellipse(kx - side * ka * 0.35, ky - 3, ka * 0.3, kb_ * 0.35, rot=side * 0.5)
        cv.paint(reg, m, VAT, spec.vat_hu, only=[KIDNEY])
    # liver tip on the patient's right (negative x)
    if prng.random() < 0.55:
        la_, lb_ = 14 + 20 * prng.random() - 1.5 * dz, 20 + 20 * prng.random()
        if la_ > 6:
            reg, m = cv.ellipse(cx0 - 0.72 * a_cav, cy0 - 0.05 * b_cav, la_, lb_, rot=0.3,
                                wobble=_wobble(prng))
            cv.paint(reg, m, LIVER, srng.normal(108, 6) if iv else srng.normal(56, 4), only=only_vat)
    # great vessels, SMA/SMV, duodenum
    age_f = (spec.age - 30) / 60
    ax, ay, ar = vx + 14.0, vy - vb_b - 12.0, 9.0 + 4.0 * age_f + srng.normal(0, 0.5)
    reg, m = cv.ellipse(ax, ay, ar, ar)
    cv.paint(reg, m, VESSEL, blood, only=only_vat)
    if spec.age > 55:
        for _ in range(int(srng.integers(0, 4))):
            t = srng.uniform(0, 2 * math.pi)
            reg, m = cv.ellipse(ax + ar * 0.92 * math.cos(t), ay + ar * 0.92 * math.sin(t), 1.2, 1.2)
            cv.paint(reg, m, VESSEL, srng.uniform(400, 800), only=[VESSEL])
    reg, m = cv.ellipse(vx - 21.0, vy - vb_b - 10.0, 12.0, 7.5, rot=0.2)
    cv.paint(reg, m, VESSEL, blood - (10 if iv else 0), only=only_vat)
    smv_y = ay - ar - 28.0 - 12 * v
    for ox, rr, hu in ((4.0, 3.2, blood), (-8.0, 4.5, blood - 15)):
        reg, m = cv.ellipse(vx + ox, smv_y, rr, rr)
        cv.paint(reg, m, VESSEL, hu, only=only_vat)
    wall_hu = srng.normal(105, 10) if iv else srng.normal(42, 4)
    if srng.random() < 0.65:
        reg, m = cv.ellipse(vx - 4.0, ay - ar - 12.0, 34.0, 7.0, rot=srng.normal(0, 0.1))
        cv.paint(reg, m, BOWEL, wall_hu, only=only_vat)
        reg, m = cv.ellipse(vx - 4.0, ay - ar - 12.0, 31.0, 4.5, rot=0)
        cv.paint(reg, m, BOWEL, srng.normal(12, 5), only=[BOWEL])

    def lumen_hu(kind, region, mask):
        rs, cs = region
        h = np.empty(int(mask.sum()), dtype=np.float32)
        if kind == "fluid":
            h[:] = srng.normal(12, 5)
        elif kind == "contrast":
            h[:] = srng.uniform(180, 420)
        elif kind == "stool":
            mottled = srng.random(h.size) < 0.3
            h[:] = srng.normal(20, 25, h.size)
            h[mottled] = srng.uniform(-950, -400, int(mottled.sum()))
        else:
            h[:] = srng.normal(38, 4)
        return h

    def bowel(x, y, r, kind, colon=False):
        wall = 2.0 + 1.0 * srng.random()
        rot = srng.uniform(0, math.pi)
        ecc = srng.uniform(1.0, 1.5)
        wob = _wobble(srng, amp=0.08)
        reg, m = cv.ellipse(x, y, r * ecc, r, rot=rot, wobble=wob)
        cv.paint(reg, m, BOWEL, wall_hu, only=only_vat)
        if kind != "collapsed":
            inner_r = max(r - wall, 1.0)
            reg, m = cv.ellipse(x, y, inner_r * ecc, inner_r, rot=rot, wobble=wob)
            m = m & (cv.lab[reg] == BOWEL)
            rs, cs = reg
            cv.hu[rs, cs][m] = lumen_hu(kind, reg, m)
            if kind in ("fluid", "stool") and (colon or srng.random() < 0.25):
                level = y - inner_r * srng.uniform(0.1, 0.8)  # gas rises anteriorly (supine)
                gas = m & (cv.y[rs, :] < level)
                cv.hu[rs, cs][gas] = srng.normal(-985, 10)

    colon_kind = "stool"
    bowel(cx0 - 0.70 * a_cav, cy0 - 0.05 * b_cav, 17 + 8 * srng.random(), colon_kind, colon=True)
    bowel(cx0 + 0.78 * a_cav, cy0 + 0.12 * b_cav, 11 + 7 * srng.random(), colon_kind, colon=True)
    # small bowel loops packed in the anterior cavity; mesenteric fat between them grows with VAT
    gap_mm = 1.0 + 16.0 * v
    loops: list[tuple[float, float, float]] = []
    target = int(45 * (1.0 - 0.55 * v))
    for _ in range(target * 12):
        if len(loops) >= target:
            break
        r = srng.uniform(7.0, 15.0)
        x = srng.uniform(cx0 - a_cav, cx0 + a_cav)
        y = srng.uniform(cy0 - b_cav, vy - vb_b - 8)
        rr = float(np.hypot(x - cx0, y - cy0))
        lim = float(np.interp(math.atan2(y - cy0, x - cx0), grid, r_cav))
        if rr + r * 1.3 > lim or any((x - a) ** 2 + (y - b) ** 2 < (r + c + gap_mm) ** 2 for a, b, c in loops):
            continue
        if (x - ax) ** 2 + (y - ay) ** 2 < (r + ar + 6) ** 2:
            continue
        loops.append((x, y, r))
    for x, y, r in loops:
        u = srng.random()
        kind = "fluid" if u < 0.55 else "collapsed" if u < 0.8 else "stool"
        if kind == "fluid" and spec.oral_contrast and srng.random() < 0.7:
            kind = "contrast"
        bowel(x, y, r, kind)
    # mesenteric vessels in the fat
    for _ in range(int(12 + 25 * v)):
        x = srng.uniform(cx0 - a_cav * 0.8, cx0 + a_cav * 0.8)
        y = srng.uniform(cy0 - b_cav * 0.9, vy - vb_b)
        r = srng.uniform(1.0, 2.6)
        reg, m = cv.ellipse(x, y, r, r)
        cv.paint(reg, m, VESSEL, blood, only=only_vat)

    # ---- posterior muscles and the spine (painted over everything inside the envelope)
    inner = [WALL, VAT, KIDNEY, OTHER, SAT]
    for side in (-1, 1):
        reg, m = cv.ellipse(vx + side * (vb_a + 13.0 * k), vy - 4.0, 17.0 * k, 14.5 * k, rot=side * 0.35,
                            wobble=_wobble(prng, amp=0.05))
        cv.paint(reg, m, PSOAS, spec.muscle_hu + 3, only=inner)
        reg, m = cv.ellipse(vx + side * (vb_a + 38.0 + 4 * v), vy + 17.0, 17.0 * k, 8.0 * k, rot=-side * 0.45,
                            wobble=_wobble(prng, amp=0.05))
        cv.paint(reg, m, QL, spec.muscle_hu, only=inner)
        reg, m = cv.ellipse(vx + side * (para_a * 1.05 + 3), vy + vb_b + 19.0 + para_b, para_a, para_b,
                            rot=side * 0.15, wobble=_wobble(prng, amp=0.05))
        cv.paint(reg, m, PARASPINAL, spec.muscle_hu - 2, only=inner)
    # refresh muscle texture and add IMAT streaks (stay muscle: they lie in the compartment)
    musc = np.isin(cv.lab, [PSOAS, QL, PARASPINAL])
    cv.hu[musc] += smooth[musc]
    n_streaks = int(np.clip((spec.age - 35) / 8 + (spec.bmi - 24) / 3 + srng.normal(0, 1.5), 0, 14))
    for _ in range(n_streaks):
        side = srng.choice([-1, 1])
        x = vx + side * srng.uniform(10, 45) * k
        y = vy + vb_b + srng.uniform(10, 50) * k
        reg, m = cv.ellipse(x, y, srng.uniform(4, 14), srng.uniform(0.6, 1.6), rot=srng.uniform(0, math.pi))
        cv.paint(reg, m, PARASPINAL, spec.sat_hu + 15, only=[PARASPINAL])

    # vertebra: body with cortex, pedicles/laminae, spinous and transverse processes, canal
    cancellous = 260.0 - 1.6 * (spec.age - 30) + srng.normal(0, 15)
    reg, m = cv.ellipse(vx, vy, vb_a, vb_b, wobble=[(2, 0.03, 0.0)])
    cv.paint(reg, m, BONE, 750.0)
    reg, m = cv.ellipse(vx, vy, vb_a - 1.6, vb_b - 1.6, wobble=[(2, 0.03, 0.0)])
    cv.paint(reg, m, BONE, cancellous)
    canal_y = vy + vb_b + 8.5
    for region_mask in (
        cv.ellipse(vx, canal_y + 2, 14.0, 12.0),  # neural arch
        cv.ellipse(vx, canal_y + 14 + 11.0, 3.5, 15.0),  # spinous process
        cv.ellipse(vx - 24.0, canal_y - 1, 20.0, 3.8, rot=0.12),  # transverse processes
        cv.ellipse(vx + 24.0, canal_y - 1, 20.0, 3.8, rot=-0.12),
    ):
        cv.paint(*region_mask, BONE, srng.normal(520, 60))
    reg, m = cv.ellipse(vx, canal_y, 10.5, 8.0)
    cv.paint(reg, m, OTHER, srng.normal(18, 4))

    # ---- image formation: partial volume blur, then correlated noise
    hu = gaussian_filter(cv.hu, sigma=float(srng.uniform(0.55, 0.85)))
    width_mm = 2 * float(np.max(r_b))
    noise_sd = float(np.clip(9.0 + 0.05 * (width_mm - 250.0), 8.0, 26.0))
    noise = gaussian_filter(srng.standard_normal((matrix, matrix)).astype(np.float32), 0.75)
    noise *= noise_sd / max(float(noise.std()), 1e-6)
    hu = hu + noise
    hu[cv.hu <= -995] = np.maximum(hu[cv.hu <= -995], -1024.0)
    hu = np.clip(hu, -1024.0, 3071.0).astype(np.float32)
    info = {
        "spacing_mm": spacing,
        "origin_x": float(cv.x[0, 0]),
        "origin_y": float(cv.y[0, 0]),
        "z_mm": dz,
        "noise_sd_hu": noise_sd,
    }
    return hu, cv.lab, info


# --------------------------------------------------------------------------------------------
# writing


def _uid(*parts) -> str:
    return generate_uid(entropy_srcs=["l3seg-phantom", *map(str, parts)])


def write_ct_slice(path: Path, hu: np.ndarray, spec: PatientSpec, info: dict, instance: int,
                   seed: int, z_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write a canonical HU slice as a CT DICOM file; returns (row cosine, col cosine, position)."""
    s = info["spacing_mm"]
    n = hu.shape[0]
    x0, y0 = info["origin_x"], info["origin_y"]
    if spec.mirrored_storage:  # columns run toward the patient's right
        stored = hu[:, ::-1]
        row_cos = np.array([-1.0, 0.0, 0.0])
        x_first = x0 + (n - 1) * s
    else:
        stored = hu
        row_cos = np.array([1.0, 0.0, 0.0])
        x_first = x0
    col_cos = np.array([0.0, 1.0, 0.0])
    z = -150.0 + z_mm  # table position of the L3 level (arbitrary)
    position = np.array([x_first, y0, z])

    meta = FileMetaDataset()
    sop = _uid(seed, spec.patient_id, "sop", instance)
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = _uid(seed, spec.patient_id, "study")
    ds.SeriesInstanceUID = _uid(seed, spec.patient_id, "series")
    ds.FrameOfReferenceUID = _uid(seed, spec.patient_id, "for")
    ds.Modality = "CT"
    ds.Manufacturer = "l3seg synthetic phantom"
    ds.ImageComments = "Synthetic image generated by l3seg.phantom; not a patient"
    ds.PatientName = f"PHANTOM^{spec.patient_id}"
    ds.PatientID = spec.patient_id
    ds.PatientSex = spec.sex
    ds.PatientAge = f"{spec.age:03d}Y"
    ds.PatientSize = f"{spec.height_m:.2f}"
    ds.PatientWeight = f"{spec.weight_kg:.1f}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.InstanceNumber = instance
    ds.SeriesDescription = "Abdomen L3 synthetic" + (" IV contrast" if spec.iv_contrast else "")
    ds.BodyPartExamined = "ABDOMEN"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = "120"
    ds.SliceThickness = f"{SLICE_GAP_MM:.1f}"
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.1f}" for v in (*row_cos, *col_cos)]
    ds.SliceLocation = f"{z:.2f}"
    ds.PixelSpacing = [f"{s:.6f}", f"{s:.6f}"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.PixelData = np.clip(np.round(stored) + 1024, 0, 4095).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return row_cos, col_cos, position


def generate(out_dir: str | Path, n_patients: int = 60, seed: int = 0, matrix: int = 512,
             slices_per_patient: tuple[int, int] = (1, 3), progress: bool = True) -> pd.DataFrame:
    """Write the synthetic data set to ``out_dir`` and return its manifest.

    Returns the manifest (``image, mask, patient_id``) also written as ``manifest.csv``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_itksnap_labels(out / "labels.txt", LABELS)
    manifest, clinical = [], []
    for i in tqdm(range(n_patients), desc="phantom", unit="patient", disable=not progress, mininterval=2.0):
        spec = make_patient(i, seed, matrix, slices_per_patient)
        labels, first = [], None
        for j in range(spec.n_slices):
            hu, lab, info = render_slice(spec, j, matrix)
            path = out / "dicom" / spec.patient_id / f"IM{j + 1:04d}.dcm"
            row_cos, col_cos, pos = write_ct_slice(path, hu, spec, info, j + 1, seed, info["z_mm"])
            labels.append(lab[:, ::-1] if spec.mirrored_storage else lab)
            if first is None:
                first = (row_cos, col_cos, pos, info["spacing_mm"])
        row_cos, col_cos, pos, s = first
        affine = dicom_affine(row_cos, col_cos, pos, (s, s), np.cross(row_cos, col_cos) * SLICE_GAP_MM)
        # in the DICOM's stored pixel order with its geometry, as ITK-SNAP saves a segmentation
        write_nifti_labels(np.stack(labels), affine, out / "masks" / f"{spec.patient_id}.nii.gz")
        manifest.append({"image": f"dicom/{spec.patient_id}", "mask": f"masks/{spec.patient_id}.nii.gz",
                         "patient_id": spec.patient_id})
        d = asdict(spec)
        clinical.append({k: d[k] for k in ("patient_id", "sex", "age", "height_m", "weight_kg", "bmi")}
                        | {"iv_contrast": spec.iv_contrast})
    df = pd.DataFrame(manifest)
    df.to_csv(out / "manifest.csv", index=False)
    pd.DataFrame(clinical).to_csv(out / "clinical.csv", index=False)
    return df

