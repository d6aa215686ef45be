"""Errors that name the offending file or setting and say what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class L3SegError(Exception):
    """Base class for errors raised on purpose by l3seg."""


class L3SegConfigError(L3SegError, ValueError):
    """A params file or override is invalid."""


class L3SegInputError(L3SegError, ValueError):
    """An input file cannot be used; the message starts with the file's path."""

    def __init__(self, path: str | Path | None, problem: str):
        """Error about ``path`` (None when there is no file) saying ``problem``."""
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
