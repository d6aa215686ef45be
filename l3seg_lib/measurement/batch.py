"""Batch measurement: a folder of CT inputs -> one table of body-composition numbers, per-patient
HTML summaries, an errors table, and (optionally) validation against reference masks.

Inputs are found by :func:`l3seg_lib.measurement.inputs.discover_inputs`. An input with more than
``max_slices`` slices (a whole series or volume) is measured where the localiser
(:mod:`l3seg_lib.localize.l3`) finds L3, with its review picture under ``localizer/``; when it
cannot tell, the input is listed for review in ``errors.csv`` (``review`` true) and not measured.
A manifest's ``slice_index`` overrides the localiser. Shorter inputs (a single slice, or a few)
are measured slice by slice as given: their vertebral level is not checked, which each row says
(``level_source``, see :data:`LEVEL_SOURCES`) and a review flag repeats
(:func:`l3seg_lib.measurement.flags.level_not_verified`). One bad input is listed in ``errors.csv``
and the batch goes on.
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from l3seg_lib.config import CompositionConfig, LocalizeConfig
from l3seg_lib.data.clinical import clinical_for, read_clinical
from l3seg_lib.data.manifest import ManifestEntry
from l3seg_lib.errors import L3SegError, L3SegInputError
from l3seg_lib.evaluation.metrics import TISSUES, bland_altman, slice_metrics
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.imageio.dicom import read_dicom_files
from l3seg_lib.imageio.labels import (
    IDENTITY_LABEL_MAP,
    SLICE_O_MATIC_TAGS,
    read_mask_for,
    remap_labels,
)
from l3seg_lib.imageio.reader import read_image
from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.localize.l3 import locate_l3
from l3seg_lib.measurement.composition import assess, get_cutoff_set, measure_slice
from l3seg_lib.measurement.flags import SliceContext, review_flags
from l3seg_lib.measurement.inputs import (
    REFERENCE_SUFFIXES,
    SeriesEntry,
    discover_inputs,
    find_reference,
)
from l3seg_lib.measurement.ledger import Ledger, file_sha256
from l3seg_lib.measurement.masks import export_masks
from l3seg_lib.names import safe_name
from l3seg_lib.reporting.html import write_index_html, write_patient_html
from l3seg_lib.reporting.overlays import save_overlay_png
from l3seg_lib.reporting.review import save_localizer_png


class L3NotLocated(L3SegInputError):
    """A whole series or volume in which L3 cannot be told: listed for review, not measured."""

    def __init__(self, path: Path, problem: str, picture: Path):
        super().__init__(path, problem)
        self.picture = picture


LEVEL_SOURCES = {"localiser": "L3 found by the localiser in the whole series or volume",
                 "manifest": "the slice named by the manifest's slice_index (vouched for by the user)",
                 "as given (level not checked)": "a single slice, or every slice of a short input, measured as "
                                                 "given: nothing checked that it lies at L3"}
"""Values of ``level_source`` in ``measurements.csv``: how the measured slice's vertebral level is known."""
NOT_CHECKED = "as given (level not checked)"

WRITE_QUEUE = 4
"""Overlay pictures waiting to be written before inference waits for them."""


@dataclass
class MeasureOptions:
    """How :func:`measure_folder` measures (everything but the inputs, the model and the output)."""

    composition: CompositionConfig = field(default_factory=CompositionConfig)
    """HU ranges and the cut-off set."""
    clinical_csv: str | Path | None = None
    """CSV with ``patient_id`` and sex, age, height, weight (see :mod:`l3seg_lib.data.clinical`)."""
    reference_dir: str | Path | None = None
    """Folder of reference masks to validate against (matched by name)."""
    reference_labels: dict[str, list[int]] | None = None
    """Label map of the reference masks (default 0-3; Slice-O-Matic tags for ``.tag``)."""
    device: str = "auto"
    check_hu: bool = True
    max_slices: int = 5
    """Inputs with more slices are whole series: L3 is found by the localiser (``localize``),
    unless the manifest gives ``slice_index``."""
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    progress: bool = True
    postprocess: bool = True
    """Clean the labels anatomically (:mod:`l3seg_lib.inference.postprocess`)."""
    read_threads: int = 2
    """Threads reading and decoding the next inputs while the network runs (0: read in turn)."""
    dicom: bool = False
    """Also write a DICOM SEG and a DICOM SR (TID 1500) per measured slice under ``dicom/``."""
    force: bool = False
    """Measure again inputs the ledger lists as finished."""
    max_inputs: int | None = None
    """Stop after this many new inputs (to test resuming)."""
    workers: int = 0
    """Measure on this many Dask workers (a LocalCluster on this machine); 0: in this process."""
    scheduler: str | None = None
    """Address of an existing Dask scheduler (``tcp://host:8786``) to measure on instead."""


def called(fn: Callable, *args: Any) -> Future:
    """``fn(*args)`` computed now, as a finished Future: its result, or the exception it raised
    (handed to the consumer, like a thread's exception)."""
    f: Future = Future()
    try:
        f.set_result(fn(*args))
    except BaseException as exc:
        f.set_exception(exc)
    return f


def read_input(inp: ManifestEntry, options: MeasureOptions) -> CTVolume:
    """The CT of one input (PNG with the spacing and window it was listed with; HU checked
    unless ``options.check_hu`` is false); a series lying loose in the measured folder from its files."""
    if isinstance(inp, SeriesEntry):
        return read_dicom_files(list(inp.files), inp.image, check_hu=options.check_hu)
    return read_image(inp.image, check_hu=options.check_hu and not inp.is_png, **inp.png_kwargs())


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


@dataclass
class MeasureResult:
    measurements: pd.DataFrame
    errors: pd.DataFrame
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    out_dir: Path | None = None
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Files inside series folders that were not measured (localizers, dose reports, other series, ...)."""


class _Context:
    """What every input of a batch is measured with."""

    def __init__(self, opt: MeasureOptions, predictor: Predictor, out: Path):
        self.opt, self.predictor, self.out = opt, predictor, out
        self.comp = opt.composition
        self.cutoffs = get_cutoff_set(opt.composition.cutoffs)
        self.clinical = read_clinical(opt.clinical_csv) if opt.clinical_csv else None
        self.ref_dir = Path(opt.reference_dir) if opt.reference_dir else None
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="l3seg-write")  # overlays, off the inference path
        self.written: deque[Future] = deque()

    def write_overlay(self, path: Path, hu: np.ndarray, labels: np.ndarray) -> None:
        self.written.append(self.writer.submit(save_overlay_png, path, hu, labels))
        while len(self.written) > WRITE_QUEUE and self.written[0].done():
            self.written.popleft().result()
        if len(self.written) > WRITE_QUEUE:  # bounded: never hold a long backlog of slices in memory
            self.written.popleft().result()

    def close(self) -> None:
        for w in self.written:
            w.result()
        self.writer.shutdown()


@dataclass
class InputResult:
    """Everything one input contributed to a batch (kept per input, so a batch can resume)."""

    source: str
    status: str = "measured"
    """``measured``, ``refused`` (errors.csv) or ``review`` (L3 not located)."""
    reason: str = ""
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)


def measure_input(inp: ManifestEntry, volume_future: Future, ctx: _Context) -> InputResult:
    """Measure one input (its volume being read in ``volume_future``); never raises for bad input."""
    t0 = time.perf_counter()
    res = InputResult(str(inp.image))
    opt, out, predictor, comp = ctx.opt, ctx.out, ctx.predictor, ctx.comp
    try:
        volume = volume_future.result()
        if inp.patient_id:
            volume.patient_id = inp.patient_id
        res.skipped = [{"source": str(inp.image), **item} for item in volume.meta.get("skipped", [])]
        notes = "; ".join(volume.meta.get("series_notes", []))
        level = {"level_source": NOT_CHECKED,
                 "l3_method": "the single slice given (vertebral level not checked)" if volume.n_slices == 1 else
                 f"every slice of a short input of {volume.n_slices} slices (vertebral level not checked)",
                 "l3_confidence": "", "l3_range": "", "localizer_picture": "", "l3_notes": "",
                 "input_slices": volume.n_slices}
        if inp.slice_index is not None:
            if not 0 <= inp.slice_index < volume.n_slices:
                raise L3SegInputError(inp.image, f"slice_index {inp.slice_index} is outside 0..{volume.n_slices - 1}")
            indices = [inp.slice_index]
            level.update(level_source="manifest", l3_method="slice_index of the manifest")
        elif volume.n_slices > opt.max_slices:
            loc = locate_l3(volume, opt.localize)
            picture = save_localizer_png(out / "localizer" / f"{safe_name(volume.patient_id)}_"
                                         f"{safe_name(inp.image.name)}.png", volume, loc)
            if not loc.found:
                raise L3NotLocated(inp.image, f"L3 not located, listed for review: {loc.reason} "
                                              f"(picture: {picture.relative_to(out)})", picture.relative_to(out))
            indices = loc.slices
            level = {"level_source": "localiser", "l3_method": loc.method, "l3_confidence": loc.confidence,
                     "l3_range": f"{loc.l3_range[0]}-{loc.l3_range[1]}",
                     "localizer_picture": str(picture.relative_to(out)), "l3_notes": "; ".join(loc.notes),
                     "input_slices": volume.n_slices}
        else:
            indices = list(range(volume.n_slices))
        spacing = (volume.spacing_mm[1], volume.spacing_mm[2])
        preds = predictor.predict_many([volume.hu[i] for i in indices], [spacing] * len(indices))
        calibrated = bool(volume.meta.get("hu_calibrated", True))
        clin = clinical_for(volume.patient_id, ctx.clinical, volume.meta)
        for i, pred in zip(indices, preds):
            m = measure_slice(volume.hu[i], pred.labels, spacing, comp.hu_ranges, calibrated,
                              volume.meta.get("png_window_hu"))
            verdict = assess(m, clin, ctx.cutoffs)
            reasons = review_flags(SliceContext(volume.hu[i], pred.labels, pred.probs, spacing, volume.meta,
                                                {**m, **verdict}, level, pred.body))
            stem = f"{safe_name(volume.patient_id)}_{safe_name(inp.image.name)}_s{i:03d}"
            overlay = out / "overlays" / f"{stem}.png"
            ctx.write_overlay(overlay, volume.hu[i], pred.labels)
            masks = export_masks(out, stem, volume.slice(i), pred.labels, comp.hu_ranges.get("imat"),
                                 tag=volume.stored_transform is not None)
            res.rows.append({
                "patient_id": volume.patient_id, "source": str(inp.image), "slice_index": i,
                "slice_id": volume.slice_ids[i], "slice_location_mm": volume.slice_locations_mm[i],
                "pixel_spacing_row_mm": spacing[0], "pixel_spacing_col_mm": spacing[1],
                "age_years": clin.get("age"), **verdict, **m, "series_notes": notes, **level,
                "files_skipped": len(volume.meta.get("skipped", [])), "inference_s": pred.seconds,
                "model": predictor.label, "overlay": str(overlay.relative_to(out)),
                "review_required": bool(reasons), "review_reasons": "; ".join(reasons), **masks,
            })
            if opt.dicom:
                res.rows[-1].update(_dicom_outputs(out, stem, volume, i, pred.labels, comp, res.rows[-1],
                                                   predictor.label))
    except L3NotLocated as exc:
        res.status, res.reason = "review", str(exc)
        res.errors.append({"source": str(inp.image), "error": str(exc), "review": True, "picture": str(exc.picture)})
    except (L3SegError, ValueError, OSError, RuntimeError) as exc:
        res.status, res.reason = "refused", str(exc)
        res.errors.append({"source": str(inp.image), "error": str(exc)})
    except Exception as exc:  # keep the batch going; record what broke
        res.status, res.reason = "refused", f"{type(exc).__name__}: {exc}"
        res.errors.append({"source": str(inp.image), "error": res.reason, "detail": traceback.format_exc(limit=3)})
    if res.status == "measured" and ctx.ref_dir is not None:
        try:  # a reference problem affects the validation only, never the measurement
            ref_path = find_reference(ctx.ref_dir, inp.image, volume)
            if ref_path is None:
                raise L3SegInputError(inp.image, f"no reference mask in {ctx.ref_dir} (expected "
                                                f"{inp.image.name.split('.')[0]} with {', '.join(REFERENCE_SUFFIXES)})")
            raw = read_mask_for(ref_path, volume, "reference mask")
            lmap = opt.reference_labels or (SLICE_O_MATIC_TAGS if ref_path.name.endswith(".tag") else IDENTITY_LABEL_MAP)
            ref = remap_labels(raw, lmap, str(ref_path))
            for i, pred in zip(indices, preds):
                ms = slice_metrics(pred.labels, ref[i], spacing)
                res.validation.append({"patient_id": volume.patient_id, "source": str(inp.image), "slice_index": i, **ms})
        except (L3SegError, ValueError, OSError) as exc:
            res.errors.append({"source": str(inp.image), "error": f"reference not used: {exc}"})
    res.seconds = time.perf_counter() - t0
    return res


def _dicom_outputs(out: Path, stem: str, volume: CTVolume, i: int, labels: np.ndarray, comp: CompositionConfig,
                   row: dict[str, Any], model_label: str) -> dict[str, str]:
    """SEG and SR of one slice, or why they were not written (non-DICOM input, multi-frame)."""
    files = volume.meta.get("files") or []
    if i >= len(files) or not files[i]:
        return {"dicom_seg": "", "dicom_sr": "", "dicom_note": "no single-frame DICOM source: no SEG/SR"}
    from l3seg_lib.measurement.dicom_out import write_dicom_outputs

    try:
        return write_dicom_outputs(out, stem, files[i], volume.slice(i), labels, comp.hu_ranges.get("imat"), row,
                                   model_label)
    except Exception as exc:  # a DICOM writer problem must not lose the measurement
        return {"dicom_seg": "", "dicom_sr": "", "dicom_note": f"SEG/SR not written: {type(exc).__name__}: {exc}"}


def measure_folder(folder: str | Path, model: str | Path | Predictor, out_dir: str | Path,
                   options: MeasureOptions | None = None) -> MeasureResult:
    """Segment and measure every input in ``folder``; see the module docstring.

    Writes ``measurements.csv`` (one row per patient and slice, units in column names),
    ``errors.csv`` (inputs refused, with the reason), ``skipped.csv`` (files inside series
    folders left out, with the reason), ``overlays/``, ``patients/<id>.html``, ``index.html`` and, with
    ``options.reference_dir``, ``validation.csv`` and ``agreement.csv`` (Bland-Altman).

    Resumable: ``ledger.csv`` gets one row per input as it finishes (status, reason, seconds,
    model hash) and ``inputs/`` keeps its results; a rerun on the same folder and output takes
    finished inputs from there (``options.force`` redoes them; another model redoes them too).
    """
    opt = options or MeasureOptions()
    out = Path(out_dir)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    predictor = model if isinstance(model, Predictor) else Predictor(model, opt.device, postprocess=opt.postprocess)
    ledger = Ledger(out, file_sha256(predictor.path))
    inputs = discover_inputs(folder)
    done = {} if opt.force else ledger.finished()
    todo = [inp for inp in inputs if str(inp.image) not in done]
    if opt.max_inputs is not None:
        todo = todo[: opt.max_inputs]
    ctx = _Context(opt, predictor, out)

    results: dict[str, InputResult] = dict(done)

    def record(res: InputResult) -> None:
        ledger.record(res)
        results[res.source] = res

    if opt.workers or opt.scheduler:
        from l3seg_lib.measurement.cluster import run_on_dask

        run_on_dask(todo, predictor.path, opt, out, record, opt.progress)
        todo = []
    try:
        loaded = prefetch(lambda inp: read_input(inp, opt), todo, opt.read_threads)
        for inp, future in tqdm(zip(todo, loaded), total=len(todo), desc="measure", unit="input",
                                disable=not opt.progress, mininterval=2.0):
            record(measure_input(inp, future, ctx))
    finally:
        ctx.close()
    ordered = [results[str(inp.image)] for inp in inputs if str(inp.image) in results]
    return write_outputs(out, ordered, ctx)


def write_outputs(out: Path, results: list[InputResult], ctx: _Context) -> MeasureResult:
    """The batch's tables and pages from the results of its inputs."""
    comp, cutoffs, predictor = ctx.comp, ctx.cutoffs, ctx.predictor
    table = pd.DataFrame([r for res in results for r in res.rows])
    errors = [e for res in results for e in res.errors]
    err = pd.DataFrame(errors, columns=["source", "error", "review", "picture"]
                       + (["detail"] if any("detail" in e for e in errors) else []))
    err["review"] = err["review"].astype(object).where(err["review"].notna(), False).astype(bool)
    val = pd.DataFrame([v for res in results for v in res.validation])
    agreement = pd.DataFrame()
    if len(val):
        agreement = pd.DataFrame([
            {"tissue": t, "measure": f"{t} area (cm2)",
             **bland_altman(val[f"area_pred_{t}_cm2"].to_numpy(), val[f"area_true_{t}_cm2"].to_numpy())}
            for t in TISSUES
        ])
        val.to_csv(out / "validation.csv", index=False)
        agreement.to_csv(out / "agreement.csv", index=False)
    table.to_csv(out / "measurements.csv", index=False)
    err.to_csv(out / "errors.csv", index=False)
    skipped_df = pd.DataFrame([k for res in results for k in res.skipped], columns=["source", "file", "reason"])
    skipped_df.to_csv(out / "skipped.csv", index=False)
    meta = {"model": f"{predictor.path.name}: {predictor.info.describe()}", "cutoff_set": cutoffs.name,
            "cutoff_description": cutoffs.description, "citations": cutoffs.citation_text(),
            "hu_ranges": {k: list(v) for k, v in comp.hu_ranges.items()}}
    if len(table):
        for pid, group in table.groupby("patient_id", sort=True):
            write_patient_html(out / "patients" / f"{safe_name(str(pid))}.html", str(pid), group, out, meta)
    write_index_html(out / "index.html", table, err, val, agreement, meta, skipped_df)
    return MeasureResult(table, err, val, agreement, out, skipped_df)
