"""Masks written for editing: ITK-SNAP NIfTI (with its label description file) and Slice-O-Matic
``.tag``, one per measured slice, under ``<out>/masks/``; ``l3seg remeasure`` reads them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l3seg_lib.imageio.ct import CTImage
from l3seg_lib.imageio.labels import CLASS_LABELS, write_itksnap_labels, write_tag
from l3seg_lib.imageio.nifti import write_nifti_labels
from l3seg_lib.tissues import IMAT, tag_map

LABEL_FILE = "labels.txt"


def export_masks(out: Path, stem: str, image: CTImage, labels: np.ndarray, imat_hu: tuple[float, float] | None,
                 tag: bool) -> dict[str, str]:
    """Write ``masks/<stem>.nii.gz`` (classes 0-3 in the image's space) and, for DICOM inputs,
    ``masks/<stem>.tag`` (Slice-O-Matic tags 1 muscle, 2 IMAT, 5 VAT, 7 SAT, in the DICOM's
    stored pixel order; IMAT by :func:`l3seg_lib.tissues.imat_mask` with the IMAT range
    ``imat_hu`` (low, high HU), or its default when None). Returns their paths relative to ``out``."""
    folder = out / "masks"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / LABEL_FILE).is_file():
        write_itksnap_labels(folder / LABEL_FILE, CLASS_LABELS)
    nifti = write_nifti_labels(labels, image.affine, folder / f"{stem}.nii.gz")
    paths = {"mask_nifti": str(nifti.relative_to(out)), "mask_tag": ""}
    if tag:
        tags = tag_map(labels, image.hu, None if imat_hu is None else {IMAT.key: tuple(imat_hu)})
        paths["mask_tag"] = str(write_tag(folder / f"{stem}.tag", image.canonical_to_stored(tags)).relative_to(out))
    return paths
