"""The anatomy of a synthetic L3 slice, one function per structure.

:func:`body_frame` lays out the body (outline, muscle envelope, cavity, spine position) and the
canvas; each structure function then paints its labels and HU into the frame's canvas. The
renderer (:mod:`.render`) calls them in a fixed order: later structures paint over earlier
ones, and the order of random draws makes a slice reproducible from its seed.

Random generators: ``prng`` for patient-level shapes (identical for every slice of a patient),
``srng`` for slice-level variation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from l3seg_lib.phantom.canvas import Canvas, fourier, radial, wobble
from l3seg_lib.phantom.labels import (
    BONE,
    BOWEL,
    KIDNEY,
    LIVER,
    OTHER,
    PARASPINAL,
    PSOAS,
    QL,
    SAT,
    VAT,
    VESSEL,
    WALL,
)
from l3seg_lib.phantom.patients import SLICE_GAP_MM, PatientSpec


@dataclass
class Frame:
    """One slice being drawn: the patient, the canvas, the random generators and the body layout
    (lengths in mm, polar outlines around the body centre)."""

    spec: PatientSpec
    slice_index: int
    matrix: int
    cv: Canvas
    prng: np.random.Generator
    srng: np.random.Generator
    dz: float
    """mm from the middle of L3."""
    k: float
    """Muscle size factor at this level."""
    v: float
    """Visceral fat level (0-1)."""
    spacing: float
    a_cav: float
    b_cav: float
    vb_a: float
    vb_b: float
    para_a: float
    para_b: float
    vx: float
    vy: float
    """Vertebral body centre (mm)."""
    theta: np.ndarray
    rho: np.ndarray
    grid: np.ndarray
    r_b: np.ndarray
    r_m: np.ndarray
    r_cav: np.ndarray
    R_b: np.ndarray
    R_m: np.ndarray
    R_cav: np.ndarray
    T_sat: np.ndarray
    sat_mean: float
    skin: float
    cx0: float = 0.0
    cy0: float = 0.0
    smooth: np.ndarray | None = None
    """Smooth tissue texture (HU)."""
    blood: float = 0.0
    """Blood HU (with or without IV contrast)."""
    wall_hu: float = 0.0
    """Bowel wall HU."""
    aorta: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Aorta centre x, y and radius (mm)."""
    extra: dict = field(default_factory=dict)


def body_frame(spec: PatientSpec, slice_index: int, matrix: int = 512) -> Frame:
    """Body-level geometry: sizes from the habitus, the field of view, and the polar outlines of
    the body, the muscle envelope and the abdominal cavity."""
    prng = np.random.default_rng([spec.seed, 0])  # patient-level shapes, identical for every slice
    srng = np.random.default_rng([spec.seed, slice_index + 1, *([spec.scan] if spec.scan else [])])  # slice-level
    dz = (slice_index - (spec.n_slices - 1) / 2) * SLICE_GAP_MM  # mm from the middle of L3
    k = spec.muscle_scale * (1.0 + 0.004 * dz)
    v = spec.vat_level

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
    r_m = radial(grid, a_m, b_ant_m, d_post, 2.1, 2.8) * fourier(grid, prng, 0.025)
    t_wall = np.interp(phi, [0, 0.35, 0.55, 0.9, 1.3, 1.8, 2.3, math.pi],
                       [t_rect, t_rect, 0.75 * t_rect, 0.9 * t_obl, t_obl, 0.8 * t_obl, t_post, t_post])
    r_cav = r_m - t_wall
    sat_shape = np.interp(phi, [0, 0.6, 1.2, 1.8, 2.5, math.pi], [1.15, 1.05, 0.9, 1.05, 1.2, 0.9])
    t_sat = np.maximum(2.0, sat_mean * sat_shape * fourier(grid, prng, 0.15, kmax=4))
    skin = 1.8 + prng.uniform(0, 0.8)
    r_b = r_m + t_sat + skin

    def at(values):
        """``values`` on the angular grid interpolated at each pixel's angle ``theta`` (float32)."""
        return np.interp(theta, grid, values).astype(np.float32)

    return Frame(spec=spec, slice_index=slice_index, matrix=matrix, cv=cv, prng=prng, srng=srng, dz=dz, k=k, v=v,
                 spacing=spacing, a_cav=a_cav, b_cav=b_cav, vb_a=vb_a, vb_b=vb_b, para_a=para_a, para_b=para_b,
                 vx=vx, vy=vy, theta=theta, rho=rho, grid=grid, r_b=r_b, r_m=r_m, r_cav=r_cav,
                 R_b=at(r_b), R_m=at(r_m), R_cav=at(r_cav), T_sat=at(t_sat), sat_mean=sat_mean, skin=skin,
                 cx0=cx0, cy0=cy0)


def table(f: Frame) -> None:
    """The CT table below the body (outside the body, label 0)."""
    cv = f.cv
    body_post = float(f.cy0 + f.r_b[np.argmin(np.abs(f.grid - math.pi / 2))])
    ty = body_post + 1.0
    curve = 0.0009 * (cv.x - f.cx0) ** 2
    table_top = (cv.y >= ty + curve) & (cv.y <= ty + curve + 2.0) & (np.abs(cv.x - f.cx0) < 230)
    table_core = (cv.y > ty + curve + 2.0) & (cv.y <= ty + curve + 14.0) & (np.abs(cv.x - f.cx0) < 225)
    cv.hu[table_core] = -550.0
    cv.hu[table_top] = 150.0


def body_and_sat(f: Frame) -> None:
    """Skin and the subcutaneous fat ring, with Scarpa's fascia in thick SAT (stays SAT)."""
    cv, spec = f.cv, f.spec
    rng_tex = np.random.default_rng([spec.seed, 100 + f.slice_index])
    smooth = gaussian_filter(rng_tex.standard_normal((f.matrix, f.matrix)).astype(np.float32), 6.0)
    smooth *= 6.0 / max(float(smooth.std()), 1e-6)
    f.smooth = smooth
    inside_body = f.rho <= f.R_b
    cv.lab[inside_body] = OTHER
    cv.hu[inside_body] = 40.0
    sat_zone = f.rho <= f.R_b - f.skin
    cv.lab[sat_zone] = SAT
    cv.hu[sat_zone] = spec.sat_hu + 0.6 * smooth[sat_zone]
    if f.sat_mean > 8:
        frac = f.prng.uniform(0.35, 0.55)
        scarpa = sat_zone & (np.abs(f.rho - (f.R_m + frac * f.T_sat)) < 0.5 * max(f.spacing, 0.7)) & (f.rho > f.R_m)
        cv.hu[scarpa] = f.prng.uniform(-20, 10)


def wall_muscles(f: Frame) -> None:
    """The muscle envelope (rectus, obliques), the linea alba (fibrous, not muscle) and the fat
    planes between the oblique layers (IMAT inside the muscle compartment)."""
    cv, spec = f.cv, f.spec
    musc_zone = f.rho <= f.R_m
    cv.lab[musc_zone] = WALL
    cv.hu[musc_zone] = spec.muscle_hu + f.smooth[musc_zone]
    gap = 3.0 + 10.0 * f.v + f.prng.uniform(0, 3)
    la = musc_zone & (f.rho > f.R_cav) & (np.abs(cv.x - f.cx0) < gap / 2) & (cv.y < f.cy0)
    cv.lab[la] = OTHER
    cv.hu[la] = 35.0
    for frac in (0.35, 0.68):
        plane = musc_zone & (f.rho > f.R_cav) & (np.abs(f.rho - (f.R_cav + frac * (f.R_m - f.R_cav))) < 0.45 * max(f.spacing, 0.8))
        lateral = np.abs(np.cos(f.theta)) > 0.55
        cv.hu[plane & lateral] = spec.sat_hu + 25


def cavity(f: Frame) -> None:
    """The abdominal cavity filled with visceral fat; its posterior limit follows the posterior
    muscles. Draws the blood HU (IV contrast or not) used by the organs and vessels."""
    cv, spec = f.cv, f.spec
    y_lim = f.vy + f.vb_b + 2.0 + 30.0 * ((cv.x - f.vx) / f.a_cav) ** 2
    inside = (f.rho <= f.R_cav) & (cv.y < y_lim)
    cv.lab[inside] = VAT
    cv.hu[inside] = spec.vat_hu + 0.6 * f.smooth[inside]
    f.blood = f.srng.normal(165, 15) if spec.iv_contrast else f.srng.normal(42, 3)


def kidneys(f: Frame) -> None:
    """Lower poles of the kidneys with perirenal fat and renal sinus fat (one kidney missing in 5%)."""
    cv, prng, srng, iv = f.cv, f.prng, f.srng, f.spec.iv_contrast
    for side in (-1, 1):
        if prng.random() < 0.05:
            continue
        ka, kb_ = (20.0 + 4 * prng.random()) * (1 - 0.02 * f.dz), 27.0 + 5 * prng.random()
        kx = f.vx + side * (f.vb_a + 36.0 + 14.0 * f.v + prng.normal(0, 3))
        ky = f.vy - 6.0 + prng.normal(0, 3)
        rim = 3.0 + 8.0 * f.v  # perirenal fat
        reg, m = cv.ellipse(kx, ky, ka + rim, kb_ + rim, rot=side * 0.5)
        cv.paint(reg, m, VAT, f.spec.vat_hu, only=[VAT, WALL])
        reg, m = cv.ellipse(kx, ky, ka, kb_, rot=side * 0.5, wobble=wobble(prng, amp=0.05))
        cv.paint(reg, m, KIDNEY, srng.normal(170, 12) if iv else srng.normal(32, 3), only=[VAT, WALL])
        reg, m = cv.ellipse(kx - side * ka * 0.35, ky - 3, ka * 0.3, kb_ * 0.35, rot=side * 0.5)
        cv.paint(reg, m, VAT, f.spec.vat_hu, only=[KIDNEY])


def liver(f: Frame) -> None:
    """The liver tip on the patient's right (in 55% of patients)."""
    cv, prng = f.cv, f.prng
    if prng.random() < 0.55:
        la_, lb_ = 14 + 20 * prng.random() - 1.5 * f.dz, 20 + 20 * prng.random()
        if la_ > 6:
            reg, m = cv.ellipse(f.cx0 - 0.72 * f.a_cav, f.cy0 - 0.05 * f.b_cav, la_, lb_, rot=0.3, wobble=wobble(prng))
            cv.paint(reg, m, LIVER, f.srng.normal(108, 6) if f.spec.iv_contrast else f.srng.normal(56, 4), only=[VAT])


def great_vessels(f: Frame) -> None:
    """Aorta (calcified spots after 55), IVC, superior mesenteric artery and vein."""
    cv, srng, spec = f.cv, f.srng, f.spec
    age_f = (spec.age - 30) / 60
    ax, ay, ar = f.vx + 14.0, f.vy - f.vb_b - 12.0, 9.0 + 4.0 * age_f + srng.normal(0, 0.5)
    f.aorta = (ax, ay, ar)
    reg, m = cv.ellipse(ax, ay, ar, ar)
    cv.paint(reg, m, VESSEL, f.blood, only=[VAT])
    if spec.age > 55:
        for _ in range(int(srng.integers(0, 4))):
            t = srng.uniform(0, 2 * math.pi)
            reg, m = cv.ellipse(ax + ar * 0.92 * math.cos(t), ay + ar * 0.92 * math.sin(t), 1.2, 1.2)
            cv.paint(reg, m, VESSEL, srng.uniform(400, 800), only=[VESSEL])
    reg, m = cv.ellipse(f.vx - 21.0, f.vy - f.vb_b - 10.0, 12.0, 7.5, rot=0.2)
    cv.paint(reg, m, VESSEL, f.blood - (10 if spec.iv_contrast else 0), only=[VAT])
    smv_y = ay - ar - 28.0 - 12 * f.v
    for ox, rr, hu in ((4.0, 3.2, f.blood), (-8.0, 4.5, f.blood - 15)):
        reg, m = cv.ellipse(f.vx + ox, smv_y, rr, rr)
        cv.paint(reg, m, VESSEL, hu, only=[VAT])


def _lumen_hu(srng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """HU of ``n`` bowel-lumen pixels: fluid, oral contrast, mottled stool, or collapsed."""
    h = np.empty(n, dtype=np.float32)
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


def _bowel_loop(f: Frame, x: float, y: float, r: float, kind: str, colon: bool = False) -> None:
    """One bowel loop: wall, lumen content and (for fluid or stool) a gas level anteriorly."""
    cv, srng = f.cv, f.srng
    wall = 2.0 + 1.0 * srng.random()
    rot = srng.uniform(0, math.pi)
    ecc = srng.uniform(1.0, 1.5)
    wob = wobble(srng, amp=0.08)
    reg, m = cv.ellipse(x, y, r * ecc, r, rot=rot, wobble=wob)
    cv.paint(reg, m, BOWEL, f.wall_hu, only=[VAT])
    if kind != "collapsed":
        inner_r = max(r - wall, 1.0)
        reg, m = cv.ellipse(x, y, inner_r * ecc, inner_r, rot=rot, wobble=wob)
        m = m & (cv.lab[reg] == BOWEL)
        rs, cs = reg
        cv.hu[rs, cs][m] = _lumen_hu(srng, kind, int(m.sum()))
        if kind in ("fluid", "stool") and (colon or srng.random() < 0.25):
            level = y - inner_r * srng.uniform(0.1, 0.8)  # gas rises anteriorly (supine)
            gas = m & (cv.y[rs, :] < level)
            cv.hu[rs, cs][gas] = srng.normal(-985, 10)


def _small_bowel_positions(f: Frame) -> list[tuple[float, float, float]]:
    """Loop centres and radii packed in the anterior cavity, apart from each other and the aorta;
    the mesenteric fat between them grows with VAT."""
    srng = f.srng
    ax, ay, ar = f.aorta
    gap_mm = 1.0 + 16.0 * f.v
    loops: list[tuple[float, float, float]] = []
    target = int(45 * (1.0 - 0.55 * f.v))
    for _ in range(target * 12):
        if len(loops) >= target:
            break
        r = srng.uniform(7.0, 15.0)
        x = srng.uniform(f.cx0 - f.a_cav, f.cx0 + f.a_cav)
        y = srng.uniform(f.cy0 - f.b_cav, f.vy - f.vb_b - 8)
        rr = float(np.hypot(x - f.cx0, y - f.cy0))
        lim = float(np.interp(math.atan2(y - f.cy0, x - f.cx0), f.grid, f.r_cav))
        if rr + r * 1.3 > lim or any((x - a) ** 2 + (y - b) ** 2 < (r + c + gap_mm) ** 2 for a, b, c in loops):
            continue
        if (x - ax) ** 2 + (y - ay) ** 2 < (r + ar + 6) ** 2:
            continue
        loops.append((x, y, r))
    return loops


def bowel(f: Frame) -> None:
    """Duodenum, ascending and descending colon with stool and gas, and small-bowel loops
    (fluid, collapsed, stool, or oral contrast)."""
    cv, srng, spec = f.cv, f.srng, f.spec
    ax, ay, ar = f.aorta
    f.wall_hu = srng.normal(105, 10) if spec.iv_contrast else srng.normal(42, 4)
    if srng.random() < 0.65:  # duodenum
        reg, m = cv.ellipse(f.vx - 4.0, ay - ar - 12.0, 34.0, 7.0, rot=srng.normal(0, 0.1))
        cv.paint(reg, m, BOWEL, f.wall_hu, only=[VAT])
        reg, m = cv.ellipse(f.vx - 4.0, ay - ar - 12.0, 31.0, 4.5, rot=0)
        cv.paint(reg, m, BOWEL, srng.normal(12, 5), only=[BOWEL])
    _bowel_loop(f, f.cx0 - 0.70 * f.a_cav, f.cy0 - 0.05 * f.b_cav, 17 + 8 * srng.random(), "stool", colon=True)
    _bowel_loop(f, f.cx0 + 0.78 * f.a_cav, f.cy0 + 0.12 * f.b_cav, 11 + 7 * srng.random(), "stool", colon=True)
    for x, y, r in _small_bowel_positions(f):
        u = srng.random()
        kind = "fluid" if u < 0.55 else "collapsed" if u < 0.8 else "stool"
        if kind == "fluid" and spec.oral_contrast and srng.random() < 0.7:
            kind = "contrast"
        _bowel_loop(f, x, y, r, kind)


def mesenteric_vessels(f: Frame) -> None:
    """Small vessels scattered in the mesenteric fat (more with more VAT)."""
    cv, srng = f.cv, f.srng
    for _ in range(int(12 + 25 * f.v)):
        x = srng.uniform(f.cx0 - f.a_cav * 0.8, f.cx0 + f.a_cav * 0.8)
        y = srng.uniform(f.cy0 - f.b_cav * 0.9, f.vy - f.vb_b)
        r = srng.uniform(1.0, 2.6)
        reg, m = cv.ellipse(x, y, r, r)
        cv.paint(reg, m, VESSEL, f.blood, only=[VAT])


_POSTERIOR_UNDER = [WALL, VAT, KIDNEY, OTHER, SAT]
"""Labels the posterior muscles paint over."""


def psoas(f: Frame, side: int) -> None:
    """Psoas major beside the vertebral body (``side`` -1 right, +1 left)."""
    k = f.k
    reg, m = f.cv.ellipse(f.vx + side * (f.vb_a + 13.0 * k), f.vy - 4.0, 17.0 * k, 14.5 * k, rot=side * 0.35,
                          wobble=wobble(f.prng, amp=0.05))
    f.cv.paint(reg, m, PSOAS, f.spec.muscle_hu + 3, only=_POSTERIOR_UNDER)


def quadratus_lumborum(f: Frame, side: int) -> None:
    """Quadratus lumborum, posterolateral to the psoas."""
    k = f.k
    reg, m = f.cv.ellipse(f.vx + side * (f.vb_a + 38.0 + 4 * f.v), f.vy + 17.0, 17.0 * k, 8.0 * k, rot=-side * 0.45,
                          wobble=wobble(f.prng, amp=0.05))
    f.cv.paint(reg, m, QL, f.spec.muscle_hu, only=_POSTERIOR_UNDER)


def paraspinals(f: Frame, side: int) -> None:
    """Erector spinae and multifidus behind the transverse processes."""
    reg, m = f.cv.ellipse(f.vx + side * (f.para_a * 1.05 + 3), f.vy + f.vb_b + 19.0 + f.para_b, f.para_a, f.para_b,
                          rot=side * 0.15, wobble=wobble(f.prng, amp=0.05))
    f.cv.paint(reg, m, PARASPINAL, f.spec.muscle_hu - 2, only=_POSTERIOR_UNDER)


def posterior_muscles(f: Frame) -> None:
    """Psoas, quadratus lumborum and paraspinals on each side, then their texture and the
    intermuscular fat streaks that grow with age and BMI (they stay muscle: IMAT lies in the
    muscle compartment)."""
    for side in (-1, 1):
        psoas(f, side)
        quadratus_lumborum(f, side)
        paraspinals(f, side)
    cv, srng, spec = f.cv, f.srng, f.spec
    musc = np.isin(cv.lab, [PSOAS, QL, PARASPINAL])
    cv.hu[musc] += f.smooth[musc]
    n_streaks = int(np.clip((spec.age - 35) / 8 + (spec.bmi - 24) / 3 + srng.normal(0, 1.5), 0, 14))
    for _ in range(n_streaks):
        side = srng.choice([-1, 1])
        x = f.vx + side * srng.uniform(10, 45) * f.k
        y = f.vy + f.vb_b + srng.uniform(10, 50) * f.k
        reg, m = cv.ellipse(x, y, srng.uniform(4, 14), srng.uniform(0.6, 1.6), rot=srng.uniform(0, math.pi))
        cv.paint(reg, m, PARASPINAL, spec.sat_hu + 15, only=[PARASPINAL])


def vertebra(f: Frame) -> None:
    """L3: vertebral body (cortex, cancellous bone losing density with age), neural arch,
    spinous and transverse processes, and the spinal canal."""
    cv, srng, vx, vy = f.cv, f.srng, f.vx, f.vy
    cancellous = 260.0 - 1.6 * (f.spec.age - 30) + srng.normal(0, 15)
    reg, m = cv.ellipse(vx, vy, f.vb_a, f.vb_b, wobble=[(2, 0.03, 0.0)])
    cv.paint(reg, m, BONE, 750.0)
    reg, m = cv.ellipse(vx, vy, f.vb_a - 1.6, f.vb_b - 1.6, wobble=[(2, 0.03, 0.0)])
    cv.paint(reg, m, BONE, cancellous)
    canal_y = vy + f.vb_b + 8.5
    for region_mask in (
        cv.ellipse(vx, canal_y + 2, 14.0, 12.0),  # neural arch
        cv.ellipse(vx, canal_y + 14 + 11.0, 3.5, 15.0),  # spinous process
        cv.ellipse(vx - 24.0, canal_y - 1, 20.0, 3.8, rot=0.12),  # transverse processes
        cv.ellipse(vx + 24.0, canal_y - 1, 20.0, 3.8, rot=-0.12),
    ):
        cv.paint(*region_mask, BONE, srng.normal(520, 60))
    reg, m = cv.ellipse(vx, canal_y, 10.5, 8.0)
    cv.paint(reg, m, OTHER, srng.normal(18, 4))


def image_formation(f: Frame) -> tuple[np.ndarray, float]:
    """Partial-volume blur, then correlated noise growing with body width; returns (HU float32
    clipped to -1024..3071, noise SD in HU)."""
    cv, srng = f.cv, f.srng
    hu = gaussian_filter(cv.hu, sigma=float(srng.uniform(0.55, 0.85)))
    width_mm = 2 * float(np.max(f.r_b))
    noise_sd = float(np.clip(9.0 + 0.05 * (width_mm - 250.0), 8.0, 26.0))
    noise = gaussian_filter(srng.standard_normal((f.matrix, f.matrix)).astype(np.float32), 0.75)
    noise *= noise_sd / max(float(noise.std()), 1e-6)
    hu = hu + noise
    hu[cv.hu <= -995] = np.maximum(hu[cv.hu <= -995], -1024.0)
    return np.clip(hu, -1024.0, 3071.0).astype(np.float32), noise_sd
