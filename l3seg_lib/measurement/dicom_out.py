"""DICOM outputs of a measured slice (highdicom): a Segmentation of muscle, SAT, VAT and IMAT that
references its source image, and a Comprehensive 3D SR measurement report (TID 1500) with the
areas, SMI, muscle density and verdicts, in UCUM units, naming the model.

Segments, their labels and coded concepts come from :mod:`l3seg_lib.tissues`. Tissue-specific
concepts without a standard code use the private coding scheme ``99L3SEG`` (designators
starting with 99 are private by the DICOM standard); areas use SNOMED CT "Area" with the tissue
as finding site where SNOMED has it (skeletal muscle, fat).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from l3seg_lib import __version__
from l3seg_lib.imageio.ct import CTImage
from l3seg_lib.names import atomic_path
from l3seg_lib.tissues import ALL_TISSUES, IMAT, PRIVATE_SCHEME, Code, segment_masks

SCHEME = PRIVATE_SCHEME


def _code(value: str, meaning: str):
    """highdicom coded concept ``value`` of the l3seg private coding scheme."""
    import highdicom as hd

    return hd.sr.CodedConcept(value, SCHEME, meaning)


def _concept(code: Code):
    """highdicom coded concept of ``code`` (value, scheme, meaning)."""
    import highdicom as hd

    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _segments():
    """One segment description per tissue of :data:`l3seg_lib.tissues.ALL_TISSUES` (muscle, SAT, VAT, IMAT)."""
    import highdicom as hd

    algorithm = hd.AlgorithmIdentificationSequence(name="l3seg", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    tissue = codes.SCT.Tissue
    return [hd.seg.SegmentDescription(segment_number=t.segment_number, segment_label=t.seg_label,
                                      segmented_property_category=tissue, segmented_property_type=_concept(t.seg_code),
                                      algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                      algorithm_identification=algorithm) for t in ALL_TISSUES]


def save_dataset(ds: pydicom.Dataset, path: Path) -> Path:
    """Save ``ds`` to ``path`` under a temporary name, renamed into place when complete (never a
    torn SEG or SR under the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        ds.save_as(tmp)
    return path


def write_seg(path: Path, source: pydicom.Dataset, image: CTImage, labels: np.ndarray,
              imat_hu: tuple[float, float] | None, model_label: str) -> Path:
    """:func:`build_seg` saved to ``path``."""
    seg = build_seg(source, image, labels, imat_hu, model_label)
    save_dataset(seg, path)
    return path


def build_seg(source: pydicom.Dataset, image: CTImage, labels: np.ndarray, imat_hu: tuple[float, float] | None,
              model_label: str) -> pydicom.Dataset:
    """A binary DICOM SEG (muscle, SAT, VAT, IMAT) of one slice, in the source's pixel order; IMAT
    by :func:`l3seg_lib.tissues.imat_mask` with the IMAT range ``imat_hu`` (low, high HU), or its
    default when None."""
    import highdicom as hd

    masks = segment_masks(labels, image.hu, None if imat_hu is None else {IMAT.key: tuple(imat_hu)})
    stored = np.stack([image.canonical_to_stored(m.astype(np.uint8)) for m in masks], axis=-1).astype(bool)
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=stored[None], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(), series_instance_uid=hd.UID(), series_number=901, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="l3seg", manufacturer_model_name=model_label[:64],
        software_versions=__version__, device_serial_number="none", omit_empty_frames=False,
        content_description="L3 body composition segmentation (research use)", content_label="L3SEG")
    return seg


MEASURES = {
    # key in measurements.csv: (concept name, unit, finding site)
    "sma_refined_cm2": ("SMA", "Skeletal muscle area at L3 (refined)", codes.UCUM.SquareCentimeter, codes.SCT.SkeletalMuscle),
    "sat_refined_cm2": ("SATA", "Subcutaneous adipose tissue area at L3 (refined)", codes.UCUM.SquareCentimeter, None),
    "vat_refined_cm2": ("VATA", "Visceral adipose tissue area at L3 (refined)", codes.UCUM.SquareCentimeter, None),
    "imat_cm2": ("IMATA", "Intermuscular adipose tissue area at L3", codes.UCUM.SquareCentimeter, None),
    "muscle_refined_hu_mean": ("SMD", "Skeletal muscle mean radiodensity at L3", codes.UCUM.HounsfieldUnit,
                               codes.SCT.SkeletalMuscle),
    "smi_cm2_m2": ("SMI", "Skeletal muscle index at L3", None, codes.SCT.SkeletalMuscle),
}
VERDICTS = {"sarcopenia": "Sarcopenia", "sarcopenic_obesity": "Sarcopenic obesity", "myosteatosis": "Myosteatosis",
            "visceral_obesity": "Visceral obesity"}


def write_sr(path: Path, source: pydicom.Dataset, seg: pydicom.Dataset, row: dict[str, Any], model_label: str) -> Path:
    """A TID 1500 measurement report of one slice's row of ``measurements.csv``."""
    import highdicom as hd

    cm2_per_m2 = hd.sr.CodedConcept("cm2/m2", "UCUM", "square centimeter per square meter")
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="l3seg", manufacturer_name="l3seg", model_name=model_label[:64]))
    measurements = []
    for key, (value, meaning, unit, site) in MEASURES.items():
        v = row.get(key)
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            continue
        sites = [hd.sr.FindingSite(anatomic_location=site)] if site is not None else None
        measurements.append(hd.sr.Measurement(name=_code(value, meaning), value=float(v), unit=unit or cm2_per_m2,
                                              finding_sites=sites))
    evaluations = []
    for key, meaning in VERDICTS.items():
        verdict = row.get(key)
        if verdict in ("yes", "no"):
            evaluations.append(hd.sr.QualitativeEvaluation(name=_code(key.upper(), f"{meaning} ({row.get('cutoff_set')})"),
                                                           value=codes.SCT.Yes if verdict == "yes" else codes.SCT.No))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="L3 body composition"),
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.L3Vertebra)],
        measurements=measurements, qualitative_evaluations=evaluations or None,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)])
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[group])
    sr = hd.sr.Comprehensive3DSR(evidence=[source, seg], content=report, series_instance_uid=hd.UID(),
                                 series_number=902, sop_instance_uid=hd.UID(), instance_number=1,
                                 manufacturer="l3seg")
    save_dataset(sr, path)
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
    seg = build_seg(source, image, labels, imat_hu, model_label)
    seg_path = out / "dicom" / f"{stem}_seg.dcm"
    save_dataset(seg, seg_path)
    sr_path = write_sr(out / "dicom" / f"{stem}_sr.dcm", source, seg, row, model_label)
    return {"dicom_seg": str(seg_path.relative_to(out)), "dicom_sr": str(sr_path.relative_to(out))}


def write_refusal_sr(path: Path, source: pydicom.Dataset | str | Path, reason: str) -> Path:
    """A Comprehensive 3D SR (as the measurement SR) saying that L3 body composition was not measured in ``source``'s series
    and why (``reason``, as in ``errors.csv``): same patient and study, series 903, the series in
    its evidence, the reason as a Comment (DCM 121106) under an Imaging Measurement Report
    container. What ``l3seg serve --refusal-sr`` sends back to the PACS."""
    import highdicom as hd

    source = _source_dataset(source, stop_before_pixels=True)
    root = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport)
    text = "L3 body composition not measured by l3seg: " + " ".join(str(reason).split())
    root.ContentSequence = hd.sr.ContentSequence([
        hd.sr.TextContentItem(name=codes.DCM.Comment, value=text[:1024], relationship_type="CONTAINS")])
    sr = hd.sr.Comprehensive3DSR(evidence=[source], content=root, series_instance_uid=hd.UID(), series_number=903,
                               sop_instance_uid=hd.UID(), instance_number=1, manufacturer="l3seg",
                               series_description="L3SEG not measured")
    save_dataset(sr, path)
    return path
