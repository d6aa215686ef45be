"""Every error l3seg raises on purpose, in one tree under :class:`L3SegError`; each names the
offending file, folder or setting and says what is wrong with it.

- :class:`L3SegConfigError`: a params file, an override, a command-line option or a config object
  (``MeasureOptions``, ``NodeConfig``) is invalid;
- :class:`L3SegInputError`: an input file cannot be used (refused, the batch goes on);
- :class:`OutputError`, :class:`OutputInUse`: an output cannot be written, or another
  ``l3seg measure`` writes the folder (fatal for the batch);
- :class:`NodeInUse`, :class:`SeriesTooLarge`: ``l3seg serve``'s output folder is taken; a series
  received would pass its size limit;
- :class:`ResumeError`, :class:`PipelineError`: a trial log that belongs to another search; a
  notebook of the pipeline that failed.
"""

from __future__ import annotations

from pathlib import Path


class L3SegError(Exception):
    """Base class for errors raised on purpose by l3seg."""

    def __reduce__(self):
        """Pickled with its message and attributes, whatever its ``__init__`` takes (an error raised
        on a Dask worker is re-raised on the client as the same class)."""
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[L3SegError], args: tuple, state: dict) -> L3SegError:
    """An unpickled :class:`L3SegError` (see :meth:`L3SegError.__reduce__`)."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class L3SegConfigError(L3SegError, ValueError):
    """A params file, override, option or config object is invalid."""


class L3SegInputError(L3SegError, ValueError):
    """An input file cannot be used; the message starts with the file's path."""

    def __init__(self, path: str | Path | None, problem: str):
        """Error about ``path`` (None when there is no file) saying ``problem``."""
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class OutputError(L3SegError):
    """An output cannot be written (read-only or full file system, a file where a folder is
    expected, no permission): fatal for the batch, never a refused input. Names the path."""

    def __init__(self, path: str | Path, problem: str | BaseException):
        """Cannot write ``path`` because of ``problem`` (a message or the OSError)."""
        if isinstance(problem, OSError):
            problem = problem.strerror or str(problem)
        self.path, self.problem = str(path), str(problem)
        super().__init__(f"{self.path}: cannot write output: {self.problem}")


class OutputInUse(L3SegError):
    """Another ``l3seg measure`` is writing the output folder."""

    def __init__(self, out: str | Path, lock: str | Path):
        """``out`` is locked (lock file ``lock``) by another batch."""
        self.out, self.lock = Path(out), Path(lock)
        super().__init__(f"{out}: in use by another l3seg measure (lock file {lock})")


class NodeInUse(L3SegError):
    """Another ``l3seg serve`` uses the output folder."""

    def __init__(self, out: str | Path, lock: str | Path):
        """``out`` is locked (lock file ``lock``) by another node."""
        self.out, self.lock = Path(out), Path(lock)
        super().__init__(f"{out}: in use by another l3seg serve (lock file {lock})")


class SeriesTooLarge(L3SegError):
    """A series received by the node would pass its size limit (``--max-series-mb``); nothing of
    the refused instance is kept."""


class ResumeError(L3SegError, RuntimeError):
    """The trial log of a Bayesian optimisation does not belong to this search (other bounds, seed
    or settings); the message names the file."""


class PipelineError(L3SegError, RuntimeError):
    """A notebook of ``l3seg run`` failed; the message names the notebook and the cell."""
