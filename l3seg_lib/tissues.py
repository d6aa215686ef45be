"""The tissues l3seg segments and measures, in one table: the bottom layer every other module
imports its class vocabulary from (it imports only numpy and the standard library).

Model classes (label values in every class mask): 0 background, 1 skeletal muscle, 2
subcutaneous adipose tissue (SAT), 3 visceral adipose tissue (VAT). IMAT (intermuscular adipose
tissue) is no model class: it is the part of the muscle compartment (label 1) whose HU lie in
the IMAT range (:func:`imat_mask`); it has a Slice-O-Matic tag (2) and a DICOM SEG segment (4).

Each :class:`Tissue` holds its label value, key (``muscle``, ``sat``, ``vat``, ``imat``: the
names in params files, label maps and CSV columns), display names, overlay colour, Slice-O-Matic
tag, DICOM SEG coded concept and default HU range. HU ranges are those of the Alberta protocol
(Mourtzakis 2008), inclusive at both ends; user ranges are completed with them by
:func:`complete_hu_ranges`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

PRIVATE_SCHEME = "99L3SEG"
"""Private DICOM coding scheme for concepts without a standard code (designators starting with
99 are private by the DICOM standard)."""


@dataclass(frozen=True)
class Code:
    """A DICOM coded concept: code value, coding scheme designator, code meaning."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class Tissue:
    """One tissue of the table."""

    label: int
    """Class value in class masks (1-3); for IMAT, which is no class, its DICOM SEG segment number (4)."""
    key: str
    """Short machine name: ``muscle``, ``sat``, ``vat`` or ``imat``."""
    name: str
    """Display name for legends and label files, e.g. ``subcutaneous fat (SAT)``."""
    short: str
    """Short display name for axes and tables, e.g. ``SAT``."""
    rgb: tuple[int, int, int]
    """Overlay colour, 8-bit RGB."""
    tag: int
    """Slice-O-Matic tag value."""
    seg_code: Code
    """DICOM SEG segmented property type."""
    seg_label: str
    """DICOM SEG segment label."""
    hu_range: tuple[float, float]
    """Default HU range (low, high), inclusive: threshold refinement, or the IMAT rule."""

    @property
    def hex(self) -> str:
        """Overlay colour as ``#rrggbb``."""
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)

    @property
    def segment_number(self) -> int:
        """Segment number in the DICOM SEG l3seg writes (the label value; 4 for IMAT)."""
        return self.label


BACKGROUND = 0
"""Label value of background (everything that is none of the tissues)."""
BACKGROUND_KEY = "background"

MUSCLE = Tissue(1, "muscle", "skeletal muscle", "skeletal muscle", (230, 57, 70), 1,
                Code("127954009", "SCT", "Skeletal muscle"), "skeletal muscle", (-29.0, 150.0))
SAT = Tissue(2, "sat", "subcutaneous fat (SAT)", "SAT", (255, 200, 60), 7,
             Code("SAT", PRIVATE_SCHEME, "Subcutaneous adipose tissue"), "subcutaneous adipose tissue (SAT)",
             (-190.0, -30.0))
VAT = Tissue(3, "vat", "visceral fat (VAT)", "VAT", (60, 170, 230), 5,
             Code("VAT", PRIVATE_SCHEME, "Visceral adipose tissue"), "visceral adipose tissue (VAT)",
             (-150.0, -50.0))
IMAT = Tissue(4, "imat", "intermuscular fat (IMAT)", "IMAT", (80, 200, 120), 2,
              Code("IMAT", PRIVATE_SCHEME, "Intermuscular adipose tissue"), "intermuscular adipose tissue (IMAT)",
              (-190.0, -30.0))

CLASSES: tuple[Tissue, ...] = (MUSCLE, SAT, VAT)
"""The model's foreground classes, in label order."""
ALL_TISSUES: tuple[Tissue, ...] = (*CLASSES, IMAT)
"""The classes and IMAT: every tissue measured, and every segment of the DICOM SEG, in order."""
BY_KEY: Mapping[str, Tissue] = MappingProxyType({t.key: t for t in ALL_TISSUES})
BY_LABEL: Mapping[int, Tissue] = MappingProxyType({t.label: t for t in CLASSES})

CLASS_NAMES: tuple[str, ...] = (BACKGROUND_KEY, *(t.key for t in CLASSES))
"""Class keys in label order: ``background, muscle, sat, vat`` (index = label value)."""
TISSUES: tuple[str, ...] = CLASS_NAMES[1:]
"""Foreground class keys in label order: ``muscle, sat, vat``."""
N_CLASSES = len(CLASS_NAMES)

IDENTITY_LABEL_MAP: dict[str, list[int]] = {k: [i] for i, k in enumerate(CLASS_NAMES)}
"""Label map (class key -> source values) of masks that already hold the classes 0-3."""
SLICE_O_MATIC_TAGS: dict[str, list[int]] = {
    BACKGROUND_KEY: [BACKGROUND], **{t.key: [t.tag] + ([IMAT.tag] if t is MUSCLE else []) for t in CLASSES}}
"""Label map of Slice-O-Matic tags (1 muscle, 2 IMAT, 7 SAT, 5 VAT). IMAT lies inside the muscle
compartment, so its tag maps to muscle like the model's muscle class."""
CLASS_TO_TAG: dict[int, int] = {t.label: t.tag for t in CLASSES}
"""Class label -> Slice-O-Matic tag (IMAT, tag 2, is painted over muscle by :func:`tag_map`)."""

HURange = tuple[float, float]
DEFAULT_HU_RANGES: Mapping[str, HURange] = MappingProxyType({t.key: t.hu_range for t in ALL_TISSUES})
"""Default HU ranges per tissue key (Alberta protocol): muscle -29..150, SAT -190..-30,
VAT -150..-50, IMAT -190..-30 HU."""


def complete_hu_ranges(hu_ranges: Mapping[str, tuple[float, float]] | None = None) -> dict[str, HURange]:
    """Every tissue's HU range (low, high in HU, inclusive): the given ones, and the defaults
    (:data:`DEFAULT_HU_RANGES`) for those not given. ``{"muscle": (-30, 150)}`` keeps the SAT,
    VAT and IMAT defaults. Raises ValueError for an unknown tissue key or a range whose low end
    is not below its high end."""
    given = dict(hu_ranges or {})
    unknown = sorted(set(given) - set(DEFAULT_HU_RANGES))
    if unknown:
        raise ValueError(f"unknown tissue(s) {unknown} in the HU ranges; known: {list(DEFAULT_HU_RANGES)}")
    out: dict[str, HURange] = {}
    for key, default in DEFAULT_HU_RANGES.items():
        rng = given.get(key, default)
        try:
            lo, hi = (float(v) for v in rng)
        except (TypeError, ValueError):
            raise ValueError(f"HU range of {key} must be [low, high], got {rng!r}") from None
        if not lo < hi:
            raise ValueError(f"HU range of {key} must be [low, high] with low < high, got {[lo, hi]}")
        out[key] = (lo, hi)
    return out


def in_range(hu: np.ndarray, hu_range: tuple[float, float]) -> np.ndarray:
    """Pixels whose HU lie within ``hu_range`` (low, high), both ends included."""
    return (hu >= hu_range[0]) & (hu <= hu_range[1])


def refined_mask(labels: np.ndarray, hu: np.ndarray, key: str,
                 hu_ranges: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """The pixels of class ``key`` (muscle, sat, vat) within its HU range (completed with the
    defaults); ``imat`` gives :func:`imat_mask`."""
    if key == IMAT.key:
        return imat_mask(labels, hu, hu_ranges)
    return (np.asarray(labels) == BY_KEY[key].label) & in_range(hu, complete_hu_ranges(hu_ranges)[key])


def imat_mask(labels: np.ndarray, hu: np.ndarray, hu_ranges: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """IMAT: the muscle-compartment pixels (label 1) whose HU lie in the IMAT range of
    ``hu_ranges`` (completed with the defaults, so a mapping without ``imat`` uses -190..-30 HU)."""
    labels, hu = np.asarray(labels), np.asarray(hu)
    if labels.shape != hu.shape:
        raise ValueError(f"labels {labels.shape} and HU {hu.shape} differ in shape")
    return (labels == MUSCLE.label) & in_range(hu, complete_hu_ranges(hu_ranges)[IMAT.key])


def tag_map(labels: np.ndarray, hu: np.ndarray, hu_ranges: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """Slice-O-Matic tags (uint8) of a class mask: 1 muscle, 7 SAT, 5 VAT, and 2 where the muscle
    is IMAT (:func:`imat_mask`)."""
    labels = np.asarray(labels)
    tags = np.zeros(labels.shape, np.uint8)
    for t in CLASSES:
        tags[labels == t.label] = t.tag
    tags[imat_mask(labels, hu, hu_ranges)] = IMAT.tag
    return tags


def segment_masks(labels: np.ndarray, hu: np.ndarray,
                  hu_ranges: Mapping[str, tuple[float, float]] | None = None) -> list[np.ndarray]:
    """Boolean masks of the DICOM SEG segments, in :data:`ALL_TISSUES` order (muscle, SAT, VAT, IMAT)."""
    labels = np.asarray(labels)
    return [labels == t.label for t in CLASSES] + [imat_mask(labels, hu, hu_ranges)]
