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

from l3seg_lib.metrics import TISSUES, bland_altman
from l3seg_lib.imageio.ct import CTImage
from l3seg_lib.measurement.masks import export_masks
from l3seg_lib.measurement.result import InputResult, MeasureResult, SliceResult, results_table
from l3seg_lib.names import safe_name
from l3seg_lib.reporting.html import write_index_html, write_patient_html
from l3seg_lib.reporting.overlays import overlay_rgb

WRITE_QUEUE = 4
"""Overlay pictures waiting to be written before inference waits for them."""
KEEP_OVERLAY_BYTES = 256 * 2**20
"""PNG bytes of overlays kept in memory for the patient pages (beyond this, the pages read them back)."""


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

    def _write(self, rel: str, hu: np.ndarray, labels: np.ndarray) -> None:
        """Render and write one overlay PNG (on the write thread), keeping its bytes while within the budget."""
        data = overlay_png(hu, labels)
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if self.keep and self.kept + len(data) <= KEEP_OVERLAY_BYTES:
            self.images[rel] = data
            self.kept += len(data)

    def submit(self, stem: str, hu: np.ndarray, labels: np.ndarray) -> str:
        """Queue the overlay of one slice; its path relative to the output folder."""
        rel = str(Path("overlays") / f"{stem}.png")
        self.pending.append(self.pool.submit(self._write, rel, hu, labels))
        while len(self.pending) > WRITE_QUEUE and self.pending[0].done():
            self.pending.popleft().result()
        if len(self.pending) > WRITE_QUEUE:  # bounded: never hold a long backlog of slices in memory
            self.pending.popleft().result()
        return rel

    def close(self) -> None:
        """Wait for all queued overlays to be written, then stop the write thread."""
        while self.pending:
            self.pending.popleft().result()
        self.pool.shutdown()


def write_masks(out: Path, stem: str, image: CTImage, labels: np.ndarray, imat_hu: tuple[float, float] | None,
                tag: bool) -> dict[str, str]:
    """The slice's masks for editing (``mask_nifti``, ``mask_tag`` columns)."""
    return export_masks(out, stem, image, labels, imat_hu, tag=tag)


def write_dicom_pair(out: Path, stem: str, image: CTImage, labels: np.ndarray, imat_hu: tuple[float, float] | None,
                     result: SliceResult, model_label: str) -> dict[str, str]:
    """SEG and SR of one slice from its source header in memory (``dicom_*`` columns), or why they
    were not written (non-DICOM input, a frame of a multi-frame file)."""
    source = image.meta.dataset_of(0)
    if source is None:
        return {"dicom_seg": "", "dicom_sr": "", "dicom_note": "no single-frame DICOM source: no SEG/SR"}
    from l3seg_lib.measurement.dicom_out import write_dicom_outputs  # highdicom: only when asked for

    try:
        return write_dicom_outputs(out, stem, source, image, labels, imat_hu, result.to_row(), model_label)
    except Exception as exc:  # a DICOM writer problem must not lose the measurement
        return {"dicom_seg": "", "dicom_sr": "", "dicom_note": f"SEG/SR not written: {type(exc).__name__}: {exc}"}


def write_outputs(out: Path, results: list[InputResult], meta: dict[str, Any],
                  images: dict[str, bytes] | None = None) -> MeasureResult:
    """The batch's tables and pages from the results of its inputs (``meta``: model, cut-off set
    and HU ranges for the pages; ``images``: overlay PNG bytes in memory by relative path)."""
    slices: list[SliceResult] = [r for res in results for r in res.rows]
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
        val.to_csv(out / "validation.csv", index=False)
        agreement.to_csv(out / "agreement.csv", index=False)
    table.to_csv(out / "measurements.csv", index=False)
    err.to_csv(out / "errors.csv", index=False)
    skipped_df = pd.DataFrame([k for res in results for k in res.skipped], columns=["source", "file", "reason"])
    skipped_df.to_csv(out / "skipped.csv", index=False)
    if len(table):
        for pid, group in table.groupby("patient_id", sort=True):
            write_patient_html(out / "patients" / f"{safe_name(str(pid))}.html", str(pid), group, out, meta,
                               images=images)
    write_index_html(out / "index.html", table, err, val, agreement, meta, skipped_df)
    return MeasureResult(table, err, val, agreement, out, skipped_df)
