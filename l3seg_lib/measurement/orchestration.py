"""A batch: a folder of CT inputs -> one table of body-composition numbers, per-patient HTML
summaries, an errors table, and (optionally) validation against reference masks.

Inputs are found by :func:`l3seg_lib.measurement.inputs.discover` (what it leaves out goes to
``skipped.csv``, with why) and each is measured by
:func:`l3seg_lib.measurement.stages.measure_input` - in this process, the next inputs read ahead on
threads while the network runs (:func:`prefetch`), or on Dask workers (:mod:`.cluster`). Each
input is recorded in the ledger (:mod:`.ledger`) as it finishes, so a batch resumes; the writers
(:mod:`.writers`) then write the tables and pages. One bad input is listed in ``errors.csv`` and
the batch goes on. An output that cannot be written (:class:`~l3seg_lib.errors.OutputError`) stops the
batch: it names the path, and a rerun finishes the batch. Every file is written under a temporary
name and renamed into place when complete (:func:`l3seg_lib.names.atomic_path`), an input goes to
the ledger only once its files are written, and a rerun removes what a killed batch left
half-written (:func:`remove_leftovers`). One batch at a time writes an output folder:
``<out>/.l3seg.lock`` (a second one stops with :class:`OutputInUse`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tqdm import tqdm

from l3seg_lib.errors import OutputError, OutputInUse

from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.measurement import cluster
from l3seg_lib.measurement.inputs import discover
from l3seg_lib.measurement.ledger import Ledger, file_sha256
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.result import InputResult, MeasureResult
from l3seg_lib.measurement.stages import Measurer, measure_input, read
from l3seg_lib.measurement.writers import output_error, write_atomic, write_outputs


def called(fn: Callable, *args: Any) -> Future:
    """``fn(*args)`` computed now, as a finished Future: its result, or the exception it raised
    (handed to the consumer, like a thread's exception)."""
    f: Future = Future()
    try:
        f.set_result(fn(*args))
    except BaseException as exc:
        f.set_exception(exc)
    return f


def prefetch(fn: Callable, items: Sequence, threads: int) -> Iterator[Future]:
    """Futures of ``fn(item)`` in order, computed ``threads`` at a time ahead of the consumer
    (bounded, so a long batch is never read into memory at once); ``threads=0`` computes each
    when it is asked for."""
    if threads <= 0:
        for item in items:
            yield called(fn, item)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="l3seg-read") as pool:
        pending: deque[Future] = deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) > threads:
                break
        for item in it:
            yield pending.popleft()
            pending.append(pool.submit(fn, item))
        while pending:
            yield pending.popleft()


LOCK = ".l3seg.lock"
OUTPUT_FOLDERS = ("overlays", "masks", "inputs", "patients", "localizer")
"""Folders of an output folder written per input (``dicom`` too with ``--dicom``)."""


def lock_output(out: Path) -> FileLock:
    """Create ``out`` and take its lock (:data:`LOCK`) without waiting: :class:`OutputInUse` when
    another batch holds it, :class:`~l3seg_lib.errors.OutputError` when ``out`` cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(out, exc) from exc
    lock = FileLock(str(out / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputInUse(out, out / LOCK) from None
    except OSError as exc:
        raise output_error(out / LOCK, exc) from exc
    return lock


def check_output(out: Path, folders: Sequence[str]) -> None:
    """Create the output folders and write a probe file in each, so that an unwritable output
    stops the batch before anything is measured (:class:`~l3seg_lib.errors.OutputError`, naming the path)."""
    for name in ("", *folders):
        folder = out / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(folder, exc) from exc
        probe = write_atomic(folder / f".l3seg-probe{os.getpid()}", b"")
        try:
            probe.unlink()
        except OSError as exc:
            raise output_error(probe, exc) from exc


LEFTOVERS = (".tmp*", ".l3seg-probe*", ".*.tmp")
"""Names of the temporary files a write in progress uses (:func:`~l3seg_lib.names.atomic_path`,
the probes of :func:`check_output`, the ledger's): what a killed batch may leave behind."""


def remove_leftovers(out: Path, folders: Sequence[str]) -> int:
    """Remove the temporary files that a batch killed mid-write left in ``out`` and its
    ``folders`` (never under a final name: they are hidden and nothing reads them); call it with
    the lock held, so that no other batch is writing them. How many were removed."""
    removed = 0
    for name in ("", *folders):
        for pattern in LEFTOVERS:
            for path in (out / name).glob(pattern):
                try:
                    if path.is_file() and path.name != LOCK:
                        path.unlink()
                        removed += 1
                except OSError:
                    pass  # best effort: a leftover that stays is harmless
    return removed


def page_meta(predictor: Predictor, measurer: Measurer) -> dict[str, Any]:
    """What the HTML pages say about the model, the cut-off set and the HU ranges."""
    cutoffs, comp = measurer.cutoffs, measurer.composition
    return {"model": f"{predictor.path.name}: {predictor.info.describe()}", "cutoff_set": cutoffs.name,
            "cutoff_description": cutoffs.description, "citations": cutoffs.citation_text(),
            "hu_ranges": {k: list(v) for k, v in comp.hu_ranges.items()}}


def measure_folder(folder: str | Path, model: str | Path | Predictor, out_dir: str | Path,
                   options: MeasureOptions | None = None) -> MeasureResult:
    """Segment and measure every input in ``folder``; see the module docstring.

    Writes ``measurements.csv`` (one row per patient and slice, units in column names),
    ``errors.csv`` (inputs refused, with the reason), ``skipped.csv`` (every file left out, with
    the reason: in ``folder``, sub-folders without DICOM files, hidden, unreadable and non-image
    files; inside series folders, localizers, dose reports, other series...), ``overlays/``,
    ``patients/<id>.html``, ``index.html`` and, with ``options.reference_dir``, ``validation.csv``
    and ``agreement.csv`` (Bland-Altman).

    Resumable: ``ledger.csv`` gets one row per input as it finishes (status, reason, seconds,
    model hash) and ``inputs/`` keeps its results; a rerun on the same folder and output takes
    finished inputs from there (``options.force`` redoes them; another model redoes them too).
    """
    opt = options or MeasureOptions()
    out = Path(out_dir)
    inputs, left_out = discover(folder)  # before any output folder exists: a missing input leaves none
    skipped = [{"source": str(folder), "file": name, "reason": why} for name, why in left_out]
    lock = lock_output(out)
    try:
        return _measure_locked(inputs, model, out, opt, skipped)
    finally:
        lock.release()


def _measure_locked(inputs: list, model: str | Path | Predictor, out: Path, opt: MeasureOptions,
                    skipped: list[dict[str, str]] | None = None) -> MeasureResult:
    """:func:`measure_folder` with the output folder locked, on the inputs found (``skipped``: what
    was left out of the folder, for ``skipped.csv``)."""
    folders = OUTPUT_FOLDERS + (("dicom",) if opt.dicom else ())
    check_output(out, folders)
    remove_leftovers(out, (*folders, "dicom"))  # of a batch killed mid-write (kill -9, power cut)
    predictor = model if isinstance(model, Predictor) else Predictor(model, opt.device, postprocess=opt.postprocess)
    ledger = Ledger(out, file_sha256(predictor.path))
    done = {} if opt.force else ledger.finished()
    todo = [inp for inp in inputs if str(inp.image) not in done]
    if opt.max_inputs is not None:
        todo = todo[: opt.max_inputs]
    measurer = Measurer(opt, predictor, out)

    results: dict[str, InputResult] = dict(done)

    def record(res: InputResult) -> None:
        """Write a finished input to the ledger and keep its result."""
        try:
            ledger.record(res)
        except OSError as exc:
            raise output_error(ledger.path, exc) from exc
        results[res.source] = res

    # an input goes to the ledger only once its overlays are written (they are written on a thread)
    waiting: deque[tuple[InputResult, int]] = deque()

    def record_written(raise_errors: bool = True) -> None:
        """Record the finished inputs whose overlays are all written."""
        written = measurer.overlays.written(raise_errors)
        while waiting and waiting[0][1] <= written:
            record(waiting.popleft()[0])

    if opt.workers or opt.scheduler:
        cluster.run_on_dask(todo, predictor.path, opt, out, record, opt.progress)
        todo = []
    stopped = True
    try:
        loaded = prefetch(lambda inp: read(inp, opt), todo, opt.read_threads)
        for inp, future in tqdm(zip(todo, loaded), total=len(todo), desc="measure", unit="input",
                                disable=not opt.progress, mininterval=2.0):
            waiting.append((measure_input(inp, measurer, future), measurer.overlays.submitted))
            record_written()
        stopped = False
    finally:
        try:
            measurer.close()  # every queued overlay written
        except OutputError:
            if not stopped:
                raise  # else the error that stopped the batch goes on
        finally:  # also when the batch stopped: the inputs finished, their files all written, are kept
            record_written(raise_errors=False)
    ordered = [results[str(inp.image)] for inp in inputs if str(inp.image) in results]
    return write_outputs(out, ordered, page_meta(predictor, measurer), measurer.overlays.images, skipped)
