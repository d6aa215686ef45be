"""The node's log: one line per event, ``<time> l3seg-serve <LEVEL> event=<name> key=value ...``.

Values with spaces or quotes are written as JSON strings, so a line splits back into its fields
(:func:`parse_line`); newlines never reach the log (a multi-line message from a library is joined
with `` | ``). The log goes to stderr and, appended, to ``<out>/serve.log``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import shlex
import sys
from pathlib import Path
from typing import Any

LOGGER = "l3seg.node"
LOG_FILE = "serve.log"
_PLAIN = re.compile(r"^[\w.:/@+\-,=]*$")


def _value(v: Any) -> str:
    """One field's value as written on the line."""
    if isinstance(v, float):
        v = f"{v:.3f}".rstrip("0").rstrip(".") if v == v else "nan"
    s = str(v)
    return s if s and _PLAIN.match(s) else json.dumps(s, ensure_ascii=False)


def event_line(event: str, **fields: Any) -> str:
    """``event=<event> k=v ...`` (fields that are None are left out)."""
    parts = [f"event={event}"] + [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event line on the node's logger."""
    logging.getLogger(LOGGER).log(level, event_line(event, **fields))


def parse_line(line: str) -> dict[str, str]:
    """The fields of a log line (``time``, ``level`` and every ``key=value``); {} for another line."""
    head, sep, rest = line.partition(" l3seg-serve ")
    if not sep:
        return {}
    level, _, rest = rest.partition(" ")
    fields = {"time": head, "level": level}
    try:
        tokens = shlex.split(rest, posix=True)
    except ValueError:
        return fields
    for token in tokens:
        k, eq, v = token.partition("=")
        if eq:
            fields[k] = v
    return fields


class _OneLine(logging.Formatter):
    """ISO time with milliseconds, ``l3seg-serve``, the level and the message on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line."""
        msg = record.getMessage()
        if record.exc_info:
            msg += " | " + self.formatException(record.exc_info)
        if record.name != LOGGER:
            msg = event_line("library", source=record.name, message=msg)
        stamp = _dt.datetime.fromtimestamp(record.created).isoformat(timespec="milliseconds")
        return f"{stamp} l3seg-serve {record.levelname} " + msg.replace("\r", " ").replace("\n", " | ")


LIBRARIES = ("highdicom", "py.warnings")
"""Loggers whose messages go to the node's log too (highdicom's, and Python warnings such as
highdicom's and pydicom's, through :func:`logging.captureWarnings`), as ``event=library`` lines."""


def setup_logging(out: Path | None, verbose: bool = False) -> list[logging.Handler]:
    """Send the node's events to stderr and ``out/serve.log``, with the warnings of highdicom and
    pydicom (``event=library``); pynetdicom's own messages only with ``verbose`` (without it, a
    failed send is one ``send-failed`` line whose reason says what pynetdicom saw). Returns the
    handlers added (for :func:`close_logging`)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out / LOG_FILE, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(_OneLine())
    node = logging.getLogger(LOGGER)
    node.setLevel(logging.DEBUG if verbose else logging.INFO)
    node.propagate = False
    lib = logging.getLogger("pynetdicom")
    lib.setLevel(logging.INFO if verbose else logging.ERROR)
    lib.propagate = False
    lib.addHandler(logging.NullHandler())  # without --verbose its messages go nowhere (not to stderr either)
    logging.captureWarnings(True)
    for h in handlers:
        node.addHandler(h)
        if verbose:
            lib.addHandler(h)
        for name in LIBRARIES:
            logging.getLogger(name).addHandler(h)
    for name in LIBRARIES:
        logging.getLogger(name).propagate = False
    return handlers


def close_logging(handlers: list[logging.Handler]) -> None:
    """Remove and close the handlers :func:`setup_logging` added."""
    for name in (LOGGER, "pynetdicom", *LIBRARIES):
        for h in handlers:
            logging.getLogger(name).removeHandler(h)
    logging.captureWarnings(False)
    for name in LIBRARIES:
        logging.getLogger(name).propagate = True
    for h in handlers:
        h.close()
