"""Durable intake of the node: every instance is on disk before its C-STORE is answered, and a
series is complete when no instance of it has arrived for ``series_timeout`` seconds.

Layout under the output folder::

    incoming/.part/                 instances being written (removed at start: never acknowledged)
    incoming/<series>/<sop>.dcm     instances of series still arriving (acknowledged)
    series/<series>/<sop>.dcm       complete series, measured from here

``<series>`` and ``<sop>`` are :func:`l3seg_lib.names.safe_name` of the SeriesInstanceUID and
SOPInstanceUID. An instance is written to ``incoming/.part``, flushed and fsync'ed, then renamed
into its series folder (the folder fsync'ed too); only then is success answered. A complete series
folder is renamed from ``incoming/`` to ``series/`` in one step. A restarted node finds the
series left in ``incoming/`` (their timeout starts again at the restart) and the ones in
``series/`` that the ledger does not list (:mod:`.service` measures them).

Instances of a series that was already completed: when they are all instances the node already
holds (a PACS sending the series again), they are dropped (logged); when some are new, the series
is completed again as a new generation ``series/<series>_g2`` (the earlier instances linked in),
measured as an input of its own (whose result supersedes the earlier one: :mod:`.service`).

To have a series measured again on purpose, put a file named by its SeriesInstanceUID into
``remeasure/`` (``touch DIR/remeasure/<SeriesInstanceUID>``): the node completes the series
again as a new generation from the instances it holds (or, when the series is being sent again at
that moment, from what arrives) and removes the file (:meth:`Intake.remeasure_requested`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from l3seg_lib.errors import SeriesTooLarge
from l3seg_lib.names import safe_name

INCOMING = "incoming"
SERIES = "series"
REMEASURE = "remeasure"
"""Folder of requests to measure a series again: one empty file per SeriesInstanceUID."""
PART = ".part"
SUFFIX = ".dcm"


def fsync_dir(path: Path) -> None:
    """fsync a folder, so that a rename or a new file in it survives a crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class Arriving:
    """A series whose instances are arriving."""

    name: str
    """Folder name (safe name of the SeriesInstanceUID)."""
    series_uid: str
    last: float
    """time.monotonic() of the last instance (or of the node's start for a recovered series)."""
    instances: int = 0
    nbytes: int = 0


@dataclass
class Completed:
    """A series moved to ``series/``, ready to be measured."""

    folder: Path
    series_uid: str
    instances: int
    nbytes: int
    generation: int = 1


class Intake:
    """The durable store of received instances and the stability of their series (thread-safe:
    C-STOREs arrive on the association threads)."""

    def __init__(self, out: Path, series_timeout: float = 10.0, max_series_bytes: int | None = None,
                 fsync: bool = True):
        """Under ``out``: ``incoming/`` and ``series/``, created."""
        self.out = Path(out)
        self.incoming = self.out / INCOMING
        self.series = self.out / SERIES
        self.part = self.incoming / PART
        self.timeout = float(series_timeout)
        self.max_bytes = max_series_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._arriving: dict[str, Arriving] = {}
        self.requests = self.out / REMEASURE
        for d in (self.incoming, self.series, self.part, self.requests):
            d.mkdir(parents=True, exist_ok=True)

    # -- start ------------------------------------------------------------------------------------
    def recover(self) -> list[Arriving]:
        """Clear half-written instances and take up the series left arriving (their timeout starts now)."""
        for p in self.part.iterdir():
            try:
                p.unlink()
            except OSError:
                pass
        found = []
        now = time.monotonic()
        with self._lock:
            for d in sorted(self.incoming.iterdir()):
                if not d.is_dir() or d.name == PART:
                    continue
                files = [p for p in d.iterdir() if p.is_file() and p.name.endswith(SUFFIX)]
                if not files:
                    shutil.rmtree(d, ignore_errors=True)
                    continue
                a = Arriving(d.name, series_uid_of(files[0]) or d.name, now, len(files),
                             sum(p.stat().st_size for p in files))
                self._arriving[d.name] = a
                found.append(a)
        return found

    # -- receiving --------------------------------------------------------------------------------
    def store(self, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance durably into its series folder; returns its path. Raises
        :class:`~l3seg_lib.errors.SeriesTooLarge` when the series would pass the size limit (nothing kept), OSError when
        the disk refuses (nothing kept)."""
        name, sop = safe_name(series_uid), safe_name(sop_uid)
        tmp = self.part / f"{sop}.{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            with self._lock:
                a = self._arriving.get(name)
                already = 0 if a is None else a.nbytes
                if self.max_bytes is not None and already + len(data) > self.max_bytes:
                    raise SeriesTooLarge(f"series {series_uid} would pass {self.max_bytes / 1e6:.0f} MB")
                folder = self.incoming / name
                new_folder = not folder.is_dir()
                folder.mkdir(exist_ok=True)
                dest = folder / f"{sop}{SUFFIX}"
                replaced = dest.exists()
                os.replace(tmp, dest)
                if self.fsync:
                    fsync_dir(folder)
                    if new_folder:
                        fsync_dir(self.incoming)
                if a is None:
                    a = self._arriving[name] = Arriving(name, series_uid, time.monotonic())
                a.last = time.monotonic()
                if not replaced:
                    a.instances += 1
                    a.nbytes += len(data)
            return dest
        finally:
            if tmp.exists():
                try:
                    tmp.unlink()
                except OSError:
                    pass

    def arriving(self) -> list[Arriving]:
        """The series still arriving (copies)."""
        with self._lock:
            return [Arriving(**vars(a)) for a in self._arriving.values()]

    # -- completing -------------------------------------------------------------------------------
    def complete_stable(self, now: float | None = None, everything: bool = False) -> tuple[list[Completed], list[Arriving]]:
        """Move every series with no instance for ``series_timeout`` seconds (all of them with
        ``everything``) to ``series/``: (completed series, series dropped as repeats of a
        completed one)."""
        now = time.monotonic() if now is None else now
        done, dropped = [], []
        with self._lock:
            for name, a in list(self._arriving.items()):
                if not everything and now - a.last < self.timeout:
                    continue
                del self._arriving[name]
                c = self._promote(a)
                if c is None:
                    dropped.append(a)
                else:
                    done.append(c)
        return done, dropped

    def generations(self, name: str) -> list[Path]:
        """The folders of series ``name`` in ``series/``, first generation first."""
        gens = [self.series / name] if (self.series / name).is_dir() else []
        k = 2
        while (self.series / f"{name}_g{k}").is_dir():
            gens.append(self.series / f"{name}_g{k}")
            k += 1
        return gens

    def _promote(self, a: Arriving) -> Completed | None:
        """Rename ``incoming/<name>`` to its folder in ``series/`` (called with the lock held)."""
        src = self.incoming / a.name
        gens = self.generations(a.name)
        if not gens:
            target, generation = self.series / a.name, 1
        else:
            held = {p.name for g in gens for p in g.iterdir()}
            new = [p for p in src.iterdir() if p.name not in held]
            if not new and not self._take_request(a.name):
                shutil.rmtree(src, ignore_errors=True)
                return None
            for p in gens[-1].iterdir():  # the series so far, plus the new instances
                if not (src / p.name).exists():
                    try:
                        os.link(p, src / p.name)
                    except OSError:
                        shutil.copy2(p, src / p.name)
            generation = len(gens) + 1
            target = self.series / f"{a.name}_g{generation}"
        os.rename(src, target)
        if self.fsync:
            fsync_dir(self.incoming)
            fsync_dir(self.series)
        self._take_request(a.name)  # measured now in any case
        files = [p for p in target.iterdir() if p.is_file()]
        return Completed(target, a.series_uid, len(files), sum(p.stat().st_size for p in files), generation)

    # -- measuring again on request -----------------------------------------------------------------
    def _take_request(self, name: str) -> bool:
        """Remove the request to measure series ``name`` again; whether there was one."""
        path = self.requests / name
        if not path.is_file():
            return False
        try:
            path.unlink()
        except OSError:
            return False
        return True

    def remeasure_requested(self) -> tuple[list[Completed], list[str]]:
        """Serve the requests in ``remeasure/``: each series the node holds (and that is not
        arriving) is completed again as a new generation from its last generation's instances
        (linked, not copied); (completed, names of requests for series the node does not hold,
        removed). A request for a series still arriving waits until it is complete."""
        done, unknown = [], []
        with self._lock:
            for req in sorted(self.requests.iterdir()):
                if not req.is_file():
                    continue
                name = safe_name(req.name)
                if name in self._arriving:
                    continue
                gens = self.generations(name)
                if not gens:
                    unknown.append(req.name)
                    req.unlink(missing_ok=True)
                    continue
                src = self.incoming / name
                src.mkdir(exist_ok=True)
                for p in gens[-1].iterdir():
                    if p.is_file() and not (src / p.name).exists():
                        try:
                            os.link(p, src / p.name)
                        except OSError:
                            shutil.copy2(p, src / p.name)
                first = next(iter(sorted(src.iterdir())), None)
                uid = (series_uid_of(first) if first is not None else None) or req.name
                done.append(self._promote(Arriving(name, uid, time.monotonic())))
        return [c for c in done if c is not None], unknown


def series_uid_of(path: Path) -> str | None:
    """The SeriesInstanceUID in a stored instance's header (None when unreadable)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        return str(ds.SeriesInstanceUID)
    except Exception:
        return None
