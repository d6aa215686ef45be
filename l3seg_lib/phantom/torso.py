"""Synthetic 3-D torsos for the L3 localiser: spine from the sacrum to T9, ribs, pelvis, body.

A torso is a CT volume (z, rows, cols) in canonical orientation (z inferior -> superior, rows
anterior -> posterior, columns patient right -> left) with the z-range of every vertebral body
as ground truth. The anatomy varies where localisers fail: coverage (the field of view may start
or end anywhere, so L3 or the sacrum may be missing), the number of lumbar vertebrae (5 or 6),
the number of rib pairs (12 or 11), slice thickness (1-5 mm), lordosis, bone density and size.

Lengths in mm, HU in HU. Coordinates: x to the patient's left, y posterior, z superior; z = 0 at
the top of the sacrum (the lumbosacral disc's lower end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from l3seg_lib.imageio.ct import CTVolume


@dataclass
class TorsoSpec:
    """Anatomy and acquisition of one synthetic torso."""

    n_lumbar: int = 5
    n_rib_pairs: int = 12
    slice_mm: float = 3.0
    """Slice spacing = thickness (mm)."""
    pixel_mm: float = 1.6
    matrix: int = 256
    z_from: float = -160.0
    """Field of view along z (mm, relative to the top of the sacrum)."""
    z_to: float = 260.0
    scale: float = 1.0
    """Vertebral size factor."""
    lordosis_mm: float = 12.0
    cancellous_hu: float = 190.0
    noise_hu: float = 12.0
    seed: int = 0


@dataclass
class Torso:
    hu: np.ndarray
    """(z, rows, cols) float32 HU."""
    spacing_mm: tuple[float, float, float]
    """(z, row, col) spacing in mm."""
    vertebrae: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Body z-range (mm, torso coordinates) of each vertebra by name (S1, L5, ... T9)."""
    z_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """z of each slice (mm)."""

    def as_volume(self, patient_id: str = "torso") -> CTVolume:
        """The torso as a canonical :class:`CTVolume` (affine from the spacing)."""
        dz, dr, dc = self.spacing_mm
        return CTVolume(self.hu, self.spacing_mm, patient_id, "synthetic torso", np.diag([-dc, -dr, dz, 1.0]),
                        [f"{patient_id}_z{i:03d}" for i in range(len(self.z_mm))], [float(z) for z in self.z_mm])

    def slices_of(self, name: str) -> tuple[int, int] | None:
        """First and last slice index whose centre lies in the vertebral body ``name`` (None if
        the body is not in the field of view)."""
        lo, hi = self.vertebrae[name]
        idx = np.flatnonzero((self.z_mm >= lo) & (self.z_mm <= hi))
        return (int(idx[0]), int(idx[-1])) if idx.size else None


def vertebra_names(n_lumbar: int, n_thoracic_shown: int = 4) -> list[str]:
    """Names from the sacrum up: S1, L5 (or L6), ..., L1, T12, ..."""
    lumbar = [f"L{i}" for i in range(n_lumbar, 0, -1)]
    thoracic = [f"T{12 - i}" for i in range(n_thoracic_shown)]
    return ["S1", *lumbar, *thoracic]


def make_torso(spec: TorsoSpec) -> Torso:
    """Render a torso (see the module docstring)."""
    rng = np.random.default_rng(spec.seed)
    n = spec.matrix
    px = spec.pixel_mm
    zs = np.arange(spec.z_from, spec.z_to + 1e-6, spec.slice_mm)
    # fine z grid (1 mm) averaged to the slice thickness afterwards
    fine = np.arange(spec.z_from - spec.slice_mm / 2, spec.z_to + spec.slice_mm / 2, 1.0) + 0.5
    c = (np.arange(n) - n / 2 + 0.5) * px
    X, Y = np.meshgrid(c, c + 20.0)  # rows: y (anterior negative), cols: x

    # the spine from the sacrum up: body heights and discs
    names = vertebra_names(spec.n_lumbar)[1:]  # above S1
    k = spec.scale
    vertebrae: dict[str, tuple[float, float]] = {"S1": (-28.0 * k, 0.0)}
    z = 0.0
    levels = []  # (name, z_lo, z_hi) of each free vertebral body
    for name in names:
        disc = (10.0 if name.startswith("L") else 6.0) * k
        height = (27.0 if name.startswith("L") else 23.0) * k * rng.uniform(0.94, 1.06)
        lo = z + disc
        hi = lo + height
        levels.append((name, lo, hi))
        vertebrae[name] = (lo, hi)
        z = hi
    ribbed = {f"T{12 - i}" for i in range(4)} if spec.n_rib_pairs == 12 else {f"T{11 - i}" for i in range(3)}

    def spine_y(zz):  # lordosis: the lumbar spine bows anteriorly
        return 55.0 - spec.lordosis_mm * math.sin(min(max((zz + 20) / 200.0, 0.0), 1.0) * math.pi)

    vol = np.empty((fine.size, n, n), np.float32)
    ax_body, ay_body = 165.0, 115.0
    body = (X / ax_body) ** 2 + ((Y - 10) / ay_body) ** 2 <= 1
    fat = (X / (ax_body - 18)) ** 2 + ((Y - 10) / (ay_body - 18)) ** 2 > 1
    for i, zz in enumerate(fine):
        sl = np.full((n, n), -1000.0, np.float32)
        sl[body] = 40.0
        sl[body & fat] = -100.0
        cy = spine_y(zz)
        if zz > vertebrae.get("T12", (1e9, 0))[0] - 15:  # lung bases lateral-posterior
            lung = (((np.abs(X) - 70) / 45) ** 2 + ((Y - cy + 10) / 50) ** 2) <= 1
            sl[lung] = -850.0
        for name, lo, hi in levels:
            a, b = 22.0 * k, 16.0 * k
            if name.startswith("T"):
                a, b = 18.0 * k, 14.0 * k
            if lo <= zz <= hi:
                r = (X / a) ** 2 + ((Y - cy) / b) ** 2
                sl[r <= 1] = 550.0
                sl[r <= 0.78] = spec.cancellous_hu
            if lo + 0.15 * (hi - lo) <= zz <= hi - 0.1 * (hi - lo):  # neural arch, spinous process
                ring = np.hypot(X, Y - (cy + b + 11 * k))
                sl[(ring >= 8 * k) & (ring <= 13 * k)] = 450.0
                sl[(np.abs(X) <= 3.5 * k) & (Y > cy + b + 20 * k) & (Y < cy + b + 48 * k)] = 420.0
            if name.startswith("L") and lo + 0.3 * (hi - lo) <= zz <= lo + 0.65 * (hi - lo):  # transverse processes
                sl[(np.abs(X) > 10) & (np.abs(X) < 48 * k) & (np.abs(Y - (cy + b + 8 * k)) < 4.5)] = 400.0
        for name, lo, hi in levels:  # ribs: head at the body's upper half, descending laterally
            if name not in ribbed:
                continue
            a, b = 18.0 * k, 14.0 * k
            cy_r = spine_y(hi)
            for t in np.linspace(0.0, 1.0, 60):
                rz = lo + 0.6 * (hi - lo) - (45.0 if name == "T12" else 60.0) * t
                if abs(rz - zz) >= 4.0:
                    continue
                reach = 70.0 if name == "T12" else 120.0  # the 12th rib is short
                rx = a + 6 + reach * math.sin(min(t * 1.4, 1.0) * math.pi / 2)
                ry = cy_r + 0.3 * b + 12 * t - 40 * max(t - 0.6, 0.0) ** 2 * 4
                for side in (-1, 1):
                    sl[np.hypot(X - side * rx, Y - ry) <= 5.0] = 380.0
        if -110 < zz <= 0:  # sacrum: S1 body and alae, narrowing and curving back
            t = min(-zz / 110.0, 1.0)
            cy_s = spine_y(0) + 35 * t ** 1.5
            half = (55.0 - 35.0 * t) * k
            sac = (np.abs(X) <= half) & (np.abs(Y - cy_s) <= 16 * k * (1 - 0.4 * t))
            sl[sac] = 260.0
            if zz > -80:  # sacroiliac joints: alae meet the ilium
                sl[(np.abs(X) > half - 4) & (np.abs(X) < half + 30) & (np.abs(Y - cy_s - 5) <= 10)] = 300.0
        if -150 < zz < 45:  # iliac wings: curved plates from the crest (about L4/L5) down
            t = (45 - zz) / 195.0
            cx_il = 95.0 - 30.0 * t
            arc = np.abs(np.hypot(np.abs(X) - cx_il - 40, Y - 40) - 45) <= 4.0
            sl[arc & (Y < 70) & (np.abs(X) > 50)] = 500.0
        if zz < -110:  # femoral heads
            for side in (-1, 1):
                d = np.hypot(np.hypot(X - side * 85, Y - 10), zz + 135)
                sl[d <= 24] = 450.0
        vol[i] = sl
    # slice thickness: average the 1 mm grid over each slice
    out = np.empty((zs.size, n, n), np.float32)
    for j, zc in enumerate(zs):
        sel = np.abs(fine - zc) <= spec.slice_mm / 2
        out[j] = vol[sel].mean(axis=0)
    out = gaussian_filter(out, sigma=(0, 0.6, 0.6))
    out += rng.normal(0, spec.noise_hu, out.shape).astype(np.float32)
    return Torso(hu=np.clip(out, -1024, 3071),
                 spacing_mm=(spec.slice_mm, px, px), vertebrae=vertebrae, z_mm=zs)
