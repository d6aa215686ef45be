"""Where each file of a measured folder went: ``measurements.csv``, ``errors.csv`` or ``skipped.csv``.

A batch accounts for every file it was given in exactly one of its three tables:

* a file of an input that was measured is in ``measurements.csv`` (its input's ``source``), unless
  the input left it out (``skipped.csv``: a duplicate position, a localiser, another series...);
* a file of an input that was refused (or listed for review) is in ``errors.csv`` (its input's
  ``source``);
* a file or sub-folder that is no input (a note, a hidden file, a folder of masks) is in
  ``skipped.csv`` with the folder as ``source``.

:func:`account_files` lists, for each file, the tables it is found in; a batch is sound when each
file is found in exactly one (``tests/measurement/test_accounting.py`` checks it for every hostile and intake
case the tests build).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from l3seg_lib.measurement.inputs import SeriesEntry, discover
from l3seg_lib.names import csv_value

TABLES = ("measurements.csv", "errors.csv", "skipped.csv")


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    """A table written by the batch (text cells as :func:`~l3seg_lib.names.csv_cell` wrote them,
    read back); an empty table when it is absent or empty."""
    if not path.is_file() or not path.read_text().strip():
        return pd.DataFrame(columns=columns)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for c in columns:
        if c in df:
            df[c] = df[c].map(csv_value)
    return df


def account_files(folder: str | Path, out: str | Path) -> pd.DataFrame:
    """One row per file (or left-out sub-folder) of ``folder`` as ``measure`` found it: ``file``
    (relative to ``folder``), ``input`` (the input's ``source``, or ``""``), ``found_in`` (the
    tables that account for it, joined by ``+``; ``""`` when none does)."""
    folder, out = Path(folder), Path(out)
    inputs, left_out = discover(folder)
    measured = set(_read(out / "measurements.csv", ["source"]).get("source", []))
    refused = set(_read(out / "errors.csv", ["source"]).get("source", []))
    skipped = _read(out / "skipped.csv", ["source", "file"])
    skipped_pairs = set(zip(skipped.get("source", []), skipped.get("file", [])))
    rows = []
    for name, _why in left_out:
        rows.append({"file": name, "input": "", "found_in": "skipped.csv" if (str(folder), name) in skipped_pairs else ""})
    for entry in inputs:
        source = str(entry.image)
        if isinstance(entry, SeriesEntry):
            files = list(entry.files)
        elif entry.image.is_dir():
            files = sorted(p for p in entry.image.iterdir() if p.is_file())
        else:
            files = [entry.image]
        for f in files:
            where = []
            if (source, f.name) in skipped_pairs:
                where.append("skipped.csv")
            else:
                where += [t for t, hit in (("measurements.csv", source in measured), ("errors.csv", source in refused))
                          if hit]
            rows.append({"file": str(f.relative_to(folder)) if f.is_relative_to(folder) else str(f), "input": source,
                         "found_in": "+".join(where)})
    return pd.DataFrame(rows, columns=["file", "input", "found_in"])


def unaccounted(folder: str | Path, out: str | Path) -> pd.DataFrame:
    """The rows of :func:`account_files` not found in exactly one table (empty for a sound batch)."""
    table = account_files(folder, out)
    return table[(table["found_in"] == "") | table["found_in"].str.contains("+", regex=False)]
