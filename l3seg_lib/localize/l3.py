"""Finding L3 in a CT volume by counting vertebrae from two independent anchors: up from the
sacrum, and down from the last rib-bearing vertebra (T12).

Method (bone-based, offline, CPU, no learned weights; :mod:`.spine` and :mod:`.anchors`):

1. The trunk per slice without the table, the couch pad and arms lying apart (:func:`.spine.trunk_masks`).
2. The spinal canal traced along z: soft tissue enclosed by bone in front, behind and at both
   sides, seen in a slab of slices (robust to a contrast-filled aorta brighter than the
   vertebrae, to off-centre and rotated patients and to scoliosis); the vertebral-body centre
   is the bone run in front of it.
3. The 90th percentile of HU in a box at the body centre along z is high in vertebral bodies and
   drops at the intervertebral discs: the discs are the chain of such minima spaced like vertebrae.
4. Anchor 1, the sacrum: the field of view goes on for more than a vertebra below the lowest
   disc, with no further disc, the ilium beside the column and no lung: that disc is L5/S1.
   Anchor 2, T12: ribs traced in 3-D from near the spine far to the side; the lowest vertebra
   whose body they meet is T12 (ribs at the vertebra above it confirm the series).
5. Both anchors name the same vertebra L3: confidence ``high``. One anchor only (the other out
   of the field of view, or not confirmed): ``medium``, with the reason. Neither, or the two
   disagree (transitional anatomy: six lumbar-type vertebrae, eleven or thirteen rib pairs; or
   a missed disc): ``cannot tell``, with the reason. Checks: the lumbar vertebrae must have
   similar heights; L3 must lie wholly in the field of view (both its discs).

A failed check or a missing anchor never becomes a guess: :class:`L3Location` says ``cannot
tell`` and why, and the case goes to review.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from l3seg_lib.config import LocalizeConfig
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.localize.anchors import disc_chain, disc_width_mm, lumbosacral_disc, rib_levels
from l3seg_lib.localize.spine import Spine, trace_spine

FOUND, CANNOT_TELL = "found", "cannot tell"


@dataclass
class Vertebra:
    """One vertebra found by counting: its name and the slice range of its body."""
    name: str
    z_lo: int
    """Lowest slice of the vertebral body (canonical index, inferior -> superior)."""
    z_hi: int
    ribs: bool | None = None
    """Whether ribs arise at this level (checked for T12 and L1 only)."""

    @property
    def middle(self) -> int:
        """Middle slice of the vertebral body (canonical index)."""
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
    """``high`` (the counts from the sacrum and from T12 agree), ``medium`` (one anchor only,
    the reason in ``notes``) or ``none``."""
    anchors: list[str] = field(default_factory=list)
    """The anchors the count rests on: ``sacrum``, ``T12 (last ribs)``."""
    vertebrae: list[Vertebra] = field(default_factory=list)
    discs: list[int] = field(default_factory=list)
    """Disc slice indices, inferior to superior."""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    method: str = "vertebra count from the sacrum and from the last ribs (bone)"
    # for the review picture
    centre_col: int | None = None
    """Median column of the vertebral bodies (original pixels)."""
    centre_row: np.ndarray | None = None
    """Row of the vertebral-body centre per slice (original pixels)."""
    column: np.ndarray | None = None
    """(z, 2) vertebral-body centre per slice (original row, column): the traced spine, which the
    review picture follows through scoliosis and off-centre placement."""

    @property
    def found(self) -> bool:
        """Whether L3 was found."""
        return self.status == FOUND

    def summary(self) -> str:
        """One-line summary: L3's slice range and measured slice, or why L3 cannot be told."""
        if not self.found:
            return f"L3 cannot be told: {self.reason}"
        return (f"L3 body in slices {self.l3_range[0]}-{self.l3_range[1]}, measured at slice {self.slice_index} "
                f"(confidence {self.confidence}; {self.reason})")


def locate_l3(volume: CTVolume, cfg: LocalizeConfig | None = None) -> L3Location:
    """Find the L3 vertebral body and the slice to measure in a CT volume (see the module docstring)."""
    cfg = cfg or LocalizeConfig()
    t0 = time.perf_counter()
    loc = _locate(volume, cfg)
    loc.seconds = time.perf_counter() - t0
    return loc




def _locate(volume: CTVolume, cfg: LocalizeConfig) -> L3Location:
    """Locate L3 (untimed part of :func:`locate_l3`): trace the spine, find the intervertebral discs,
    name the vertebrae and choose the slice; a CANNOT_TELL location with the reason when that fails."""
    dz = float(volume.spacing_mm[0])
    if volume.n_slices * dz < 60.0:
        return L3Location(CANNOT_TELL, f"the volume covers only {volume.n_slices * dz:.0f} mm along the body axis; "
                                       "counting vertebrae needs several of them in view")
    if dz > 6.0:
        return L3Location(CANNOT_TELL, f"slices {dz:.1f} mm apart are too far apart to see intervertebral discs")
    spine = trace_spine(volume, cfg.bone_hu)
    if spine is None:
        return L3Location(CANNOT_TELL, "no vertebral column found: no spinal canal enclosed by bone could be traced "
                                       "over 60 mm")
    discs = disc_chain(spine.profile, spine.span, dz)
    column = np.stack([spine.body[:, 0] / spine.row_scale, spine.body[:, 1] / spine.col_scale], axis=1)
    loc = L3Location(CANNOT_TELL, "", discs=discs, centre_col=int(round(np.nanmedian(column[:, 1]))),
                     centre_row=column[:, 0], column=column)
    if len(discs) < 3:
        loc.reason = f"only {len(discs)} intervertebral disc(s) found; too few vertebrae to count"
        return loc
    width = disc_width_mm(spine.profile, discs, dz)
    inverted = False
    if width > max(11.0, 2.5 * dz):
        # low-density bodies between dense endplates: the dips are the bodies' centres and the
        # discs show as bright bands (the endplates either side of a thin disc, merged)
        bright = disc_chain(-spine.profile, spine.span, dz)
        if len(bright) < 3 or disc_width_mm(-spine.profile, bright, dz) > max(11.0, 2.5 * dz):
            loc.reason = (f"the intervertebral discs cannot be told from the vertebral bodies: the dips along the spine "
                          f"are {width:.0f} mm wide, as wide as a body, and no regular bright endplate bands either")
            return loc
        discs = loc.discs = bright
        inverted = True
        loc.notes.append("the discs were read as bright endplate bands (low-density vertebral bodies): check the picture")
    trim = spine.zmm(cfg.disc_margin_mm)

    # anchor 1: the sacrum below the lowest disc -> L5/S1 (added when faint), vertebra 0 is L5
    with_l5s1, sacrum_why = lumbosacral_disc(spine, discs, cfg.bone_hu)
    from_sacrum = with_l5s1 is not None
    if from_sacrum:
        discs = loc.discs = with_l5s1
    # anchor 2: the last rib-bearing vertebra is T12
    ribs = rib_levels(spine, cfg.bone_hu)
    t12, t12_why = _last_rib_vertebra(ribs, discs, spine)
    counts = {}
    if from_sacrum:
        counts["sacrum"] = 2  # vertebra index of L3: L5, L4, L3
    if t12 is not None:
        counts["T12 (last ribs)"] = t12 - 3  # T12, L1, L2, L3
    if not counts:
        loc.reason = f"no anchor to count from: {sacrum_why}; {t12_why}"
        return loc
    if len(set(counts.values())) > 1:
        loc.reason = (f"transitional anatomy suspected: counted up from the sacrum, L3 is the vertebra above disc "
                      f"{discs[counts['sacrum']]}; counted down from the last rib-bearing vertebra (T12), it is the "
                      f"vertebra above disc {discs[counts['T12 (last ribs)']]} (six or four lumbar-type vertebrae, "
                      "eleven or thirteen rib pairs, or a missed disc); read the level by eye")
        return loc
    k3 = next(iter(counts.values()))
    # one anchor only: the other must be out of view, not merely unconfirmed where it should be
    if "sacrum" in counts and t12 is None and k3 + 4 < len(discs) - 1:
        loc.reason = (f"transitional anatomy suspected: the vertebra counted as T12 from the sacrum (slices "
                      f"{discs[k3 + 4]}-{discs[k3 + 5]}) is in view but the last ribs do not confirm it ({t12_why})")
        return loc
    if "T12 (last ribs)" in counts and not from_sacrum and k3 - 2 >= 0 and discs[k3 - 2] * dz > 60.0:
        loc.reason = (f"the sacrum should lie below the disc counted as L5/S1 from T12 (slice {discs[k3 - 2]}), with "
                      f"{discs[k3 - 2] * dz:.0f} mm of the field of view below it, but it is not there ({sacrum_why}): "
                      "transitional anatomy or a missed disc suspected")
        return loc
    loc.anchors = list(counts)
    names = _names(k3, len(discs) - 1)
    loc.vertebrae = [Vertebra(names[k], discs[k] + trim, max(discs[k] + trim, discs[k + 1] - trim))
                     for k in range(len(discs) - 1) if names[k]]
    if t12 is not None:
        for vt in loc.vertebrae:
            if vt.name in ("L1", "T12", "T11"):
                vt.ribs = vt.name != "L1"
    if not 0 <= k3 < len(discs) - 1:
        loc.reason = ("L3 is not wholly in the field of view: " + ("the scan ends inside or above it" if k3 < 0 else
                      "the scan ends inside or below it") + f" (counted from {' and '.join(counts)})")
        return loc
    # heights of the lumbar vertebrae between the anchors must be regular (no missed disc)
    heights = [(discs[k + 1] - discs[k]) * dz for k in range(len(discs) - 1) if names[k].startswith("L")]
    if len(heights) >= 3 and not 0.6 <= min(heights) / np.median(heights) <= max(heights) / np.median(heights) <= 1.6:
        loc.reason = (f"count ambiguous: lumbar vertebra heights {', '.join(f'{h:.0f}' for h in heights)} mm are "
                      "irregular (one far from their median: a disc may have been missed or added)")
        return loc
    if len(counts) == 2 and not inverted:
        confidence = "high"
    else:
        confidence = "medium"
        if len(counts) == 1:
            loc.notes.append(("only counted up from the sacrum; the last rib-bearing vertebra (T12) could not "
                              f"confirm it: {t12_why}") if "sacrum" in counts else
                             ("only counted down from the last rib-bearing vertebra (T12); the sacrum could not "
                              f"confirm it: {sacrum_why}"))
    l3 = next(vt for vt in loc.vertebrae if vt.name == "L3")
    loc.status, loc.confidence, loc.l3_range = FOUND, confidence, (l3.z_lo, l3.z_hi)
    loc.slice_index = _measure_slice(l3, cfg, spine)
    n = cfg.average_slices
    loc.slices = [i for i in range(loc.slice_index - n, loc.slice_index + n + 1) if l3.z_lo <= i <= l3.z_hi]
    loc.reason = " and ".join(
        ([f"counted up from the lumbosacral disc (slice {discs[0]})"] if "sacrum" in counts else [])
        + ([f"counted down from T12, the last rib-bearing vertebra (above disc {discs[t12]})"]
           if "T12 (last ribs)" in counts else []))
    return loc


def _names(k3: int, n: int) -> list[str]:
    """Names of vertebrae 0..n-1 (between consecutive discs) when vertebra ``k3`` is L3."""
    order = ["S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7", "T6", "T5", "T4"]
    out = []
    for k in range(n):
        j = order.index("L3") + (k - k3)
        out.append(order[j] if 0 <= j < len(order) else "")
    return out


def _last_rib_vertebra(ribs: list[tuple[float, int]], discs: list[int], spine: Spine) -> tuple[int | None, str]:
    """Index of the lowest vertebra that bears ribs (vertebra k lies between discs k and k+1; the
    one above the highest disc is ``len(discs) - 1``), when the ribs are confirmed (on both sides
    at that vertebra, or at the vertebra above too), their heads lie clearly inside that
    vertebra (not within a fifth of a vertebra of a disc) and a rib-free vertebra lies below it;
    else None and why."""
    if not ribs:
        return None, "no ribs in the field of view"
    pitch = float(np.median(np.diff(discs)))
    by_level: dict[int, list[tuple[float, int]]] = {}
    for z, side in ribs:
        by_level.setdefault(int(np.searchsorted(discs, z, side="right")) - 1, []).append((z, side))
    lowest = min(by_level)
    if lowest < 1:
        return None, "rib-like bone lies low in the field of view, with no rib-free vertebra below it"
    if len({side for _, side in by_level[lowest]}) < 2 and lowest + 1 not in by_level:
        return None, (f"ribs were found on one side only at the lowest rib-bearing vertebra (above disc "
                      f"{discs[lowest]}) and not at the vertebra above it: the last ribs cannot be confirmed")
    for z, _ in by_level[lowest]:
        near = float(np.min(np.abs(np.asarray(discs) - z)))
        if near < 0.2 * pitch:
            return None, (f"the last ribs meet the spine at slice {z:.0f}, at a disc (slice "
                          f"{discs[int(np.argmin(np.abs(np.asarray(discs) - z)))]}): which vertebra bears them is unclear")
    return lowest, ""


def _measure_slice(l3: Vertebra, cfg: LocalizeConfig, spine: Spine) -> int:
    """The middle of the L3 body, or the slice through its transverse processes (the widest bone
    20 mm behind the body centre)."""
    if cfg.slice == "middle":
        return l3.middle
    widths = []
    for i in range(l3.z_lo, l3.z_hi + 1):
        bone = spine.v[i] > cfg.bone_hu
        r0 = int(round(spine.body[i, 0] + 20.0 / spine.pr))
        rb = slice(max(0, r0 - int(round(8.0 / spine.pr))), r0 + int(round(8.0 / spine.pr)) + 1)
        line = bone[rb, :].any(axis=0)
        lat = np.abs(spine.lateral_mm(i, np.arange(bone.shape[1])))
        widths.append(float(lat[line].max()) if line.any() else 0.0)
    return int(l3.z_lo + int(np.argmax(widths)))
