"""How one input is measured, stage by stage (see ``docs/architecture.md``):

``read`` -> ``slices_to_measure`` -> ``segment`` -> per slice ``measure`` -> ``assess`` -> ``flag``,
giving one :class:`~l3seg_lib.measurement.result.SliceResult` per slice, whose per-slice outputs
(overlay, masks, DICOM SEG/SR) the writers of :mod:`.writers` write from memory.
:func:`measure_input` runs the stages for one input and never raises for bad input; the batch
around it (read-ahead, ledger, Dask) is :mod:`.orchestration`.

An input with more than ``max_slices`` slices (a whole series or volume) is measured where the
localiser (:mod:`l3seg_lib.localize.l3`) finds L3, with its review picture under ``localizer/``;
when it cannot tell, the input is listed for review in ``errors.csv`` (``review`` true) and not
measured. A manifest's ``slice_index`` overrides the localiser. Shorter inputs (a single slice, or
a few) are measured slice by slice as given: their vertebral level is not checked, which each row
says (``level_source``, see :data:`~l3seg_lib.measurement.options.LEVEL_SOURCES`) and a review
flag repeats (:func:`l3seg_lib.measurement.flags.level_not_verified`).
"""

from __future__ import annotations

import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l3seg_lib.data.clinical import clinical_for, read_clinical
from l3seg_lib.data.manifest import ManifestEntry
from l3seg_lib.errors import L3SegError, L3SegInputError, OutputError
from l3seg_lib.metrics import slice_metrics
from l3seg_lib.imageio.ct import CTVolume, check_plausible_image
from l3seg_lib.imageio.labels import read_mask_for, remap_labels
from l3seg_lib.tissues import IDENTITY_LABEL_MAP, SLICE_O_MATIC_TAGS
from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.localize.l3 import locate_l3
from l3seg_lib.measurement import composition
from l3seg_lib.measurement.flags import SliceContext, review_flags
from l3seg_lib.measurement.inputs import REFERENCE_SUFFIXES, find_reference, read_entry, split_series
from l3seg_lib.measurement.options import NOT_CHECKED, MeasureOptions
from l3seg_lib.measurement.result import InputResult, InputStatus, LevelSource, SliceResult
from l3seg_lib.measurement.writers import OverlayWriter, write_dicom_pair, write_masks
from l3seg_lib.measurement.serial import time_point_fields
from l3seg_lib.names import safe_name
from l3seg_lib.reporting.review import save_localizer_png
from l3seg_lib.units import slice_spacing_mm


class L3NotLocated(L3SegInputError):
    """A whole series or volume in which L3 cannot be told: listed for review, not measured."""

    def __init__(self, path: Path, problem: str, picture: Path):
        """L3 not located in ``path`` for the reason ``problem``; ``picture`` is the localizer review picture."""
        super().__init__(path, problem)
        self.picture = picture


class Measurer:
    """What every input of a batch is measured with: options, model, output folder, cut-offs,
    clinical table and the overlay writer (a thread, off the inference path)."""

    def __init__(self, options: MeasureOptions, predictor: Predictor, out: Path, keep_overlays: bool = True):
        """Set up from ``options`` (cut-off set, clinical table, reference folder) with the model ``predictor``;
        overlays written under ``out`` (their bytes kept for the pages when ``keep_overlays``)."""
        self.options, self.predictor, self.out = options, predictor, out
        self.composition = options.composition
        self.cutoffs = composition.get_cutoff_set(options.composition.cutoffs)
        self.clinical = read_clinical(options.clinical_csv) if options.clinical_csv else None
        self.reference_dir = Path(options.reference_dir) if options.reference_dir else None
        self.overlays = OverlayWriter(out, keep=keep_overlays)

    def close(self) -> None:
        """Wait for the overlay writer to finish."""
        self.overlays.close()


@dataclass
class Choice:
    """The slices to measure and how their level is known (the ``level`` columns)."""

    indices: list[int]
    level: dict[str, Any]


# --------------------------------------------------------------------------------------------
# the stages


def read(inp: ManifestEntry, options: MeasureOptions) -> CTVolume:
    """Stage ``read``: the CT of one input, each file read once by
    :func:`~l3seg_lib.measurement.inputs.read_entry` (PNG with the spacing and window it was listed
    with; HU checked unless ``options.check_hu`` is false; a series lying loose in the measured
    folder from its files). An image smaller than a CT slice at L3 (``options.min_matrix`` pixels,
    ``options.min_fov_mm`` mm: :func:`~l3seg_lib.imageio.ct.check_plausible_image`) is refused
    here, before anything is measured, also without the HU check."""
    volume = read_entry(inp, check_hu=options.check_hu)
    check_plausible_image(volume.source, volume.hu.shape[1:], slice_spacing_mm(volume.spacing_mm), options.image_limits)
    return volume


def slices_to_measure(inp: ManifestEntry, volume: CTVolume, options: MeasureOptions, out: Path) -> Choice:
    """Stage ``choose slices``: which slices to measure and how their level is known: the
    manifest's ``slice_index``; L3 found by the localiser in a whole series (raises
    :class:`L3NotLocated` when it cannot tell); or every slice of a short input."""
    n = volume.n_slices
    level = {"level_source": NOT_CHECKED,
             "l3_method": "the single slice given (vertebral level not checked)" if n == 1 else
             f"every slice of a short input of {n} slices (vertebral level not checked)",
             "l3_confidence": "", "l3_range": "", "localizer_picture": "", "l3_notes": "", "input_slices": n}
    if inp.slice_index is not None:
        if not 0 <= inp.slice_index < n:
            raise L3SegInputError(inp.image, f"slice_index {inp.slice_index} is outside 0..{n - 1}")
        level.update(level_source=LevelSource.MANIFEST, l3_method="slice_index of the manifest")
        return Choice([inp.slice_index], level)
    if n > options.max_slices:
        loc = locate_l3(volume, options.localize)
        picture = save_localizer_png(out / "localizer" / f"{safe_name(volume.patient_id)}_"
                                     f"{safe_name(inp.image.name)}.png", volume, loc)
        if not loc.found:
            raise L3NotLocated(inp.image, f"L3 not located, listed for review: {loc.reason} "
                                          f"(picture: {picture.relative_to(out)})", picture.relative_to(out))
        return Choice(loc.slices, {"level_source": LevelSource.LOCALISER, "l3_method": loc.method,
                                   "l3_confidence": loc.confidence, "l3_range": f"{loc.l3_range[0]}-{loc.l3_range[1]}",
                                   "localizer_picture": str(picture.relative_to(out)),
                                   "l3_notes": "; ".join(loc.notes), "input_slices": n})
    return Choice(list(range(n)), level)


def segment(predictor: Predictor, volume: CTVolume, indices: list[int]) -> list:
    """Stage ``segment``: the model's labels (and probabilities, body mask) of each chosen slice."""
    spacing = slice_spacing_mm(volume.spacing_mm)
    return predictor.predict_many([volume.hu[i] for i in indices], [spacing] * len(indices))


def measure(volume: CTVolume, i: int, labels: np.ndarray, hu_ranges: dict | None) -> dict[str, Any]:
    """Stage ``measure``: areas and densities of slice ``i`` (:func:`composition.measure_slice`;
    ``hu_ranges`` None: the default ranges)."""
    spacing = slice_spacing_mm(volume.spacing_mm)
    return composition.measure_slice(volume.hu[i], labels, spacing, hu_ranges, volume.meta.hu_calibrated,
                                     volume.meta.png_window_hu)


def assess(measures: dict[str, Any], clinical: dict[str, Any], cutoffs) -> dict[str, Any]:
    """Stage ``assess``: SMI and the verdicts of the cut-off set (:func:`composition.assess`)."""
    return composition.assess(measures, clinical, cutoffs)


def flag(volume: CTVolume, i: int, pred, values: dict[str, Any], level: dict[str, Any]) -> list[str]:
    """Stage ``flag``: why a person should look at this slice (:func:`flags.review_flags`)."""
    spacing = slice_spacing_mm(volume.spacing_mm)
    return review_flags(SliceContext(volume.hu[i], pred.labels, pred.probs, spacing, volume.meta, values, level,
                                     pred.body)) + split_series(volume.meta.series_notes)


# --------------------------------------------------------------------------------------------
# one input


def measure_input(inp: ManifestEntry, m: Measurer, volume_future: Future | None = None) -> InputResult:
    """Run the stages on one input (its volume being read in ``volume_future``, or read here);
    never raises for bad input: a refused input is recorded in the result."""
    t0 = time.perf_counter()
    res = InputResult(str(inp.image))
    opt, out = m.options, m.out
    try:
        volume = volume_future.result() if volume_future is not None else read(inp, opt)
        if inp.patient_id:
            volume.patient_id = inp.patient_id
        res.skipped = [{"source": str(inp.image), **item} for item in volume.meta.skipped or []]
        header = next((ds for ds in volume.meta.datasets or [] if ds is not None), None)
        res.frame_of_reference = str(header.get("FrameOfReferenceUID", "") or "") if header is not None else ""
        choice = slices_to_measure(inp, volume, opt, out)
        preds = segment(m.predictor, volume, choice.indices)
        clin = clinical_for(volume.patient_id, m.clinical, volume.meta)
        for i, pred in zip(choice.indices, preds):
            res.rows.append(_measure_slice(inp, volume, i, pred, choice.level, clin, m))
    except OutputError:
        raise  # the output side failed: fatal for the batch, not a refused input
    except L3NotLocated as exc:
        res.status, res.reason = InputStatus.REVIEW, str(exc)
        res.errors.append({"source": str(inp.image), "error": str(exc), "review": True, "picture": str(exc.picture),
                           "patient_id": volume.patient_id})
    except (L3SegError, ValueError, OSError, RuntimeError) as exc:
        res.status, res.reason = InputStatus.REFUSED, str(exc)
        res.errors.append({"source": str(inp.image), "error": str(exc)})
    except Exception as exc:  # keep the batch going; record what broke
        res.status, res.reason = InputStatus.REFUSED, f"{type(exc).__name__}: {exc}"
        res.errors.append({"source": str(inp.image), "error": res.reason, "detail": traceback.format_exc(limit=3)})
    if res.status == InputStatus.MEASURED and m.reference_dir is not None:
        res.validation, problem = validate(inp, volume, choice.indices, preds, m)
        if problem:
            res.errors.append({"source": str(inp.image), "error": problem})
    res.seconds = time.perf_counter() - t0
    return res


def _measure_slice(inp: ManifestEntry, volume: CTVolume, i: int, pred, level: dict[str, Any], clin: dict[str, Any],
                   m: Measurer) -> SliceResult:
    """measure -> assess -> flag for slice ``i``, and its per-slice outputs written."""
    comp, out = m.composition, m.out
    spacing = slice_spacing_mm(volume.spacing_mm)
    measures = measure(volume, i, pred.labels, comp.hu_ranges)
    verdict = assess(measures, clin, m.cutoffs)
    reasons = flag(volume, i, pred, {**measures, **verdict}, level)
    r = SliceResult(patient_id=volume.patient_id, source=str(inp.image), slice_index=i, slice_id=volume.slice_ids[i],
                    slice_location_mm=volume.slice_locations_mm[i], pixel_spacing_row_mm=spacing[0],
                    pixel_spacing_col_mm=spacing[1], age_years=clin.get("age"))
    r.update(verdict)
    r.update(measures)
    r.update({"series_notes": "; ".join(volume.meta.series_notes or []), **level})
    r.update(time_point_fields(volume.meta, i, getattr(inp, "date", None)))  # serial scans
    r.files_skipped, r.inference_s, r.model = len(volume.meta.skipped or []), pred.seconds, m.predictor.label
    stem = f"{safe_name(volume.patient_id)}_{safe_name(inp.image.name)}_s{i:03d}"
    r.overlay = m.overlays.submit(stem, volume.hu[i], pred.labels, spacing, comp.hu_ranges.get("imat"))
    r.review_required, r.review_reasons = bool(reasons), "; ".join(reasons)
    image = volume.slice(i)
    r.update(write_masks(out, stem, image, pred.labels, comp.hu_ranges.get("imat"),
                         tag=volume.stored_transform is not None))
    if m.options.dicom:
        r.update(write_dicom_pair(out, stem, image, pred.labels, comp.hu_ranges.get("imat"), r, m.predictor.label))
    return r


def validate(inp: ManifestEntry, volume: CTVolume, indices: list[int], preds: list, m: Measurer
             ) -> tuple[list[dict[str, Any]], str]:
    """The predicted labels against the reference mask (rows of ``validation.csv``), and the
    problem when the reference could not be used (it affects the validation only)."""
    spacing = slice_spacing_mm(volume.spacing_mm)
    try:
        ref_path = find_reference(m.reference_dir, inp.image, volume)
        if ref_path is None:
            raise L3SegInputError(inp.image, f"no reference mask in {m.reference_dir} (expected "
                                            f"{inp.image.name.split('.')[0]} with {', '.join(REFERENCE_SUFFIXES)})")
        raw = read_mask_for(ref_path, volume, "reference mask")
        lmap = m.options.reference_labels or (SLICE_O_MATIC_TAGS if ref_path.name.endswith(".tag") else IDENTITY_LABEL_MAP)
        ref = remap_labels(raw, lmap, str(ref_path))
        return [{"patient_id": volume.patient_id, "source": str(inp.image), "slice_index": i,
                 **slice_metrics(pred.labels, ref[i], spacing)} for i, pred in zip(indices, preds)], ""
    except (L3SegError, ValueError, OSError) as exc:
        return [], f"reference not used: {exc}"
