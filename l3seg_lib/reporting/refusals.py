"""Refusals for readers: the error of an input that could not be measured (``errors.csv``) turned
into what happened, in plain words without machine paths, and the next step.

``errors.csv`` keeps the full technical message; the pages show :func:`plain_refusal`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?(?:\.{0,2}[/\\])?(?:[^\s/\\:;,()'\"]+[/\\])+([^\s/\\:;,()'\"]*)")
"""A file path (absolute or relative, with at least one folder): its last part is kept."""
_PICTURE = re.compile(r"\s*\(picture: [^)]*\)")


def strip_paths(text: Any) -> str:
    """``text`` with every file path shortened to its last part (the file or folder name)."""
    return _PATH.sub(lambda m: m.group(1) or m.group(0).rstrip("/\\").rsplit("/", 1)[-1], str(text or ""))


def input_name(source: Any) -> str:
    """The name a reader knows an input by: its file or folder name, without the folders above it."""
    text = str(source or "").rstrip("/\\")
    return PurePath(text.replace("\\", "/")).name or text or "input"


@dataclass(frozen=True)
class Refusal:
    """One input that was not measured, for a reader."""

    name: str
    """The input's file or folder name."""
    problem: str
    """What happened, in plain words."""
    next_step: str
    """What to do about it."""
    review: bool
    """True when it waits for a person (L3 not located), not a broken file."""
    picture: str
    """The localiser's review picture, relative to the output folder (empty: none)."""


L3_NEXT = ("Open the picture: if the series does not reach L3 (it should span at least the lowest ribs to the "
           "pelvis), send a longer series; if you can see L3, note its slice number and measure that slice "
           "(l3seg predict SERIES --slices N, or a manifest.csv beside the series with columns image and "
           "slice_index).")
RULES: tuple[tuple[re.Pattern, str, str], ...] = (
    (re.compile(r"L3 not located, listed for review: (?P<why>.*?)(?:; to measure this series.*)?$", re.S),
     "L3 was not found in this series: {why}.", L3_NEXT),
    (re.compile(r"L3 cannot be told: (?P<why>.*?)(?:; to measure this series.*)?$", re.S),
     "L3 was not found in this series: {why}.", L3_NEXT),
    (re.compile(r"(?:DICM|force=True|not a DICOM file)", re.I),
     "This file is not a readable DICOM image (it lacks the DICOM header).",
     "Check that it is a CT image exported as DICOM; if it is another kind of file, remove it from the folder."),
    (re.compile(r"corrupt or truncated DICOM", re.I),
     "This DICOM file is damaged or incomplete.",
     "Export or copy the image again from the scanner or PACS."),
    (re.compile(r"wrong modality '(?P<mod>[^']*)'", re.I),
     "Not a CT image (modality {mod}): l3seg measures CT only.",
     "Nothing to do if it was sent by mistake; otherwise send the CT series."),
    (re.compile(r"check_hu|no air|not (?:look like )?(?:CT )?Hounsfield|HU check", re.I),
     "The pixel values do not look like CT Hounsfield units (no air at about -1000 HU was found).",
     "Check that the image is a CT exported with its rescale values (not a screenshot or a processed image). "
     "Only if the field of view truly contains no air, measure it again with --no-hu-check."),
    (re.compile(r"missing PixelSpacing", re.I),
     "The image does not say how large its pixels are, so areas in cm² cannot be computed.",
     "Export the image again with its full DICOM header (PixelSpacing)."),
    (re.compile(r"matrix is .* pixels|field of view .* smaller|too small", re.I),
     "The image is too small to be a CT slice of the abdomen.",
     "Check that this is the CT slice at L3 and not a thumbnail or a localiser (scout) image."),
    (re.compile(r"cannot be decoded", re.I),
     "The image data is compressed in a way l3seg cannot decode.",
     "Export the series uncompressed (or JPEG 2000 / JPEG lossless) from the PACS and send it again."),
    (re.compile(r"no reference mask", re.I),
     "No reference mask was found for this input, so it could not be compared with one.",
     "Add its mask to the reference folder under the same name, or ignore this line if it needs none."),
)
"""(what the technical message matches, the plain problem, the next step), first match wins."""
GENERIC_NEXT = "Check the file; errors.csv holds the full technical message."


def plain_refusal(source: Any, error: Any, review: bool = False, picture: Any = "") -> Refusal:
    """What the pages say about an input that was not measured: its name, the problem in plain
    words without machine paths, the next step; ``picture``: the localiser picture (relative path)."""
    text = _PICTURE.sub("", str(error or ""))
    src = str(source or "")
    if src and text.startswith(src + ": "):
        text = text[len(src) + 2:]
    for pattern, problem, step in RULES:
        m = pattern.search(text)
        if m:
            words = {k: strip_paths(v).strip().rstrip(".") for k, v in m.groupdict().items()}
            return Refusal(input_name(src), problem.format(**words), step, bool(review),
                           str(picture or "") if isinstance(picture, str) else "")
    plain = strip_paths(text).strip()
    return Refusal(input_name(src), plain[:1].upper() + plain[1:], GENERIC_NEXT, bool(review),
                   str(picture or "") if isinstance(picture, str) else "")
