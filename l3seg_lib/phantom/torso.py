"""Synthetic 3-D torsos for the L3 localiser: spine from the sacrum to T9, ribs, pelvis, body.

A torso is a CT volume (z, rows, cols) in canonical orientation (z inferior -> superior, rows
anterior -> posterior, columns patient right -> left) with the z-range of every vertebral body
as ground truth. The anatomy varies where localisers fail: coverage (the field of view may start
or end anywhere, so L3 or the sacrum may be missing), the number of lumbar vertebrae (5 or 6),
the number of rib pairs (12 or 11), slice thickness (1-5 mm), lordosis, bone density and size.

What real scans add around the patient, each off by default (the defaults render exactly the
torso they always did):

* the scanner couch (``table``): a curved carbon-fibre cradle (thin dense top shell, foam core, a
  flatter base plate, side walls) or a straight flat table, wider than the body, at a chosen gap
  below the patient, optionally with a mattress, along the whole z-range;
* arms down beside the trunk (``arms``): humerus, flaring to the condyles above the elbow,
  olecranon and radial head at the elbow, radius and ulna below it down to the wrist and hand,
  in muscle and fat; the elbows lie between the L2 and L3 bodies, so dense bone lies lateral to
  the trunk at L3-L5;
* off-centre placement (``shift_mm``, ``rotate_deg``): the patient shifted in-plane and rolled
  about the body axis (the table stays level and centred, as on a scanner);
* a contrast-filled aorta (``contrast_hu``) left-anterior of the vertebral bodies, dividing into
  the common iliac arteries at L4.

Lengths in mm, HU in HU. Coordinates: x to the patient's left, y posterior, z superior; z = 0 at
the top of the sacrum (the lumbosacral disc's lower end). In-plane, the patient's own coordinates
(anatomy) and the scanner's (image grid, table) coincide unless the patient is shifted or rolled.
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
    # -- around the patient (all off by default) --
    table: str = "none"
    """Scanner couch: ``none``, ``curved`` (carbon-fibre cradle: curved shell, foam core, flatter
    base plate) or ``flat`` (a straight flat tabletop, same layers)."""
    table_gap_mm: float = 10.0
    """Smallest clearance (mm) between the patient (trunk or arms) and the table's top surface
    (the mattress's top when there is one); 0 = lying on it."""
    table_pad_mm: float = 0.0
    """Thickness (mm) of a mattress on the table (0 = none)."""
    table_pad_hu: float = -200.0
    """HU of the mattress (gel and foam pads: about -300 to -100)."""
    table_width_mm: float = 460.0
    """Width of the tabletop (mm); wider than the body (330 mm)."""
    table_radius_mm: float = 500.0
    """Curvature radius (mm) of the curved cradle's top shell; its base plate is three times
    flatter, so the foam core thickens towards the sides, closed by side walls."""
    table_core_mm: float = 12.0
    """Thickness (mm) of the couch's foam core at the midline (the curved cradle's core thickens
    to the sides): about 10 mm for a thin sandwich tabletop like the example CT's, 30-50 mm for
    thicker couches."""
    table_shell_mm: float = 4.0
    """Thickness (mm) of the carbon-fibre top shell and side walls (the base plate is 1 mm
    thicker); rendered at 500 HU: about 400 HU at 1 mm pixels, 100-300 at 2.5 mm after partial
    volume."""
    arms: str = "none"
    """``none``, ``down`` (beside the trunk, over the whole z-range) or ``up`` (above the head, out
    of the field of view: nothing drawn, like ``none``)."""
    arm_gap_mm: float = 5.0
    """Left-right gap (mm) between the trunk's skin and each arm's (0 = touching). The arms rest
    on the couch's surface (a few mm up), like the trunk."""
    elbow_mm: float | None = None
    """z (mm) of the elbow joints; None: drawn from the seed between the middles of L3 and L2
    (each elbow a few mm apart)."""
    shift_mm: tuple[float, float] = (0.0, 0.0)
    """In-plane shift (mm) of the patient from the scanner's centre: (to the patient's left,
    posterior). Realistic: up to about 60 left-right and 40 anterior-posterior."""
    rotate_deg: float = 0.0
    """Roll of the patient about the body axis (degrees; positive: the left side goes
    posterior). Realistic: up to about 8."""
    contrast_hu: float | None = None
    """HU of a contrast-filled aorta and common iliac arteries (150-350 on contrast CT); None:
    no vessels drawn (the body is uniform soft tissue)."""
    aorta_mm: float = 24.0
    """Aortic diameter (mm); the common iliac arteries are 0.42 of it."""


@dataclass
class Torso:
    """A synthetic CT torso volume with the z-range of each vertebra and where the extras lie."""
    hu: np.ndarray
    """(z, rows, cols) float32 HU."""
    spacing_mm: tuple[float, float, float]
    """(z, row, col) spacing in mm."""
    vertebrae: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Body z-range (mm, torso coordinates) of each vertebra by name (S1, L5, ... T9)."""
    z_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """z of each slice (mm)."""
    layout: dict = field(default_factory=dict)
    """Where the extras went: ``table_top_y_mm`` (scanner y of the table's top surface at its
    centre, mm, y posterior with the image centre at y = 20), ``elbow_z_mm`` (right, left),
    ``in_view`` (whether the trunk and arms lie wholly inside the image)."""

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


# -- what real scans add around the patient ------------------------------------------------------

_BODY_AX, _BODY_AY, _BODY_Y = 165.0, 115.0, 10.0
"""The trunk's skin: an ellipse of these semi-axes (mm, left-right and anterior-posterior) centred at
y = 10 (the ellipse in :func:`make_torso`)."""
_SHELL_HU, _CORE_HU, _BASE_HU = 500.0, -850.0, 450.0
"""Couch materials: carbon-fibre shell and walls, foam core, base plate (HU before partial volume)."""
_MUSCLE_HU, _FAT_HU = 45.0, -100.0
# arm girth (semi-axes, mm) against s = z - elbow: hand (flat, in the sagittal plane), wrist, forearm, elbow, upper arm
_ARM_S = [-400.0, -262.0, -240.0, -225.0, -30.0, 0.0, 40.0, 400.0]
_ARM_RX = [15.0, 15.0, 24.0, 26.0, 33.0, 34.0, 35.0, 38.0]
_ARM_RY = [40.0, 40.0, 18.0, 20.0, 29.0, 30.0, 34.0, 38.0]
_CORTEX_HU, _MARROW_HU, _CANCELLOUS_HU = 1100.0, -30.0, 250.0
"""Arm bones: cortical bone (shafts), fatty marrow, cancellous bone at the ends (HU)."""


@dataclass
class _Pose:
    """The patient's placement: roll about the body axis (at the trunk's centre) and in-plane shift."""

    cos: float = 1.0
    sin: float = 0.0
    sx: float = 0.0
    sy: float = 0.0

    @classmethod
    def of(cls, spec: TorsoSpec) -> _Pose:
        """The pose of ``spec``: its roll (``rotate_deg``) and in-plane shift (``shift_mm``)."""
        a = math.radians(spec.rotate_deg)
        return cls(math.cos(a), math.sin(a), float(spec.shift_mm[0]), float(spec.shift_mm[1]))

    def to_patient(self, xs, ys):
        """Scanner (x, y) in mm to patient coordinates (undo the shift and the roll about the trunk's centre)."""
        dx, dy = xs - self.sx, ys - _BODY_Y - self.sy
        return self.cos * dx + self.sin * dy, -self.sin * dx + self.cos * dy + _BODY_Y

    def to_scanner(self, xp, yp):
        """Patient (x, y) in mm to scanner coordinates (roll about the trunk's centre, then shift)."""
        dy = yp - _BODY_Y
        return self.cos * xp - self.sin * dy + self.sx, self.sin * xp + self.cos * dy + _BODY_Y + self.sy


def _trunk_half_width(y):
    """Half-width (mm) of the elliptical trunk outline at patient y (0 outside the trunk)."""
    return _BODY_AX * np.sqrt(np.clip(1.0 - ((np.asarray(y) - _BODY_Y) / _BODY_AY) ** 2, 0.0, 1.0))


@dataclass
class _Arm:
    """One arm hanging beside the trunk, resting on the couch's surface (or where a curved couch's
    surface would be when there is no table)."""

    side: int
    """+1 the patient's left, -1 the right."""
    elbow: float
    """z of the elbow joint (mm)."""
    size: float
    """Girth factor."""
    lift: float
    """Height (mm) of the arm above the surface the trunk lies on."""
    rest_radius: float
    """Curvature radius (mm) of that surface (inf: flat)."""

    def section(self, zz: float, gap: float):
        """The arm's cross-section at ``zz`` (patient coordinates): centre (|x|, y), semi-axes (mm)
        and bones, each as (u lateral, v posterior, semi-axes a and b, cortex thickness, cortex HU,
        inner HU)."""
        s = zz - self.elbow
        rx = float(np.interp(s, _ARM_S, _ARM_RX)) * self.size
        ry = float(np.interp(s, _ARM_S, _ARM_RY)) * self.size
        v = np.linspace(-ry, ry, 41)
        across = rx * np.sqrt(np.clip(1 - (v / ry) ** 2, 0, 1))
        bottom, R = _BODY_Y + _BODY_AY, self.rest_radius
        t = np.linspace(0.0, np.pi, 37)  # the arm's lower half
        ya = _BODY_Y + 30.0
        for _ in range(4):  # beside the trunk (gap left-right), on the surface the trunk lies on
            xa = float(np.max(_trunk_half_width(ya + v) + gap + across))
            if math.isinf(R):
                ya = bottom - ry - self.lift
            else:  # highest centre whose outline stays inside the circle (radius R - lift) through the trunk's bottom
                reach = np.clip((R - self.lift) ** 2 - (xa + rx * np.cos(t)) ** 2, 0.0, None)
                ya = float(np.min(bottom - R - ry * np.sin(t) + np.sqrt(reach)))
        return xa, ya, rx, ry, _arm_bones(s)


def _arm_bones(s: float) -> list[tuple]:
    """Bones of the arm at s = z - elbow (mm), in the arm's frame (see :meth:`_Arm.section`)."""
    bones = []
    if s > 45:  # humeral shaft
        bones.append((-3.0, 1.0, 11.0, 11.0, 5.0, _CORTEX_HU, _MARROW_HU))
    elif s > 0:  # distal humerus flaring to the epicondyles, more cancellous towards the joint
        w = 1.0 - s / 45.0
        bones.append((-3.0, 1.0, 11.0 + 18.0 * w ** 1.5, 11.0 + 3.0 * w, 5.0 - 3.0 * w, _CORTEX_HU - 200 * w,
                      _MARROW_HU + (_CANCELLOUS_HU - _MARROW_HU) * w))
    if -25 < s < 15:  # olecranon (proximal ulna), behind the humerus
        bones.append((-4.0, 20.0, 10.0, 9.0, 2.0, 1000.0, _CANCELLOUS_HU))
    if -22 < s < -2:  # radial head
        bones.append((13.0, -3.0, 10.0, 10.0, 2.0, 1000.0, _CANCELLOUS_HU))
    if -240 < s <= -15:  # ulna, thinning to the wrist, with its head at the end
        t = min(max((-s - 15.0) / 225.0, 0.0), 1.0)
        r = 7.5 - 3.0 * t + 2.5 * max(0.0, (t - 0.9) / 0.1)
        bones.append((-6.0 + 2.0 * t, 10.0 - 6.0 * t, r, r, 2.5, _CORTEX_HU, _MARROW_HU))
    if -240 < s <= -22:  # radius, widening to the distal radius at the wrist
        t = min(max((-s - 22.0) / 218.0, 0.0), 1.0)
        flare = max(0.0, (t - 0.8) / 0.2)
        r = 6.5 + 1.5 * t + 8.0 * flare ** 2
        bones.append((12.0 - 5.0 * t, -3.0 - 3.0 * t, r, r * (1 - 0.2 * flare), 2.5 - 1.2 * flare, _CORTEX_HU,
                      _MARROW_HU + (_CANCELLOUS_HU - _MARROW_HU) * flare))
    if -262 < s <= -240:  # carpal bones
        bones += [(0.0, -15.0 + 10.0 * j, 6.0, 6.0, 1.5, 800.0, 300.0) for j in range(4)]
    if s <= -262:  # metacarpals (the hand flat beside the thigh)
        bones += [(0.0, -24.0 + 16.0 * j, 4.5, 4.5, 1.5, 1000.0, _MARROW_HU) for j in range(4)]
    return bones


def _draw_arm(sl: np.ndarray, arm: _Arm, zz: float, spec: TorsoSpec, pose: _Pose, ss: int = 3) -> None:
    """Render one arm into an axial slice (scanner grid) with partial volume (ss x ss subsamples)."""
    n, px = spec.matrix, spec.pixel_mm
    xa, ya, rx, ry, bones = arm.section(zz, spec.arm_gap_mm)
    xs_c, ys_c = pose.to_scanner(arm.side * xa, ya)
    reach = max(rx, ry) + 2 * px
    c0 = max(0, int(math.floor((xs_c - reach) / px + n / 2 - 0.5)))
    c1 = min(n, int(math.ceil((xs_c + reach) / px + n / 2 - 0.5)) + 1)
    r0 = max(0, int(math.floor((ys_c - 20.0 - reach) / px + n / 2 - 0.5)))
    r1 = min(n, int(math.ceil((ys_c - 20.0 + reach) / px + n / 2 - 0.5)) + 1)
    if c0 >= c1 or r0 >= r1:
        return
    offs = ((np.arange(ss) + 0.5) / ss - 0.5) * px
    sub_x = ((np.arange(c0, c1) - n / 2 + 0.5) * px)[:, None] + offs[None, :]
    sub_y = ((np.arange(r0, r1) - n / 2 + 0.5) * px + 20.0)[:, None] + offs[None, :]
    XP, YP = pose.to_patient(*np.meshgrid(sub_x.ravel(), sub_y.ravel()))
    U, V = arm.side * XP - xa, YP - ya
    hu = np.full(U.shape, np.nan)
    hu[(U / rx) ** 2 + (V / ry) ** 2 <= 1] = _FAT_HU
    hu[(U / (rx - 7)) ** 2 + (V / (ry - 7)) ** 2 <= 1] = _MUSCLE_HU
    for u, v, a, b, t, cortex, inner in bones:
        hu[((U - u) / a) ** 2 + ((V - v) / b) ** 2 <= 1] = cortex
        if a > t and b > t:
            hu[((U - u) / (a - t)) ** 2 + ((V - v) / (b - t)) ** 2 <= 1] = inner
    inside = np.isfinite(hu)
    shape = (r1 - r0, ss, c1 - c0, ss)
    cover = inside.reshape(shape).mean(axis=(1, 3))
    total = np.where(inside, hu, 0.0).reshape(shape).sum(axis=(1, 3)) / ss ** 2
    sl[r0:r1, c0:c1] = sl[r0:r1, c0:c1] * (1.0 - cover) + total


def _make_arms(spec: TorsoSpec, vertebrae: dict, rng: np.random.Generator) -> list[_Arm]:
    """The two arms (right, left) with the elbow near L2-L3 (or ``spec.elbow_mm``), random girth and lift."""
    mid = {name: (lo + hi) / 2 for name, (lo, hi) in vertebrae.items()}
    elbow = spec.elbow_mm if spec.elbow_mm is not None else rng.uniform(mid["L3"], mid["L2"])
    size = rng.uniform(0.92, 1.05)
    # on the surface the trunk lies on (the mattress's top, less the gap), so both clear the table by the gap
    radius = math.inf if spec.table == "flat" else spec.table_radius_mm - spec.table_pad_mm - spec.table_gap_mm
    return [_Arm(side, float(elbow + rng.uniform(-6.0, 6.0)), size, rng.uniform(0.0, 4.0), radius)
            for side in (-1, 1)]


def _outline(spec: TorsoSpec, pose: _Pose, arms: list[_Arm], zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points on the patient's skin (trunk at any z, arms every 5 mm), in scanner coordinates."""
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    xp, yp = [_BODY_AX * np.cos(t)], [_BODY_Y + _BODY_AY * np.sin(t)]
    t = t[::10]
    for arm in arms:
        for zz in np.arange(zs[0] - spec.slice_mm / 2, zs[-1] + spec.slice_mm / 2 + 5.0, 5.0):
            xa, ya, rx, ry, _ = arm.section(float(zz), spec.arm_gap_mm)
            xp.append(arm.side * (xa + rx * np.cos(t)))
            yp.append(ya + ry * np.sin(t))
    return pose.to_scanner(np.concatenate(xp), np.concatenate(yp))


def _make_table(spec: TorsoSpec, xs: np.ndarray, ys: np.ndarray, ss: int = 4):
    """The couch on the scanner grid: (fraction of each pixel covered, its mean HU there, y of the
    top surface at the centre). ``xs, ys``: the patient's outline in scanner coordinates (the table goes
    ``table_gap_mm`` below it)."""
    n, px = spec.matrix, spec.pixel_mm
    pad, gap, t, R, w2 = spec.table_pad_mm, spec.table_gap_mm, spec.table_shell_mm, spec.table_radius_mm, \
        spec.table_width_mm / 2
    curved = spec.table == "curved"
    if curved:  # lowest placement of the arc (radius R - pad at the pad's top) clearing every point by gap
        rt = R - pad - gap
        m = np.abs(xs) < rt
        y0 = float(np.max(ys[m] - np.sqrt(rt ** 2 - xs[m] ** 2))) + R
    else:
        y0 = float(np.max(ys)) + gap + pad
    offs = ((np.arange(ss) + 0.5) / ss - 0.5) * px
    sub = (((np.arange(n) - n / 2 + 0.5) * px)[:, None] + offs[None, :]).ravel()
    X, Y = np.meshgrid(sub, sub + 20.0)
    y_base = y0 + t + spec.table_core_mm  # the base plate's top at the centre
    if curved:  # depth below the top shell's top and below the base plate's top (3 x flatter)
        d = np.hypot(X, Y - (y0 - R)) - R
        d_base = np.hypot(X, Y - (y_base - 3 * R)) - 3 * R
    else:
        d, d_base = Y - y0, Y - y_base
    inx = np.abs(X) <= w2
    between = inx & (d >= 0) & (d_base < 0)
    hu = np.full(X.shape, np.nan)
    hu[between] = _CORE_HU
    hu[between & ((d < t) | (np.abs(X) > w2 - t))] = _SHELL_HU
    hu[inx & (d_base >= 0) & (d_base < t + 1.0)] = _BASE_HU
    if pad > 0:
        hu[(np.abs(X) <= w2 - t) & (d >= -pad) & (d < 0)] = spec.table_pad_hu
    inside = np.isfinite(hu)
    shape = (n, ss, n, ss)
    count = inside.reshape(shape).sum(axis=(1, 3))
    mean = np.where(inside, hu, 0.0).reshape(shape).sum(axis=(1, 3)) / np.maximum(count, 1)
    return (count / ss ** 2).astype(np.float32), mean.astype(np.float32), y0 - pad


def _aorta(zz: float, spec: TorsoSpec, vertebrae: dict, cy: float, k: float) -> list[tuple[float, float, float]]:
    """Lumen discs (x, y, radius) of the aorta at ``zz``, left-anterior of the vertebral body
    (``cy``: its centre's y), or of the two common iliac arteries below the bifurcation (mid-L4)."""
    r = spec.aorta_mm / 2
    z_bif = sum(vertebrae["L4"]) / 2
    if zz >= z_bif:  # in the chest it lies further left and back, beside the vertebral body
        up = min(max((zz - vertebrae["T12"][0]) / 100.0, 0.0), 1.0)
        return [(14.0 + 8.0 * up, cy - 16.0 * k - r - 2.0 + 14.0 * up, r)]
    d = z_bif - zz
    rc = r - 0.58 * r * min(d / 12.0, 1.0)
    out = []
    for side in (-1, 1):
        x = 14.0 * (1 - min(d / 40.0, 1.0)) + side * min(0.6 * d, 80.0)
        out.append((x, cy - 16.0 * k - r - 2.0 + (r - rc) - 0.25 * max(0.0, d - 50.0), rc))
    return out


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
    if spec.table not in ("none", "curved", "flat"):
        raise ValueError(f"table must be none, curved or flat, not {spec.table!r}")
    if spec.arms not in ("none", "down", "up"):
        raise ValueError(f"arms must be none, down or up, not {spec.arms!r}")
    if min(spec.table_gap_mm, spec.table_pad_mm, spec.table_core_mm, spec.arm_gap_mm) < 0:
        raise ValueError("gaps and the mattress cannot be negative")
    pose = _Pose.of(spec)
    if any(spec.shift_mm) or spec.rotate_deg:  # the anatomy is drawn in the patient's coordinates
        X, Y = pose.to_patient(X, Y)

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
    # the extras draw from their own stream, so the default torso renders as it always did
    rng_extra = np.random.default_rng([spec.seed, 3])
    arms = _make_arms(spec, vertebrae, rng_extra) if spec.arms == "down" else []
    xs_out, ys_out = _outline(spec, pose, arms, zs)
    half_fov = n * px / 2
    layout: dict = {"in_view": bool(np.all(np.abs(xs_out) <= half_fov) and np.all(np.abs(ys_out - 20.0) <= half_fov)),
                    "elbow_z_mm": tuple(a.elbow for a in arms) or None, "table_top_y_mm": None}
    table = None
    if spec.table != "none":
        t_cover, t_hu, layout["table_top_y_mm"] = _make_table(spec, xs_out, ys_out)
        table = t_cover > 0
        t_cover, t_hu = t_cover[table], t_hu[table]

    def spine_y(zz):  # lordosis: the lumbar spine bows anteriorly
        """Patient y (mm) of the spine at body z ``zz`` (mm), bowed anteriorly by ``spec.lordosis_mm``."""
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
        if spec.contrast_hu is not None:
            for ax_, ay_, ar in _aorta(zz, spec, vertebrae, cy, k):
                sl[np.hypot(X - ax_, Y - ay_) <= ar] = spec.contrast_hu
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
        for arm in arms:
            _draw_arm(sl, arm, float(zz), spec, pose)
        if table is not None:
            sl[table] = sl[table] * (1.0 - t_cover) + t_hu * t_cover
        vol[i] = sl
    # slice thickness: average the 1 mm grid over each slice
    out = np.empty((zs.size, n, n), np.float32)
    for j, zc in enumerate(zs):
        sel = np.abs(fine - zc) <= spec.slice_mm / 2
        out[j] = vol[sel].mean(axis=0)
    out = gaussian_filter(out, sigma=(0, 0.6, 0.6))
    out += rng.normal(0, spec.noise_hu, out.shape).astype(np.float32)
    return Torso(hu=np.clip(out, -1024, 3071),
                 spacing_mm=(spec.slice_mm, px, px), vertebrae=vertebrae, z_mm=zs, layout=layout)
