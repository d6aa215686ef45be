"""File-name and cell helpers shared by the writers of outputs.

:func:`safe_name` turns any identifier (a PatientID, an input's file name) into a short, portable
file name; :func:`clean_text` drops control characters from a cell of a table or page;
:func:`csv_cell` also neutralises cells a spreadsheet would run as a formula (OWASP CSV injection).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png")

MAX_NAME = 80
"""Longest name :func:`safe_name` returns (callers add suffixes such as ``_s000_seg.dcm``)."""
_HASH = 10
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def safe_name(name: str, max_len: int = MAX_NAME) -> str:
    """A short, unique, portable file name for ``name`` (any string).

    ASCII letters, digits and ``._-`` are kept, every other character becomes ``_``; no leading dot
    (no hidden files, no ``.``/``..``), no trailing dot or space, no Windows device name, at most
    ``max_len`` characters. A name already safe is returned as it is; any other gets ``_`` and a
    short hash of the original appended, so two identifiers never share a file name.
    """
    name = str(name)
    s = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in name)
    s = re.sub(r"^\.+", lambda m: "_" * len(m.group()), s).rstrip(". ")
    if s.split(".")[0].upper() in _WINDOWS_RESERVED:
        s = "_" + s
    if s == name and 0 < len(s) <= max_len:
        return s
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH]
    s = s[: max(max_len - _HASH - 1, 0)]
    return f"{s}_{digest}" if s else digest


def clean_text(value: Any) -> Any:
    """``value`` with control characters removed when it is a string (tab, CR and LF become a
    space; NUL, ESC, DEL, C1 controls are dropped); other values unchanged."""
    if not isinstance(value, str):
        return value
    if value.isprintable():
        return value
    return "".join(" " if c in "\t\r\n" else c for c in value
                   if c in "\t\r\n" or unicodedata.category(c) != "Cc")


def csv_cell(value: Any) -> Any:
    """A cell as written to a CSV: :func:`clean_text`, and a string a spreadsheet would run as a
    formula (starting with ``= + - @``, tab or CR, OWASP rule) prefixed with ``'``; numbers, and
    strings that are plain numbers (``-12.5``), are kept as they are."""
    if not isinstance(value, str):
        return value
    starts = value[:1] in ("\t", "\r")
    value = clean_text(value)
    head = value.lstrip()[:1]
    if (starts or head in ("=", "+", "-", "@")) and not _NUMBER.fullmatch(value.strip()):
        return "'" + value
    return value


def input_stem(path: str | Path) -> str:
    """The name of an input without its image suffix (``ct.nii.gz`` -> ``ct``)."""
    name = Path(path).name
    for ext in IMAGE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
