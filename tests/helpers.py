"""Small synthetic inputs for tests: DICOM files with controllable (and broken) headers, and series
folders as scanners export them; readers of the SR content the tests check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def body_phantom(rows: int = 64, cols: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A tiny HU image with air, a fat ring (SAT), a muscle ring and fat inside (VAT).

    Returns (HU float32, class mask uint8) with known areas in pixels.
    """
    yy, xx = np.mgrid[:rows, :cols]
    r = np.hypot((yy - rows / 2 + 0.5) / (rows * 0.42), (xx - cols / 2 + 0.5) / (cols * 0.42))
    hu = np.full((rows, cols), -1000.0, dtype=np.float32)
    mask = np.zeros((rows, cols), dtype=np.uint8)
    hu[r < 1.0], mask[r < 1.0] = -100.0, 2
    hu[r < 0.8], mask[r < 0.8] = 45.0, 1
    hu[r < 0.6], mask[r < 0.6] = -90.0, 3
    return hu, mask


def write_dicom(
    path: str | Path,
    hu: np.ndarray,
    spacing: tuple[float, float] = (0.8, 0.7),
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    position: tuple[float, float, float] = (-100.0, -120.0, 50.0),
    patient_id: str = "P001",
    series_uid: str | None = None,
    drop: tuple[str, ...] = (),
    stored: np.ndarray | None = None,
    **tags,
) -> Path:
    """Write a single-frame CT DICOM file of ``hu`` (stored as HU + 1024, intercept -1024), or of
    the given ``stored`` values (int16: signed storage) with the intercept in ``tags``."""
    path = Path(path)
    meta = FileMetaDataset()
    sop = generate_uid()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(ds.SeriesInstanceUID), "study"])  # one study per series
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[str(ds.SeriesInstanceUID), "for"])
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.PatientSex = "F"
    ds.PatientSize = "1.65"
    ds.PatientWeight = "60"
    ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    ds.ImageOrientationPatient = [str(v) for v in orientation]
    ds.ImagePositionPatient = [str(v) for v in position]
    ds.SliceThickness = "3"
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.PixelData = np.clip(np.round(hu) + 1024, 0, 65535).astype(np.uint16).tobytes()
    if stored is not None:
        ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
        ds.PixelData = stored.astype("<i2" if ds.PixelRepresentation else "<u2").tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    for key in drop:
        if key in ds:
            delattr(ds, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def read_back(path: str | Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


def paint_muscle_square(path: str | Path) -> None:
    """Edit a label NIfTI in place as a user would: everything background but a 40 x 40 pixel
    muscle square (rows and columns 10-49)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    data[:] = 0
    data[10:50, 10:50] = 1
    nib.save(nib.Nifti1Image(data, img.affine), str(path))


def reconstruction_circle(shape: tuple[int, int]) -> np.ndarray:
    """The reconstruction circle of a square image (True inside): padding goes outside it."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - shape[0] / 2 + 0.5, xx - shape[1] / 2 + 0.5) <= shape[0] / 2


def write_dose_report(path: str | Path, series_uid: str) -> Path:
    """A CT dose report (an SR file, no pixels) of patient P001: what series folders hold beside the CT."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID, ds.SeriesDescription = "SR", "P001", series_uid, "Dose Report"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom_series(folder: Path, hu: np.ndarray, uid: str, n: int = 3, z0: float = 0.0, step: float = 3.0,
                       **tags) -> list[Path]:
    """``n`` slices of ``hu`` as one series ``uid``, ``step`` mm apart from ``z0`` (mm)."""
    return [write_dicom(folder / f"{uid[-4:]}_{k}.dcm", hu + 0 * k, position=(-100, -120, z0 + step * k),
                        series_uid=uid, InstanceNumber=k + 1, **tags) for k in range(n)]


def messy_series_folder(folder: Path, hu: np.ndarray) -> Path:
    """A series folder as a scanner exports it: a 3-slice CT series (soft-tissue kernel), a scout
    (localizer), a dose report and a secondary capture."""
    write_dicom_series(folder, hu, "1.2.3.100", ConvolutionKernel="B30f", SeriesNumber=2,
                       SeriesDescription="Abdomen 3mm")
    write_dicom(folder / "scout.dcm", hu, orientation=(0, 1, 0, 0, 0, -1), series_uid="1.2.3.1",
                ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    write_dose_report(folder / "dose.dcm", "1.2.3.999")
    write_dicom(folder / "capture.dcm", hu, series_uid="1.2.3.998", SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    return folder


def sr_numbers(sr) -> dict[str, dict]:
    """Every NUM of an SR by code value: value, unit, and the SEG segment its group references."""
    found: dict[str, dict] = {}

    def walk(items, segment=None):
        for item in items:
            if item.ValueType == "IMAGE" and "ReferencedSegmentNumber" in item.ReferencedSOPSequence[0]:
                segment = int(item.ReferencedSOPSequence[0].ReferencedSegmentNumber)
        for item in items:
            if item.ValueType == "NUM":
                mv = item.MeasuredValueSequence[0]
                found[item.ConceptNameCodeSequence[0].CodeValue] = {
                    "value": float(mv.NumericValue), "unit": mv.MeasurementUnitsCodeSequence[0].CodeValue,
                    "segment": segment}
            if "ContentSequence" in item:
                walk(item.ContentSequence, segment if item.ValueType != "CONTAINER" else None)
    walk(sr.ContentSequence)
    return found


def sr_texts(sr) -> dict[str, str]:
    """Every TEXT (value) and CODE (meaning of the value) of an SR by the meaning of its name."""
    found: dict[str, str] = {}

    def walk(items):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if item.ValueType == "TEXT":
                found[name] = str(item.TextValue)
            elif item.ValueType == "CODE":
                found[name] = str(item.ConceptCodeSequence[0].CodeMeaning)
            if "ContentSequence" in item:
                walk(item.ContentSequence)
    walk(sr.ContentSequence)
    return found
