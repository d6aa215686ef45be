"""What real scans hold and the basic phantom lacks, added when a patient has ``realism`` on.

Each function adds one thing, from its own random stream (so the basic anatomy, and its pinned
output, stay as they are): a realistic vertebral body (cancellous bone of 90-260 HU with
trabecular texture), rib sections at the body wall, arms at the sides, contrast phases, a wider
habitus, per-structure intensity randomisation (domain randomisation: the network learns shape
and context, not exact HU; cf. SynthSeg, Billot et al., Med Image Anal 2023), and acquisition
effects: reconstruction kernel (noise texture, sharpness), slice thickness (partial volume),
metal streaks, an off-centre patient and a truncated field of view.

Arms, ribs and the vertebra are labelled as background classes (they are not trunk muscle,
SAT or VAT), as in the Alberta protocol.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.ndimage import gaussian_filter

from l3seg_lib.phantom.canvas import wobble
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

MUSCLES = (PSOAS, PARASPINAL, QL, WALL)


def rng_for(spec, slice_index: int, what: int) -> np.random.Generator:
    """A random stream of its own for one realism feature of one slice."""
    return np.random.default_rng([spec.seed, 1000 + what, slice_index])


def widen_habitus(spec, rng: np.random.Generator):
    """Extreme habitus now and then: cachexia (thin SAT, small muscles) or severe obesity."""
    u = rng.random()
    if u < 0.12:  # cachectic
        return dataclasses.replace(spec, sat_mm=float(rng.uniform(1.5, 4.0)), muscle_scale=spec.muscle_scale * 0.85,
                                   vat_level=float(min(spec.vat_level, 0.08)))
    if u < 0.24:  # severely obese
        return dataclasses.replace(spec, sat_mm=float(rng.uniform(45.0, 95.0)),
                                   vat_level=float(min(0.95, spec.vat_level + rng.uniform(0.2, 0.4))))
    return spec


def vertebral_body(f, rng: np.random.Generator) -> None:
    """Cancellous bone of realistic density with trabecular texture, a thin cortex."""
    cv = f.cv
    body = (cv.lab == BONE)
    r = np.hypot((cv.x - f.vx) / f.vb_a, (cv.y - f.vy) / f.vb_b)
    cancellous = body & (r < 0.93)
    if not cancellous.any():
        return
    base = rng.uniform(90.0, 260.0)
    tex = gaussian_filter(rng.standard_normal(cv.hu.shape).astype(np.float32), 1.2 / max(f.spacing, 0.5))
    tex *= rng.uniform(20.0, 60.0) / max(float(tex[cancellous].std()), 1e-6)
    cv.hu[cancellous] = base + tex[cancellous]
    # basivertebral vein: a soft-tissue notch at the back of the body
    vein = (np.hypot(cv.x - f.vx, cv.y - (f.vy + 0.7 * f.vb_b)) < 3.0) & body
    cv.hu[vein] = rng.uniform(30, 80)


def ribs(f, rng: np.random.Generator) -> None:
    """Cross-sections of the lower ribs in the posterolateral body wall (about half the slices)."""
    if rng.random() < 0.5:
        return
    cv = f.cv
    for side in (-1, 1):
        for _ in range(int(rng.integers(1, 3))):
            ang = rng.uniform(0.15, 0.9) * math.pi / 2  # from lateral towards posterior
            rad = float(np.interp(math.atan2(math.sin(ang), side * math.cos(ang)), f.grid, f.r_m)) - rng.uniform(2, 8)
            x, y = side * rad * math.cos(ang), rad * math.sin(ang)
            reg, m = cv.ellipse(x, y, rng.uniform(4, 7), rng.uniform(6, 11), rot=rng.uniform(0, math.pi))
            cv.paint(reg, m, BONE, rng.uniform(250, 600), only=[WALL, SAT, OTHER, PARASPINAL, QL])
            reg, m = cv.ellipse(x, y, 2.5, 4.0, rot=0.0)
            cv.paint(reg, m, BONE, rng.uniform(120, 250), only=[BONE])  # marrow


def arms(f, rng: np.random.Generator) -> None:
    """Arms down at the sides (a third of the patients): skin, fat, muscle, humerus; background."""
    arng = np.random.default_rng([f.spec.seed, 1099])  # per patient, the same on every slice
    if arng.random() > 0.33:
        return
    cv = f.cv
    half = float(np.max(np.abs(f.r_b * np.cos(f.grid))))
    for side in (-1, 1):
        ax = side * (half + arng.uniform(5, 30) + 45)
        ay = arng.normal(10, 15)
        a, b = arng.uniform(38, 55), arng.uniform(45, 65)
        reg, m = cv.ellipse(ax, ay, a, b, wobble=wobble(arng, amp=0.04))
        cv.paint(reg, m, OTHER, f.spec.sat_hu, only=[0])
        reg, m = cv.ellipse(ax, ay, a * 0.75, b * 0.75, wobble=wobble(arng, amp=0.04))
        cv.paint(reg, m, OTHER, f.spec.muscle_hu + rng.normal(0, 3), only=[OTHER])
        reg, m = cv.ellipse(ax + side * 5, ay, 11, 12)
        cv.paint(reg, m, BONE, 700.0, only=[OTHER])
        reg, m = cv.ellipse(ax + side * 5, ay, 7, 8)
        cv.paint(reg, m, BONE, rng.uniform(-50, 100), only=[BONE])


def upper_abdomen_organs(f, rng: np.random.Generator) -> None:
    """Slices nearer the upper lumbar levels (about 60 %): a large liver on the right, the
    spleen on the left, the stomach with gas and fluid: soft tissue of muscle-like HU that is not
    muscle (the network must tell it by shape and place)."""
    orng = np.random.default_rng([f.spec.seed, 1098])  # per patient
    if orng.random() > 0.6:
        return
    cv, iv = f.cv, f.spec.iv_contrast
    liver_hu = rng.normal(110, 8) if iv else rng.normal(58, 5)
    reg, m = cv.ellipse(f.cx0 - 0.45 * f.a_cav, f.cy0 - 0.05 * f.b_cav, orng.uniform(0.45, 0.65) * f.a_cav,
                        orng.uniform(0.6, 0.85) * f.b_cav, rot=orng.uniform(-0.3, 0.3), wobble=wobble(orng, amp=0.06))
    cv.paint(reg, m, LIVER, liver_hu, only=[VAT, BOWEL, VESSEL])
    if orng.random() < 0.7:
        reg, m = cv.ellipse(f.cx0 + 0.7 * f.a_cav, f.cy0 + 0.3 * f.b_cav, orng.uniform(18, 32), orng.uniform(30, 50),
                            rot=orng.uniform(-0.6, 0.0), wobble=wobble(orng, amp=0.06))
        cv.paint(reg, m, OTHER, rng.normal(120, 10) if iv else rng.normal(48, 4), only=[VAT, BOWEL, VESSEL])
    if orng.random() < 0.6:  # stomach: wall, fluid, gas anteriorly
        sx, sy, sa, sb = f.cx0 + 0.35 * f.a_cav, f.cy0 - 0.45 * f.b_cav, orng.uniform(30, 50), orng.uniform(20, 35)
        reg, m = cv.ellipse(sx, sy, sa, sb, rot=orng.uniform(-0.4, 0.4))
        cv.paint(reg, m, BOWEL, rng.normal(45, 5), only=[VAT, BOWEL, VESSEL])
        reg, m = cv.ellipse(sx, sy, sa - 4, sb - 4)
        rs, cs = reg
        inner = m & (cv.lab[rs, cs] == BOWEL)
        cv.hu[rs, cs][inner] = rng.normal(15, 5)
        gas = inner & (cv.y[rs, :] < sy - rng.uniform(0, 0.5) * sb)
        cv.hu[rs, cs][gas] = -980.0


def contrast_phase(f, rng: np.random.Generator) -> None:
    """An arterial phase now and then: bright aorta and arteries, renal cortex, pale veins."""
    if not f.spec.iv_contrast or rng.random() > 0.35:
        return
    cv = f.cv
    ax, ay, ar = f.aorta
    aorta = np.hypot(cv.x - ax, cv.y - ay) <= ar
    cv.hu[aorta & (cv.lab == VESSEL)] = rng.uniform(250, 450)
    cv.hu[(cv.lab == KIDNEY)] += rng.uniform(40, 120)


def randomise_intensities(f, rng: np.random.Generator) -> None:
    """Domain randomisation: shift each tissue's HU beyond physiology (half the slices)."""
    if rng.random() < 0.5:
        return
    cv = f.cv
    groups = {"muscle": (MUSCLES, 35.0), "sat": ((SAT,), 35.0), "vat": ((VAT,), 35.0),
              "organs": ((KIDNEY, LIVER, BOWEL, VESSEL, OTHER), 60.0), "bone": ((BONE,), 120.0)}
    for labels, spread in groups.values():
        m = np.isin(cv.lab, labels)
        cv.hu[m] += rng.uniform(-spread, spread)


def acquisition(f, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Kernel (extra blur or sharpening, noise texture and level), metal streaks, truncation."""
    cv = f.cv
    blur = rng.uniform(0.0, 1.2)  # thicker slices / softer kernels
    if blur > 0.2:
        hu = gaussian_filter(hu, blur)
    elif rng.random() < 0.5:  # sharp kernel
        hu = hu + 0.6 * (hu - gaussian_filter(hu, 1.0))
    grain = rng.uniform(0.4, 1.6)
    noise = gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), grain)
    hu = hu + noise * (rng.uniform(0.0, 25.0) / max(float(noise.std()), 1e-6))
    if rng.random() < 0.1:  # metal (a pedicle screw) with streaks
        mx, my = f.vx + rng.choice([-1, 1]) * rng.uniform(5, 15), f.vy + rng.uniform(-5, 20)
        ang = np.arctan2(cv.y - my, cv.x - mx)
        dist = np.hypot(cv.x - mx, cv.y - my)
        streaks = np.cos(ang * int(rng.integers(6, 14)) + rng.uniform(0, math.pi))
        hu = hu + rng.uniform(40, 150) * streaks * np.exp(-dist / rng.uniform(60, 150))
        hu[dist < rng.uniform(2.5, 4.0)] = 3000.0
    if rng.random() < 0.15:  # truncated field of view: the reconstruction circle cuts the body
        half = float(np.max(np.abs(f.r_b * np.cos(f.grid))))
        radius = half * rng.uniform(0.8, 0.97)
        outside = np.hypot(cv.x - float(cv.x.mean()), cv.y - float(cv.y.mean())) > radius
        hu[outside] = -1024.0
        cv.lab[outside] = 0
    return hu
