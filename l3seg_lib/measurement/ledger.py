"""The ledger of a batch: one row per input as it finishes, so a batch can resume.

``<out>/ledger.csv`` lists input, status (``measured``, ``refused``, ``review``), reason,
seconds, the model file's SHA-256 and the time; ``<out>/inputs/<key>.json`` keeps what the input
contributed (rows, errors, skipped files, validation). Each is written and flushed as the input
finishes, after its files (overlay, masks, SEG/SR) are complete, so an interrupted batch loses
nothing already written and never lists an input whose files are missing or torn.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from l3seg_lib.measurement.result import InputResult
from l3seg_lib.names import atomic_path, csv_cell, csv_value, safe_name

LEDGER = "ledger.csv"
COLUMNS = ["source", "status", "reason", "seconds", "model_sha256", "finished"]


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """JSON fallback for values json cannot serialise: numpy scalars to Python numbers and bools, others to str."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


class Ledger:
    """The ledger of one output folder, for one model (by its hash)."""

    def __init__(self, out: Path, model_sha256: str):
        """Open the ledger of folder ``out`` for the model with hash ``model_sha256`` (``inputs/`` created)."""
        self.out, self.model_sha256 = out, model_sha256
        self.path = out / LEDGER
        (out / "inputs").mkdir(parents=True, exist_ok=True)

    def _key(self, source: str) -> Path:
        """Path of the per-input JSON results file of ``source`` (its name and a short hash of the path)."""
        digest = hashlib.sha1(source.encode()).hexdigest()[:10]
        return self.out / "inputs" / f"{safe_name(Path(source).name)[:60]}_{digest}.json"

    def record(self, result: InputResult) -> None:
        """Write one finished input: its results, then its ledger row."""
        key = self._key(result.source)
        with atomic_path(key) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), default=_plain))
        new = not self.path.is_file()
        row = pd.DataFrame([{"source": csv_cell(result.source), "status": result.status, "reason": csv_cell(result.reason),
                             "seconds": round(result.seconds, 3), "model_sha256": self.model_sha256,
                             "finished": _dt.datetime.now().isoformat(timespec="seconds")}], columns=COLUMNS)
        torn = not new and not self._ends_with_newline()  # a row cut by a kill: never glue the next one to it
        with open(self.path, "a") as f:
            if torn:
                f.write("\n")
            row.to_csv(f, header=new, index=False)
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        """Whether the ledger file is empty or ends with a line break."""
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def finished(self) -> dict[str, InputResult]:
        """Results of the inputs this model already finished (the last ledger row per input)."""
        if not self.path.is_file():
            return {}
        try:
            rows = pd.read_csv(self.path, dtype=str, keep_default_na=False, on_bad_lines="skip")
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            return {}
        rows["source"] = rows["source"].map(csv_value)  # as csv_cell wrote it: the input's path again
        rows = rows.drop_duplicates("source", keep="last")
        done = {}
        for _, r in rows[rows["model_sha256"] == self.model_sha256].iterrows():
            key = self._key(r["source"])
            if key.is_file():
                try:
                    done[r["source"]] = InputResult.from_dict(json.loads(key.read_text()))
                except (json.JSONDecodeError, TypeError, KeyError):
                    continue  # torn or foreign file: measured again
        return done
