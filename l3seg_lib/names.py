"""File-name, cell and file-writing helpers shared by the writers of outputs.

:func:`safe_name` turns any identifier (a PatientID, an input's file name) into a short, portable
file name; :func:`clean_text` drops control characters from a cell of a table or page;
:func:`csv_cell` also neutralises cells a spreadsheet would run as a formula (OWASP CSV injection),
and :func:`csv_value` reads such a cell back as the value it was; :func:`atomic_path` gives a
writer a temporary name renamed into place only when the file is complete (no torn outputs).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
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


def _formula_like(value: str) -> bool:
    """Whether a cleaned cell would be run as a formula by a spreadsheet (starts, after blanks,
    with ``= + - @``) and is not a plain number."""
    return value.lstrip()[:1] in ("=", "+", "-", "@") and not _NUMBER.fullmatch(value.strip())


def _quoted(value: str) -> bool:
    """Whether :func:`csv_cell` prefixes the cleaned ``value`` with ``'``: a formula-like cell, or a
    cell that is ``'`` followed by one (so that :func:`csv_value` reads every cell back exactly)."""
    return _formula_like(value) or (value[:1] == "'" and _quoted(value[1:]))


def csv_cell(value: Any) -> Any:
    """A cell as written to a CSV: :func:`clean_text` (a leading tab or CR becomes a blank), and a
    string a spreadsheet would run as a formula (starting, after blanks, with ``= + - @``; OWASP
    rule) prefixed with ``'``; numbers, and strings that are plain numbers (``-12.5``), are kept as
    they are. One-to-one on cleaned text: :func:`csv_value` gives back the cleaned value."""
    if not isinstance(value, str):
        return value
    value = clean_text(value)
    return "'" + value if _quoted(value) else value


def csv_value(cell: Any) -> Any:
    """The value a cell written by :func:`csv_cell` stood for (its ``'`` prefix removed where
    :func:`csv_cell` added it): ``'=HYPERLINK(...)`` reads back as ``=HYPERLINK(...)``, ``'+1``
    as ``+1``; other cells, and values that are no strings, unchanged."""
    if isinstance(cell, str) and cell[:1] == "'" and _quoted(cell[1:]):
        return cell[1:]
    return cell


def read_csv_values(path: str | Path, **kwargs: Any):
    """A CSV written with :func:`csv_cell` cells read back as a pandas table of the values they
    stood for (:func:`csv_value` on each text cell)."""
    import pandas as pd

    df = pd.read_csv(path, **kwargs)
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype):
            df[c] = df[c].map(csv_value)
    return df


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same folder, same suffix, hidden name) to write the file
    to; renamed onto ``path`` when the block ends without error, removed when it fails. So a write
    that is interrupted or fails never leaves a torn file under the final name (a crash at worst
    leaves a hidden ``.tmp...`` file, which nothing reads)."""
    path = Path(path)
    tmp = path.with_name(f".tmp{os.getpid()}-{threading.get_ident() % 100000}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is not None and Path(exc.filename).name == tmp.name:
            exc.filename = str(path)  # the error names the file being written, not its temporary name
        raise


def input_stem(path: str | Path) -> str:
    """The name of an input without its image suffix (``ct.nii.gz`` -> ``ct``)."""
    name = Path(path).name
    for ext in IMAGE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
