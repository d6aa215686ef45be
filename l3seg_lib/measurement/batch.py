"""Batch measurement, the public names in one place (kept for existing imports).

The work is split by what it holds (see ``docs/architecture.md``):

- :mod:`.options`: :class:`MeasureOptions`, :data:`LEVEL_SOURCES`;
- :mod:`.stages`: read -> choose slices -> segment -> measure -> assess -> flag for one input
  (:func:`measure_input`, :class:`Measurer`);
- :mod:`.result`: :class:`SliceResult` (a row of ``measurements.csv``), :class:`InputResult`,
  :class:`MeasureResult`;
- :mod:`.writers`: overlays, masks, DICOM SEG/SR, the tables and the HTML pages;
- :mod:`.orchestration`: :func:`measure_folder` (read-ahead, ledger, Dask via :mod:`.cluster`).
"""

from __future__ import annotations

from l3seg_lib.measurement.options import LEVEL_SOURCES, NOT_CHECKED, MeasureOptions
from l3seg_lib.measurement.orchestration import called, measure_folder, prefetch
from l3seg_lib.measurement.result import InputResult, MeasureResult, SliceResult
from l3seg_lib.measurement.stages import L3NotLocated, Measurer, measure_input, read
from l3seg_lib.measurement.writers import WRITE_QUEUE, write_outputs

read_input = read
"""The ``read`` stage under its former name."""

__all__ = ["LEVEL_SOURCES", "NOT_CHECKED", "WRITE_QUEUE", "InputResult", "L3NotLocated", "MeasureOptions",
           "MeasureResult", "Measurer", "SliceResult", "called", "measure_folder", "measure_input", "prefetch",
           "read", "read_input", "write_outputs"]
