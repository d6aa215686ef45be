"""Series of one patient that disagree (issue 30): one measured while another was listed for
review because L3 could not be told in it, or two measured at levels far apart. Each such input
gets a sentence naming the other series, which becomes a review reason of its rows (and so shows
on the patient page and in ``measurements.csv``) or is added to its ``errors.csv`` line.

Levels are compared along the body axis (``slice_location_mm``, mm) only between series that share
a frame of reference (the same scan: a crop, a reconstruction); two studies of one patient lie on
different tables and may differ by any amount.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from l3seg_lib.measurement.result import InputResult, InputStatus

LEVEL_APART_MM = 20.0
"""Two series of one frame of reference measured further apart than this (mm along the body axis;
about two thirds of an adult L3 body's height) were not measured at the same vertebra."""


def _name(source: str) -> str:
    """The input's folder or file name (no machine path on pages)."""
    return Path(source).name or source


def _patient(res: InputResult) -> str | None:
    """The input's patient id: from its rows, or from its review entry."""
    if res.rows:
        return str(res.rows[0].patient_id)
    for e in res.errors:
        if e.get("patient_id"):
            return str(e["patient_id"])
    return None


def series_disagreements(results: list[InputResult], frames: dict[str, str] | None = None) -> dict[str, list[str]]:
    """``{source: [sentences]}`` for every input of a patient whose series disagree: measured
    beside a series listed for review (L3 not located), or measured more than
    :data:`LEVEL_APART_MM` from another series of the same frame of reference (``frames``:
    ``{source: FrameOfReferenceUID}``; without it no levels are compared)."""
    by_patient: dict[str, list[InputResult]] = defaultdict(list)
    for res in results:
        pid = _patient(res)
        if pid is not None and (res.rows or res.status == InputStatus.REVIEW):
            by_patient[pid].append(res)
    out: dict[str, list[str]] = defaultdict(list)
    for group in by_patient.values():
        if len(group) < 2:
            continue
        measured = [r for r in group if r.rows]
        review = [r for r in group if not r.rows and r.status == InputStatus.REVIEW]
        for m in measured:
            for r in review:
                out[m.source].append(f"another series of this patient ({_name(r.source)}) could not be located at "
                                     "L3: check on both review pictures that this slice is L3")
                out[r.source].append(f"another series of this patient ({_name(m.source)}) was measured at slice "
                                     f"{m.rows[0].slice_index}: compare the two review pictures")
        for i, a in enumerate(measured):
            for b in measured[i + 1:]:
                fa, fb = (frames or {}).get(a.source), (frames or {}).get(b.source)
                if not fa or fa != fb:
                    continue
                za = float(np.median([r.slice_location_mm for r in a.rows]))
                zb = float(np.median([r.slice_location_mm for r in b.rows]))
                if abs(za - zb) > LEVEL_APART_MM:
                    for x, y in ((a, b), (b, a)):
                        out[x.source].append(f"another series of this patient in the same scan ({_name(y.source)}) "
                                             f"was measured {abs(za - zb):.0f} mm away along the body axis: "
                                             "the two are not at the same level; check both review pictures")
    return dict(out)


def apply_disagreements(results: list[InputResult], notes: dict[str, list[str]]) -> None:
    """Add each input's sentences to its rows' review reasons, or to its review entry's error text
    (once: a batch that writes its outputs again adds nothing twice)."""
    for res in results:
        for sentence in notes.get(res.source, []):
            for row in res.rows:
                if sentence not in (row.review_reasons or ""):
                    row.review_required = True
                    row.review_reasons = "; ".join(x for x in (row.review_reasons, sentence) if x)
            for e in res.errors:
                if e.get("review") and sentence not in e["error"]:
                    e["error"] = f"{e['error']}; {sentence}"
