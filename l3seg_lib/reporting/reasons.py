"""Review reasons for readers: each reason of ``review_reasons`` given a severity, a short label and
the verdicts it puts in doubt, so that pages rank the reasons and a verdict a flag doubts is shown
as *provisional* (in the page, ``measurements.csv`` and the SR), never as final.

The reasons themselves are written by :mod:`l3seg_lib.measurement.flags` (and
:mod:`~l3seg_lib.measurement.consistency`); this module only reads their text, by its opening words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3seg_lib.measures import MYOSTEATOSIS, SARCOPENIA, SARCOPENIC_OBESITY, VERDICT_KEYS, VISCERAL_OBESITY
from l3seg_lib.measures import VERDICTS as CONDITIONS

VERDICTS = VERDICT_KEYS
"""The verdict columns of ``measurements.csv`` (:data:`l3seg_lib.measures.VERDICT_KEYS`)."""
VERDICT_NAMES = {v.key: v.label.lower() for v in CONDITIONS}
SEVERITIES = ("high", "medium", "low")
"""Most severe first: *high* puts a number or the level itself in doubt, *medium* shifts a number,
*low* is worth knowing."""

_AREA = (SARCOPENIA.key, SARCOPENIC_OBESITY.key, VISCERAL_OBESITY.key)
_MUSCLE = (SARCOPENIA.key, SARCOPENIC_OBESITY.key)
_DENSITY = (MYOSTEATOSIS.key,)


@dataclass(frozen=True)
class ReasonKind:
    """What a review reason that starts with :attr:`starts` means for a reader."""

    starts: str
    """Opening words of the reason (lower case)."""
    label: str
    """A few words for tables and badges."""
    severity: str
    """``high``, ``medium`` or ``low`` (:data:`SEVERITIES`)."""
    doubts: tuple[str, ...]
    """The verdicts it makes provisional."""


REASON_KINDS = (
    ReasonKind("vertebral level not verified", "level not verified", "high", VERDICTS),
    ReasonKind("l3 found with", "L3 level uncertain", "high", VERDICTS),
    ReasonKind("another series of this patient", "series disagree on the level", "high", VERDICTS),
    ReasonKind("body cut by the field of view", "body cut by the field of view", "high", _AREA),
    ReasonKind("implausible for an adult", "implausible numbers", "high", VERDICTS),
    ReasonKind("almost no muscle segmented", "almost no muscle segmented", "high", VERDICTS),
    ReasonKind("broken muscle ring", "broken muscle ring", "high", _MUSCLE + _DENSITY),
    ReasonKind("possibly missed muscle", "muscle possibly missed", "high", _MUSCLE),
    ReasonKind("sat inside the muscle wall", "SAT inside the muscle wall", "medium", ("visceral_obesity",)),
    ReasonKind("low model confidence", "low model confidence", "medium", VERDICTS),
    ReasonKind("iv contrast", "IV contrast", "medium", _DENSITY),
    ReasonKind("tube voltage", "tube voltage not 120 kVp", "medium", _DENSITY),
    ReasonKind("slice thickness", "thick slice", "low", _DENSITY),
)
"""Every review reason l3seg writes, most severe first."""
_OTHER = ReasonKind("", "other", "medium", ())
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Reason:
    """One review reason of a slice: its full text and what it means."""

    text: str
    kind: ReasonKind

    @property
    def severity(self) -> str:
        """``high``, ``medium`` or ``low``."""
        return self.kind.severity

    @property
    def label(self) -> str:
        """A few words (the kind's label; the first words of the text for a reason not listed)."""
        return self.kind.label if self.kind is not _OTHER else self.text.split(":")[0][:60]


def kind_of(text: str) -> ReasonKind:
    """The :class:`ReasonKind` of one reason (a medium-severity *other* for a reason not listed)."""
    low = text.strip().lower()
    return next((k for k in REASON_KINDS if low.startswith(k.starts)), _OTHER)


def split_reasons(text: Any) -> list[str]:
    """The reasons of a ``review_reasons`` cell (``"; "``-joined sentences; a sentence may itself
    hold ``"; "``: a piece that does not open a known reason is joined to the one before)."""
    if not isinstance(text, str) or not text.strip():
        return []
    out: list[str] = []
    for piece in text.split("; "):
        if out and kind_of(piece) is _OTHER:
            out[-1] = f"{out[-1]}; {piece}"
        else:
            out.append(piece)
    return out


def ranked_reasons(text: Any) -> list[Reason]:
    """The reasons of a ``review_reasons`` cell, most severe first (stable within a severity)."""
    reasons = [Reason(t, kind_of(t)) for t in split_reasons(text)]
    return sorted(reasons, key=lambda r: _RANK[r.severity])


def _false(value: Any) -> bool:
    """Whether a cell says *false* (``hu_calibrated``: a bool, or its text in a CSV read back)."""
    if isinstance(value, str):
        return value.strip().lower() in ("false", "0", "no")
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and not bool(value)


PNG_HU = "HU estimated from an 8-bit PNG"
"""Why myosteatosis is provisional on a slice read from a PNG export (no DICOM rescale values)."""


def verdict_status(row: Mapping[str, Any]) -> dict[str, str]:
    """The status of each verdict of one ``measurements.csv`` row, as the columns
    ``<verdict>_status`` (``final``, ``provisional`` or ``not computable``), ``review_severity``
    (the most severe reason: ``high``, ``medium``, ``low`` or empty) and
    ``verdicts_provisional_reason`` (which flags make which verdicts provisional; empty when none).

    A verdict is *provisional* when a review reason puts its number in doubt (e.g. a body cut by the
    field of view doubts the areas, so sarcopenia; an unverified level doubts every verdict, the
    cut-offs being set at L3): it is still written, but it is not a finding until the slice is
    checked."""
    reasons = ranked_reasons(row.get("review_reasons"))
    doubted: dict[str, list[str]] = {v: [] for v in VERDICTS}
    for r in reasons:
        for v in r.kind.doubts:
            if r.label not in doubted[v]:
                doubted[v].append(r.label)
    if _false(row.get("hu_calibrated")):
        doubted["myosteatosis"].append(PNG_HU)
    out: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for v in VERDICTS:
        value = str(row.get(v) or "")
        if value not in ("yes", "no"):
            out[f"{v}_status"] = "not computable"
        elif doubted[v]:
            out[f"{v}_status"] = "provisional"
            for label in doubted[v]:
                groups.setdefault(label, []).append(VERDICT_NAMES[v])
        else:
            out[f"{v}_status"] = "final"
    out["review_severity"] = reasons[0].severity if reasons else ""
    out["verdicts_provisional_reason"] = "; ".join(
        f"{label} ({', '.join(names)})" for label, names in groups.items())
    return out


STATUS_COLUMNS = ("sarcopenia_status", "sarcopenic_obesity_status", "myosteatosis_status",
                  "visceral_obesity_status", "review_severity", "verdicts_provisional_reason")
"""The columns :func:`verdict_status` gives, in order."""
