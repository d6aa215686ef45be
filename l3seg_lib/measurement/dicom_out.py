"""DICOM outputs of a measured slice (highdicom): a Segmentation that holds the masks every number
comes from, and a Comprehensive 3D SR measurement report (TID 1500) whose every area and density
references the SEG segment it was computed from; and the SR sent for a series that could not be
measured (:func:`write_refusal_sr`).

**One truth.** The SEG has seven segments, each named for what it is, and each SR number is the
area (or mean HU) of one of them, equal to a column of ``measurements.csv`` (:data:`SEGMENTS`,
:data:`MEASURES`):

====  ==============================================  ==================  ===================
 seg  what (label)                                     CSV column          SR concept (99L3SEG)
====  ==============================================  ==================  ===================
  1   skeletal muscle, segmented compartment           ``sma_cm2``         SMAC (+ SMDC, HU)
  2   SAT, segmented compartment                       ``sat_cm2``         SATAC
  3   VAT, segmented compartment                       ``vat_cm2``         VATAC
  4   IMAT (muscle compartment in the IMAT HU range)   ``imat_cm2``        IMATA
  5   skeletal muscle within its HU range (refined)    ``sma_refined_cm2`` SMA (+ SMD, HU)
  6   SAT within its HU range (refined)                ``sat_refined_cm2`` SATA
  7   VAT within its HU range (refined)                ``vat_refined_cm2`` VATA
====  ==============================================  ==================  ===================

Each segment's measurements are one TID 1411 ROI group referencing that segment (its "Referenced
Segment" item names the SEG and the segment number), so a viewer links number and mask (the SEG
holds one slice: the "volume" of TID 1411 is that slice). A last group (TID 1501,
"L3 body composition") holds SMI, the verdicts (each named with the criterion and source that
decided it, the reason as text), the review flag and its reasons, how the level is known, the L3
confidence and range, the measured slice's index and position, and the series notes.

No machine path goes into a DICOM object: every text is passed through :func:`public_text`.
Tissue concepts without a standard code use the private coding scheme ``99L3SEG`` (designators
starting with 99 are private by the DICOM standard).
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from l3seg_lib import __version__
from l3seg_lib.imageio.ct import CTImage
from l3seg_lib.measures import VERDICTS as VERDICT_TABLE
from l3seg_lib.names import atomic_path
from l3seg_lib.measurement.composition import Answer
from l3seg_lib.reporting.reasons import verdict_status
from l3seg_lib.tissues import (
    ALL_TISSUES,
    IMAT,
    MUSCLE,
    PRIVATE_SCHEME,
    SAT,
    VAT,
    Code,
    Tissue,
    complete_hu_ranges,
    refined_mask,
)

SCHEME = PRIVATE_SCHEME
SEG_SERIES_NUMBER, SR_SERIES_NUMBER, REFUSAL_SERIES_NUMBER = 901, 902, 903
SEG_DESCRIPTION = "L3SEG body composition masks"
SR_DESCRIPTION = "L3SEG body composition"
REFUSAL_DESCRIPTION = "L3SEG not measured"
REFUSAL_PREFIX = "L3 body composition not measured by l3seg: "

# segment number: (tissue, refined?, CSV column of its area)
SEGMENTS: dict[int, tuple[Tissue, bool, str]] = {
    1: (MUSCLE, False, "sma_cm2"), 2: (SAT, False, "sat_cm2"), 3: (VAT, False, "vat_cm2"), 4: (IMAT, False, "imat_cm2"),
    5: (MUSCLE, True, "sma_refined_cm2"), 6: (SAT, True, "sat_refined_cm2"), 7: (VAT, True, "vat_refined_cm2")}
"""The SEG's segments: 1-4 as l3seg has always written them (the model's compartments and IMAT),
5-7 the HU-refined masks the verdicts and the refined columns come from."""

MEASURES = {
    # CSV column: (code value, code meaning, unit, finding site, SEG segment)
    "sma_cm2": ("SMAC", "Skeletal muscle compartment area at L3", codes.UCUM.SquareCentimeter,
                codes.SCT.SkeletalMuscle, 1),
    "sat_cm2": ("SATAC", "Subcutaneous adipose tissue compartment area at L3", codes.UCUM.SquareCentimeter, None, 2),
    "vat_cm2": ("VATAC", "Visceral adipose tissue compartment area at L3", codes.UCUM.SquareCentimeter, None, 3),
    "imat_cm2": ("IMATA", "Intermuscular adipose tissue area at L3", codes.UCUM.SquareCentimeter, None, 4),
    "muscle_hu_mean": ("SMDC", "Skeletal muscle compartment mean radiodensity", codes.UCUM.HounsfieldUnit,
                       codes.SCT.SkeletalMuscle, 1),
    "sma_refined_cm2": ("SMA", "Skeletal muscle area at L3 (HU-refined)", codes.UCUM.SquareCentimeter,
                        codes.SCT.SkeletalMuscle, 5),
    "muscle_refined_hu_mean": ("SMD", "Skeletal muscle mean radiodensity at L3 (HU-refined)",
                               codes.UCUM.HounsfieldUnit, codes.SCT.SkeletalMuscle, 5),
    "sat_refined_cm2": ("SATA", "Subcutaneous adipose tissue area at L3 (HU-refined)", codes.UCUM.SquareCentimeter,
                        None, 6),
    "vat_refined_cm2": ("VATA", "Visceral adipose tissue area at L3 (HU-refined)", codes.UCUM.SquareCentimeter,
                        None, 7),
    "smi_cm2_m2": ("SMI", "Skeletal muscle index at L3 (HU-refined area)", None, codes.SCT.SkeletalMuscle, None),
}
"""Every number of the SR, by the ``measurements.csv`` column it equals, with the SEG segment it
is computed from (None: SMI, from segment 5's area and the height)."""
VERDICTS = {v.key: v.label for v in VERDICT_TABLE}
"""The verdicts of the SR by column, with their display names (:data:`l3seg_lib.measures.VERDICTS`)."""
VERDICT_CODES = {v.key: v.sr_code for v in VERDICT_TABLE}
"""Code values (99L3SEG) of the verdicts; the text item with the reason is the code + ``_R``."""


# --------------------------------------------------------------------------------------------
# texts without machine paths

_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?[/\\](?:[^\s/\\:;,()'\"]+[/\\])+([^\s/\\:;,()'\"]*)")
_PICTURE = re.compile(r"\s*\(picture: [^)]*\)")


def public_text(text: Any, limit: int | None = None) -> str:
    """``text`` fit to leave this machine: every absolute path cut to its last part (a series
    folder to its name, a file to its name), references to pictures only this machine holds
    removed, whitespace collapsed, in ASCII (DICOM's default character repertoire: ``cm²`` becomes
    ``cm2``); at most ``limit`` characters."""
    out = _PICTURE.sub("", str(text if text is not None else ""))
    out = _PATH.sub(lambda m: m.group(1) or "", out)
    out = unicodedata.normalize("NFKD", out).encode("ascii", "ignore").decode()
    out = " ".join(out.split())
    return out[:limit] if limit else out


# --------------------------------------------------------------------------------------------
# helpers


def _code(value: str, meaning: str):
    """highdicom coded concept ``value`` of the l3seg private coding scheme (meaning cut to 64 characters)."""
    import highdicom as hd

    return hd.sr.CodedConcept(value, SCHEME, meaning[:64])


def _concept(code: Code):
    """highdicom coded concept of ``code`` (value, scheme, meaning)."""
    import highdicom as hd

    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _finite(v: Any) -> float | None:
    """``v`` as a finite float, or None (missing, NaN, text)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def hu_ranges_of(row: dict[str, Any] | None, imat_hu: tuple[float, float] | None = None) -> dict[str, tuple[float, float]]:
    """The HU ranges a slice was measured with, from its row's ``hu_range_<tissue>`` columns
    (``low..high``), completed with the defaults; ``imat_hu`` overrides IMAT."""
    given: dict[str, tuple[float, float]] = {}
    for key in (t.key for t in ALL_TISSUES):
        text = str((row or {}).get(f"hu_range_{key}") or "")
        try:
            lo, hi = (float(v) for v in text.split(".."))
            given[key] = (lo, hi)
        except ValueError:
            continue
    if imat_hu is not None:
        given["imat"] = (float(imat_hu[0]), float(imat_hu[1]))
    return complete_hu_ranges(given)


def segment_label(number: int, ranges: dict[str, tuple[float, float]]) -> str:
    """What segment ``number`` holds, in words (the SEG's SegmentLabel, at most 64 characters)."""
    tissue, refined, _ = SEGMENTS[number]
    short = tissue.short
    lo, hi = ranges[tissue.key]
    if tissue is IMAT:
        return f"{IMAT.short}: muscle compartment at {lo:g}..{hi:g} HU"
    return f"{short} {lo:g}..{hi:g} HU (refined)" if refined else f"{short} compartment (as segmented)"


def _display_color(rgb: tuple[int, int, int], refined: bool):
    """The tissue's overlay colour as DICOM's CIELab (refined segments a shade darker)."""
    import highdicom as hd
    from skimage.color import rgb2lab

    rgb_f = np.array(rgb, float)[None, None, :] / 255.0 * (0.7 if refined else 1.0)
    lab = rgb2lab(rgb_f)[0, 0]
    return hd.color.CIELabColor(float(np.clip(lab[0], 0, 100)), float(np.clip(lab[1], -128, 127)),
                                float(np.clip(lab[2], -128, 127)))


def _segments(ranges: dict[str, tuple[float, float]]):
    """The segment descriptions of :data:`SEGMENTS`, labelled and coloured."""
    import highdicom as hd

    algorithm = hd.AlgorithmIdentificationSequence(name="l3seg", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    out = []
    for number, (tissue, refined, _col) in SEGMENTS.items():
        manual = refined or tissue is IMAT  # thresholds applied to the model's masks
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=segment_label(number, ranges), segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=_concept(tissue.seg_code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            display_color=_display_color(tissue.rgb, manual and tissue is not IMAT)))
    return out


def segment_mask_arrays(labels: np.ndarray, hu: np.ndarray, ranges: dict[str, tuple[float, float]]) -> list[np.ndarray]:
    """Boolean masks of the SEG's segments 1-7, in order (:data:`SEGMENTS`), in canonical orientation."""
    labels = np.asarray(labels)
    out = []
    for tissue, refined, _ in SEGMENTS.values():
        if tissue is IMAT:
            out.append(refined_mask(labels, hu, IMAT.key, ranges))
        elif refined:
            out.append(refined_mask(labels, hu, tissue.key, ranges))
        else:
            out.append(labels == tissue.label)
    return out


def save_dataset(ds: pydicom.Dataset, path: Path) -> Path:
    """Save ``ds`` to ``path`` under a temporary name, renamed into place when complete (never a
    torn SEG or SR under the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        ds.save_as(tmp)
    return path


# --------------------------------------------------------------------------------------------
# SEG


def write_seg(path: Path, source: pydicom.Dataset, image: CTImage, labels: np.ndarray,
              imat_hu: tuple[float, float] | None, model_label: str, row: dict[str, Any] | None = None) -> Path:
    """:func:`build_seg` saved to ``path``."""
    save_dataset(build_seg(source, image, labels, imat_hu, model_label, row), path)
    return path


def build_seg(source: pydicom.Dataset, image: CTImage, labels: np.ndarray, imat_hu: tuple[float, float] | None,
              model_label: str, row: dict[str, Any] | None = None) -> pydicom.Dataset:
    """A binary DICOM SEG of one slice (:data:`SEGMENTS`, in the source's pixel order) with the HU
    ranges of ``row`` (``hu_range_*`` columns; the defaults where absent; ``imat_hu`` for IMAT)."""
    import highdicom as hd

    ranges = hu_ranges_of(row, imat_hu)
    masks = segment_mask_arrays(labels, image.hu, ranges)
    stored = np.stack([image.canonical_to_stored(m.astype(np.uint8)) for m in masks], axis=-1).astype(bool)
    return hd.seg.Segmentation(
        source_images=[source], pixel_array=stored[None], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(ranges), series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="l3seg", manufacturer_model_name=model_label[:64],
        software_versions=__version__, device_serial_number="none", omit_empty_frames=False,
        content_description="L3 body composition segmentation (research use)", content_label="L3SEG",
        series_description=SEG_DESCRIPTION)


# --------------------------------------------------------------------------------------------
# SR


def criterion(reason: Any) -> str | None:
    """The criterion's source a verdict reason names in its last parentheses (``Martin 2013``,
    ``JASSO 2002``, ``Prado 2008``...), or None (a verdict not computable names none)."""
    m = re.search(r"\(([^()]*)\)\s*$", str(reason or ""))
    if not m:
        return None
    return m.group(1).split(";")[-1].strip() or None


def _text(value: str, meaning: str, text: Any):
    """A TEXT content item (CONTAINS) of the private scheme, its text made public (:func:`public_text`)."""
    import highdicom as hd

    return hd.sr.TextContentItem(name=_code(value, meaning), value=public_text(text) or "-", relationship_type="CONTAINS")


def _summary_items(row: dict[str, Any]) -> tuple[list, list, list]:
    """(measurements, qualitative evaluations, text items) of the "L3 body composition" group."""
    import highdicom as hd

    measurements = []
    smi = _finite(row.get("smi_cm2_m2"))
    if smi is not None:
        code, meaning, _unit, site, _seg = MEASURES["smi_cm2_m2"]
        measurements.append(hd.sr.Measurement(
            name=_code(code, meaning), value=smi, unit=hd.sr.CodedConcept("cm2/m2", "UCUM", "square centimeter per square meter"),
            finding_sites=[hd.sr.FindingSite(anatomic_location=site)]))
    index = _finite(row.get("slice_index"))
    if index is not None:
        measurements.append(hd.sr.Measurement(name=_code("SLICEINDEX", "Measured slice index in the series (0 = most inferior)"),
                                              value=index, unit=hd.sr.CodedConcept("1", "UCUM", "no units")))
    location = _finite(row.get("slice_location_mm"))
    if location is not None:
        measurements.append(hd.sr.Measurement(name=_code("SLICEZ", "Measured slice position (patient z)"),
                                              value=location, unit=codes.UCUM.Millimeter))
    evaluations, texts = [], []
    review = str(row.get("review_required")).lower() in ("true", "1", "yes")
    evaluations.append(hd.sr.QualitativeEvaluation(name=_code("REVIEW", "Review required before use"),
                                                   value=codes.SCT.Yes if review else codes.SCT.No))
    if review and row.get("review_reasons"):
        texts.append(_text("REVIEWWHY", "Review reasons", row.get("review_reasons")))
    for key, meaning in VERDICTS.items():
        verdict, reason = row.get(key), row.get(f"{key}_reason")
        source = criterion(reason)
        if verdict in (Answer.YES, Answer.NO) and source:
            evaluations.append(hd.sr.QualitativeEvaluation(name=_code(VERDICT_CODES[key], f"{meaning} ({source})"),
                                                           value=codes.SCT.Yes if verdict == Answer.YES else codes.SCT.No))
        if reason:
            texts.append(_text(f"{VERDICT_CODES[key]}_R", f"{meaning}: verdict and criterion", f"{verdict}: {reason}"))
    texts.extend(status_items(row))
    if row.get("cutoff_set"):
        texts.append(_text("CUTOFFSET", "Cut-off set", f"{row.get('cutoff_set')} ({row.get('cutoff_references')})"))
    level = str(row.get("level_source") or "")
    texts.append(_text("LEVELSOURCE", "How the vertebral level is known",
                       f"{level}: {row.get('l3_method')}" if row.get("l3_method") else level))
    confidence = str(row.get("l3_confidence") or "").strip()
    texts.append(_text("L3CONF", "L3 localisation confidence",
                       confidence if confidence and confidence.lower() != "nan" else "not assessed (level not located)"))
    l3_range = str(row.get("l3_range") or "").strip()
    if l3_range and l3_range.lower() != "nan":
        total = row.get("input_slices")
        texts.append(_text("L3RANGE", "L3 slice range in the series",
                           f"slices {l3_range} of {total} (0 = most inferior)" if total else f"slices {l3_range}"))
    for col, value, meaning in (("l3_notes", "L3NOTES", "L3 localisation notes"),
                                ("series_notes", "SERIESNOTES", "Series notes")):
        note = str(row.get(col) or "").strip()
        if note and note.lower() != "nan":
            texts.append(_text(value, meaning, note))
    return measurements, evaluations, texts


def status_items(row: dict[str, Any]) -> list:
    """Text items ``<verdict code>_S`` saying whether each yes/no verdict is ``final`` or
    ``provisional`` and why (:func:`~l3seg_lib.reporting.reasons.verdict_status`: a review flag
    that doubts the verdict's number or the level), so that a PACS reader never takes a doubted
    verdict for a finding."""
    status = verdict_status(row)
    why = status["verdicts_provisional_reason"]
    items = []
    for key, meaning in VERDICTS.items():
        state = status[f"{key}_status"]
        if state == "not computable":
            continue
        text = f"provisional, check the slice first: {why}" if state == "provisional" else "final"
        items.append(_text(f"{VERDICT_CODES[key]}_S", f"{meaning}: verdict status", text))
    return items


def build_sr(source: pydicom.Dataset, seg: pydicom.Dataset, row: dict[str, Any], model_label: str) -> pydicom.Dataset:
    """The TID 1500 measurement report of one slice's row of ``measurements.csv`` (see the module
    docstring): one ROI group (TID 1411) per SEG segment, referencing it, and the summary group."""
    import highdicom as hd

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="l3seg", manufacturer_name="l3seg", model_name=model_label[:64]))
    ranges = hu_ranges_of(row)
    groups = []
    for number in SEGMENTS:
        measurements = []
        for key, (code, meaning, unit, site, seg_number) in MEASURES.items():
            v = _finite(row.get(key))
            if seg_number != number or v is None:
                continue
            sites = [hd.sr.FindingSite(anatomic_location=site)] if site is not None else None
            measurements.append(hd.sr.Measurement(name=_code(code, meaning), value=v, unit=unit, finding_sites=sites))
        if not measurements:
            continue
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(),
                                                         identifier=f"segment {number}: {segment_label(number, ranges)}"),
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=number),
            finding_type=_concept(SEGMENTS[number][0].seg_code),
            finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.L3Vertebra)],
            measurements=measurements))
    measurements, evaluations, texts = _summary_items(row)
    summary = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="L3 body composition"),
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.L3Vertebra)],
        measurements=measurements or None, qualitative_evaluations=evaluations or None,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)])
    summary[0].ContentSequence.extend(texts)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[*groups, summary])
    return hd.sr.Comprehensive3DSR(evidence=[source, seg], content=report, series_instance_uid=hd.UID(),
                                   series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
                                   manufacturer="l3seg", series_description=SR_DESCRIPTION)


def write_sr(path: Path, source: pydicom.Dataset, seg: pydicom.Dataset, row: dict[str, Any], model_label: str) -> Path:
    """:func:`build_sr` saved to ``path``."""
    save_dataset(build_sr(source, seg, row, model_label), path)
    return path


TYPE2_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber")
"""Attributes the derived objects copy from their source; present but empty when the source lacks them."""


def _with_type2_attributes(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The source dataset (in memory) with the patient and study attributes SEG and SR must carry."""
    for keyword in TYPE2_ATTRIBUTES:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _source_dataset(source: pydicom.Dataset | str | Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """The source header for a derived object: a copy of a dataset in memory (never changed in
    place) or the file read, with the type 2 patient and study attributes present."""
    ds = copy.deepcopy(source) if isinstance(source, pydicom.Dataset) else \
        pydicom.dcmread(source, stop_before_pixels=stop_before_pixels)
    return _with_type2_attributes(ds)


def write_dicom_outputs(out: Path, stem: str, source: pydicom.Dataset | str | Path, image: CTImage,
                        labels: np.ndarray, imat_hu: tuple[float, float] | None, row: dict[str, Any],
                        model_label: str) -> dict[str, str]:
    """SEG and SR of one measured slice under ``out/dicom/``; paths relative to ``out``. ``source``
    is the slice's DICOM header as read with the image (in memory; not changed here), or its file;
    the SR references the SEG built in memory (not read back)."""
    source = _source_dataset(source)
    seg = build_seg(source, image, labels, imat_hu, model_label, row)
    seg_path = out / "dicom" / f"{stem}_seg.dcm"
    save_dataset(seg, seg_path)
    sr_path = write_sr(out / "dicom" / f"{stem}_sr.dcm", source, seg, row, model_label)
    return {"dicom_seg": str(seg_path.relative_to(out)), "dicom_sr": str(sr_path.relative_to(out))}


# --------------------------------------------------------------------------------------------
# the SR of a series not measured, and a later result superseding an earlier one


def build_refusal_sr(sources: Sequence[pydicom.Dataset], reason: str) -> pydicom.Dataset:
    """A TID 1500 report (Comprehensive 3D SR) saying that L3 body composition was not measured
    in the series of ``sources`` (its instances' headers: all of them are its evidence) and why:
    same patient and study, series 903 "L3SEG not measured", one group whose qualitative
    evaluation "L3 body composition measured" is No and whose Comment (DCM 121106) is
    :data:`REFUSAL_PREFIX` + the reason (:func:`public_text`: no path, no picture of this machine)."""
    import highdicom as hd

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="l3seg", manufacturer_name="l3seg"))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="L3 body composition not measured"),
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.L3Vertebra)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=_code("MEASURED", "L3 body composition measured"),
                                                             value=codes.SCT.No)])
    group[0].ContentSequence.append(hd.sr.TextContentItem(
        name=codes.DCM.Comment, value=public_text(REFUSAL_PREFIX + str(reason), 1024), relationship_type="CONTAINS"))
    report = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_device_context=device),
                                     procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[group])
    return hd.sr.Comprehensive3DSR(evidence=list(sources), content=report, series_instance_uid=hd.UID(),
                                   series_number=REFUSAL_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
                                   manufacturer="l3seg", series_description=REFUSAL_DESCRIPTION)


def write_refusal_sr(path: Path, sources: pydicom.Dataset | str | Path | Sequence[pydicom.Dataset | str | Path],
                     reason: str) -> Path:
    """:func:`build_refusal_sr` of the series' instances ``sources`` (datasets or files; one is
    accepted too) saved to ``path``. What ``l3seg serve --refusal-sr`` sends back to the PACS."""
    items = [sources] if isinstance(sources, (pydicom.Dataset, str, Path)) else list(sources)
    headers = [_source_dataset(s, stop_before_pixels=True) for s in items]
    for ds in headers:
        if "PixelData" in ds:
            del ds.PixelData
    save_dataset(build_refusal_sr(headers, reason), path)
    return path


def _last_group(sr: pydicom.Dataset) -> pydicom.Dataset | None:
    """The last measurement group of a TID 1500 report (the summary group, where notes go)."""
    for item in sr.get("ContentSequence", []):
        name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        if name is not None and name.CodeValue == "126010" and item.get("ContentSequence"):  # Imaging Measurements
            return item.ContentSequence[-1]
    return None


def supersede(path: Path, earlier: Sequence[pydicom.Dataset], note: str) -> bool:
    """Mark the SR at ``path`` as superseding the ``earlier`` SRs (l3seg's results for the same
    series from an earlier part of it): their references in PredecessorDocumentsSequence, and
    ``note`` as a TEXT item "Supersedes" in its summary group. False (nothing changed) when it
    already says so. Call it before the SR is sent."""
    sr = pydicom.dcmread(path)
    if "PredecessorDocumentsSequence" in sr or _last_group(sr) is None:
        return False
    import highdicom as hd

    by_study: dict[str, dict[str, list[pydicom.Dataset]]] = {}
    for ds in earlier:
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        by_study.setdefault(str(ds.StudyInstanceUID), {}).setdefault(str(ds.SeriesInstanceUID), []).append(ref)
    studies = []
    for study_uid, series in by_study.items():
        study = pydicom.Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = []
        for series_uid, refs in series.items():
            item = pydicom.Dataset()
            item.SeriesInstanceUID = series_uid
            item.ReferencedSOPSequence = refs
            study.ReferencedSeriesSequence.append(item)
        studies.append(study)
    if studies:
        sr.PredecessorDocumentsSequence = studies
    _last_group(sr).ContentSequence.append(hd.sr.TextContentItem(
        name=_code("SUPERSEDES", "Supersedes an earlier result"), value=public_text(note) or "-",
        relationship_type="CONTAINS"))
    save_dataset(sr, path)
    return True
