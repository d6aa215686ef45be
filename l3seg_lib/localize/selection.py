"""Slice selection: which axial slices of a volume to segment and measure.

Explicit indices, the middle of a vertebra in a label map aligned with the image (e.g.
TotalSegmentator's, where L3 is label 29), or every slice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.imageio.labels import read_mask_for

TOTALSEGMENTATOR_L3 = 29
"""L3 in TotalSegmentator's ``total`` task label map."""



def select_vertebra_slices(
    vertebra_labels: np.ndarray, label: int, margin: int = 0, source: str = "vertebra labels"
) -> tuple[int, list[int]]:
    """Middle axial slice of a vertebra in a canonical (z, rows, cols) label volume.

    The middle is halfway between the lowest and highest slice that contain ``label``
    (e.g. 29 for L3 in TotalSegmentator's ``total`` task). Returns (middle, slices within
    ``margin`` of it, clipped to the volume).
    """
    vol = np.asarray(vertebra_labels)
    if vol.ndim != 3:
        raise L3SegInputError(source, f"expected a 3-D label volume, got shape {vol.shape}")
    z = np.flatnonzero((vol == label).any(axis=(1, 2)))
    if z.size == 0:
        raise L3SegInputError(source, f"label {label} (the vertebra) does not occur in the label volume")
    if np.any(np.diff(z) > 1):
        raise L3SegInputError(source, f"label {label} occurs in non-contiguous slices {z.tolist()}; check the labels")
    middle = int((z[0] + z[-1]) // 2)
    lo, hi = max(0, middle - margin), min(vol.shape[0] - 1, middle + margin)
    return middle, list(range(lo, hi + 1))


def requested_slices(volume: CTVolume, slices: list[int] | None = None, vertebra_labels: str | Path | None = None,
                     vertebra_label: int = TOTALSEGMENTATOR_L3, margin: int = 0) -> list[int]:
    """The slices a caller asked ``predict`` to segment: explicit indices, the middle of a vertebra
    (+- margin) from a label volume aligned with the image, or every slice."""
    if slices:
        for i in slices:
            if not 0 <= i < volume.n_slices:
                raise L3SegInputError(volume.source, f"slice {i} is outside 0..{volume.n_slices - 1}")
        return list(slices)
    if vertebra_labels is not None:
        labels = read_mask_for(vertebra_labels, volume, "vertebra label volume")
        return select_vertebra_slices(labels, vertebra_label, margin, str(vertebra_labels))[1]
    return list(range(volume.n_slices))
