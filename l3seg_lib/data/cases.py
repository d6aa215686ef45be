"""Cases for training and evaluation: a CT slice with its class mask, loaded from a manifest row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from l3seg_lib.config import DataConfig
from l3seg_lib.data.manifest import ManifestEntry, entry_from_row
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import CTImage, volume_slices
from l3seg_lib.imageio.labels import read_mask_for, remap_labels
from l3seg_lib.imageio.reader import read_image
from l3seg_lib.tissues import IDENTITY_LABEL_MAP


@dataclass
class Case:
    """One axial slice and (optionally) its class mask (0-3) of the same shape."""

    image: CTImage
    mask: np.ndarray | None
    mask_source: str | None = None


def label_map_of(data: DataConfig) -> dict[str, list[int]]:
    """The label map in force: ``data.label_map``, or the source's own when it is null
    (the phantom's anatomical labels for ``source: phantom``; 0-3 as the classes otherwise)."""
    if data.label_map is not None:
        return data.label_map
    if data.source == "phantom":
        from l3seg_lib.phantom.labels import PHANTOM_LABEL_MAP

        return PHANTOM_LABEL_MAP
    return IDENTITY_LABEL_MAP


def load_entry(entry: ManifestEntry, data: DataConfig, require_mask: bool = True) -> list[Case]:
    """Load the case(s) one manifest entry describes (several for a volume without slice_index)."""
    image_path = entry.image
    volume = read_image(image_path, check_hu=data.check_hu and not entry.is_png, **entry.png_kwargs())
    if entry.patient_id is not None:
        volume.patient_id = entry.patient_id
    slices = volume_slices(volume)
    mask_path = entry.mask
    if mask_path is None and require_mask:
        raise L3SegInputError(image_path, "no mask given in the manifest (the 'mask' column is empty)")

    masks: np.ndarray | None = None
    if mask_path is not None:
        raw = read_mask_for(mask_path, volume)
        masks = remap_labels(raw, label_map_of(data), str(mask_path))

    if entry.slice_index is not None:
        indices = [entry.slice_index]
        for i in indices:
            if not 0 <= i < volume.n_slices:
                raise L3SegInputError(image_path, f"slice_index {i} is outside 0..{volume.n_slices - 1}")
    elif volume.n_slices == 1:
        indices = [0]
    elif masks is not None:
        indices = [int(i) for i in np.flatnonzero(masks.reshape(masks.shape[0], -1).any(axis=1))]
        if not indices:
            raise L3SegInputError(mask_path, "the mask volume has no labelled slice")
    else:
        raise L3SegInputError(image_path, f"volume with {volume.n_slices} slices: give slice_index in the manifest")
    return [Case(slices[i], None if masks is None else masks[i], None if mask_path is None else str(mask_path))
            for i in indices]


def iter_manifest(manifest: pd.DataFrame, data: DataConfig, require_mask: bool = True) -> Iterator[Case]:
    """The cases of every manifest row, in order (:func:`load_entry`)."""
    source = manifest.attrs.get("source")
    for _, row in manifest.iterrows():
        yield from load_entry(entry_from_row(row, source), data, require_mask=require_mask)
