"""Output writers of a measured batch, fed from memory: per slice the overlay picture (on a thread,
its PNG bytes kept for the patient page), the masks for editing and the DICOM SEG/SR (from the
source header read with the image); per batch ``measurements.csv`` (from the
:class:`~l3seg_lib.measurement.result.SliceResult` of each slice), ``errors.csv``, ``skipped.csv``,
``validation.csv``, ``agreement.csv`` and the HTML pages."""

from __future__ import annotations

import io
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from l3seg_lib.errors import OutputError
from l3seg_lib.metrics import bland_altman
from l3seg_lib.imageio.ct import CTImage
from l3seg_lib.measurement.consistency import apply_disagreements, series_disagreements
from l3seg_lib.measurement.masks import export_masks
from l3seg_lib.measurement.result import InputResult, InputStatus, MeasureResult, SliceResult, results_table
from l3seg_lib.measurement.serial import write_serial
from l3seg_lib.names import atomic_path, clean_text, csv_cell, safe_name
from l3seg_lib.reporting.html import thumbnail_path, write_index_html, write_patient_html
from l3seg_lib.reporting.overlays import overlay_rgb, report_picture_png
from l3seg_lib.reporting.reasons import verdict_status
from l3seg_lib.tissues import TISSUES

WRITE_QUEUE = 4
"""Overlay pictures waiting to be written before inference waits for them."""
THUMBNAIL_PX = 144
"""Width of the overlay thumbnails of the cohort index (shown at 72-96 CSS px: sharp on 2x screens)."""
KEEP_OVERLAY_BYTES = 256 * 2**20
"""PNG bytes of overlays kept in memory for the patient pages (beyond this, the pages read them back)."""


def output_error(path: str | Path, exc: OSError) -> OutputError:
    """The :class:`OutputError` of a failed write of ``path`` (the file the OSError names, if any)."""
    return OutputError(exc.filename if getattr(exc, "filename", None) else path, exc)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` under a temporary name, renamed into place when complete
    (:func:`~l3seg_lib.names.atomic_path`: an interrupted write never leaves a torn file); an
    OSError becomes :class:`OutputError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            if isinstance(data, str):
                tmp.write_text(data)
            else:
                tmp.write_bytes(data)
    except OSError as exc:
        raise output_error(path, exc) from exc
    return path


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """``df`` written to ``path`` as CSV, atomically, its text cells cleaned for spreadsheets
    (:func:`~l3seg_lib.names.csv_cell`: no control characters, no live formulas)."""
    return write_atomic(path, clean_frame(df, csv_cell).to_csv(index=False))


def clean_frame(df: pd.DataFrame, clean=clean_text) -> pd.DataFrame:
    """A copy of ``df`` with ``clean`` applied to the cells of its text (object or string) columns."""
    cols = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)]
    if not cols:
        return df
    df = df.copy()
    for c in cols:
        df[c] = df[c].map(clean)
    return df


def overlay_png(hu: np.ndarray, labels: np.ndarray) -> bytes:
    """The overlay picture of a slice, PNG-encoded."""
    buf = io.BytesIO()
    Image.fromarray(overlay_rgb(hu, labels)).save(buf, format="PNG")
    return buf.getvalue()


class OverlayWriter:
    """Writes overlay pictures under ``<out>/overlays/`` on a thread (bounded queue) and keeps their
    PNG bytes (up to :data:`KEEP_OVERLAY_BYTES`) for the patient pages."""

    def __init__(self, out: Path, keep: bool = True):
        """Writer for ``out`` with a single write thread; ``keep`` keeps the PNG bytes for the patient pages."""
        self.out, self.keep = out, keep
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="l3seg-write")
        self.pending: deque[Future] = deque()
        self.images: dict[str, bytes] = {}
        self.kept = 0
        self.submitted = 0
        self.ok = 0
        """Overlays written, in order, before the first that failed (the inputs the ledger may list)."""
        self.failed: BaseException | None = None

    def _write(self, rel: str, hu: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float] | None = None,
               imat_hu: tuple[float, float] | None = None) -> None:
        """Render and write one overlay PNG (on the write thread): the plain CT beside the tinted one,
        cropped to the body, with a scale bar (:func:`~l3seg_lib.reporting.overlays.report_picture_png`),
        and its thumbnail for the index; keeps its bytes while within the budget."""
        data, thumbnail = report_picture_png(hu, labels, spacing_mm, imat_hu, thumbnail_width=THUMBNAIL_PX)
        write_atomic(self.out / thumbnail_path(rel), thumbnail)
        write_atomic(self.out / rel, data)
        if self.keep and self.kept + len(data) <= KEEP_OVERLAY_BYTES:
            self.images[rel] = data
            self.kept += len(data)

    def submit(self, stem: str, hu: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float] | None = None,
               imat_hu: tuple[float, float] | None = None) -> str:
        """Queue the overlay of one slice (``spacing_mm``: row and column pixel size, for the scale
        bar; ``imat_hu``: the IMAT HU range, to tint IMAT); its path relative to the output folder."""
        rel = str(Path("overlays") / f"{stem}.png")
        self.pending.append(self.pool.submit(self._write, rel, hu, labels, spacing_mm, imat_hu))
        self.submitted += 1
        while len(self.pending) > WRITE_QUEUE and self.pending[0].done():
            self._settle(self.pending.popleft())
        if len(self.pending) > WRITE_QUEUE:  # bounded: never hold a long backlog of slices in memory
            self._settle(self.pending.popleft())
        return rel

    def _settle(self, future: Future, raise_errors: bool = True) -> None:
        """Account for one finished write (waiting for it): counted in :attr:`ok` while no write
        before it failed; a failed write's error is raised (unless ``raise_errors`` is false)."""
        exc = future.exception()
        if exc is None:
            if self.failed is None:
                self.ok += 1
            return
        if self.failed is None:
            self.failed = exc
        if raise_errors:
            raise exc

    def written(self, raise_errors: bool = True) -> int:
        """How many of the overlays submitted so far are written (they are written in order; none
        after one that failed counts, so an input whose overlay is missing is never taken for
        finished); raises the error of a failed write unless ``raise_errors`` is false."""
        while self.pending and self.pending[0].done():
            self._settle(self.pending.popleft(), raise_errors)
        return self.ok

    def close(self) -> None:
        """Wait for all queued overlays to be written, then stop the write thread; raises the error
        of a failed write."""
        try:
            while self.pending:
                self._settle(self.pending.popleft())
        finally:
            self.pool.shutdown()


def write_masks(out: Path, stem: str, image: CTImage, labels: np.ndarray, imat_hu: tuple[float, float] | None,
                tag: bool) -> dict[str, str]:
    """The slice's masks for editing (``mask_nifti``, ``mask_tag`` columns); a failed write is an
    :class:`OutputError`."""
    try:
        return export_masks(out, stem, image, labels, imat_hu, tag=tag)
    except OSError as exc:
        raise output_error(out / "masks", exc) from exc


def write_dicom_pair(out: Path, stem: str, image: CTImage, labels: np.ndarray, imat_hu: tuple[float, float] | None,
                     result: SliceResult, model_label: str) -> dict[str, str]:
    """SEG and SR of one slice from its source header in memory (``dicom_*`` columns), or why they
    were not written (non-DICOM input, a frame of a multi-frame file)."""
    source = image.meta.dataset_of(0)
    if source is None:
        return {"dicom_seg": "", "dicom_sr": "", "dicom_note": "no single-frame DICOM source: no SEG/SR"}
    from l3seg_lib.measurement.dicom_out import write_dicom_outputs  # highdicom: only when asked for

    result.update(verdict_status(result.to_row()))
    try:
        return write_dicom_outputs(out, stem, source, image, labels, imat_hu, result.to_row(), model_label)
    except OSError as exc:  # the output side: fatal, not a note
        raise output_error(out / "dicom", exc) from exc
    except Exception as exc:  # a DICOM writer problem must not lose the measurement
        return {"dicom_seg": "", "dicom_sr": "", "dicom_note": f"SEG/SR not written: {type(exc).__name__}: {exc}"}


def write_outputs(out: Path, results: list[InputResult], meta: dict[str, Any],
                  images: dict[str, bytes] | None = None, left_out: list[dict[str, str]] | None = None
                  ) -> MeasureResult:
    """The batch's tables and pages from the results of its inputs (``meta``: model, cut-off set
    and HU ranges for the pages; ``images``: overlay PNG bytes in memory by relative path;
    ``left_out``: the files of the measured folder that are no input, rows of ``skipped.csv``
    before the files left out inside each input)."""
    # series of one patient that disagree name each other (review reasons, errors.csv)
    apply_disagreements(results, series_disagreements(results, {r.source: r.frame_of_reference for r in results}))
    slices: list[SliceResult] = [r for res in results for r in res.rows]
    for r in slices:  # after the disagreements: a verdict a review reason doubts is provisional
        r.update(verdict_status(r.to_row()))
    table = results_table(slices)
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
        write_csv(val, out / "validation.csv")
        write_csv(agreement, out / "agreement.csv")
    write_csv(table, out / "measurements.csv")
    write_csv(err, out / "errors.csv")
    skipped_df = pd.DataFrame([*(left_out or []), *(k for res in results for k in res.skipped)],
                              columns=["source", "file", "reason"])
    write_csv(skipped_df, out / "skipped.csv")
    # the pages get the cells without control characters (they escape HTML themselves)
    page_table, page_err, page_val, page_skipped = (clean_frame(d) for d in (table, err, val, skipped_df))
    try:
        # serial scans (a patient with >= 2 studies): timepoints.csv, changes.csv, timeline pages, changes.html
        meta = {**meta, "timeline_links": write_serial(out, page_table, meta, images, write_csv)}
        if len(page_table):
            for pid, group in page_table.groupby("patient_id", sort=True):
                write_patient_html(out / "patients" / f"{safe_name(str(pid))}.html", str(pid), group, out, meta,
                                   images=images)
        write_index_html(out / "index.html", page_table, page_err, page_val, agreement, meta, page_skipped)
    except OSError as exc:
        raise output_error(out / "index.html", exc) from exc
    measured = sum(res.status == InputStatus.MEASURED for res in results)
    return MeasureResult(table, err, val, agreement, out, skipped_df, inputs_measured=measured,
                         inputs_not_measured=len(results) - measured)
