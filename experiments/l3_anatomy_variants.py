"""Vertebra labels from a radiologist's reading, and anatomy edits of real CT, for the L3
localiser's validation (``experiments/l3_real_validation.py``; issue 30).

- :func:`reading_labels`: a vertebra label array (the shape :func:`l3seg_lab.l3_variants.
  prepare_labels` gives) from a reading such as ``acrin_example/l3_reference/vertebrae.csv``
  (vertebra, first_slice, last_slice): each vertebral body a 30 x 30 mm box at the column's
  in-plane position, the slices below the lowest listed vertebra's disc the sacrum. The *levels*
  come from the reading alone; only the in-plane position of the box comes from the traced
  spine, so that the crops, shifts and rotations of the standard variants move it with the image.
- :func:`lowest_ribs`: the voxels of the lowest rib pair, from rib labels where a label map holds
  them (TotalSegmentator's rib_left_12 / rib_right_12), else traced from a reading (bone
  components lateral to the column whose most medial voxel lies in the reading's T12).
- :func:`remove_lowest_ribs` (an eleven-rib patient) and :func:`add_rib_pair_below` (a thirteenth
  rib pair on L1): image edits after which "cannot tell" or the true L3 are both right answers,
  and any other level is wrong.

Units: HU, mm; slices are canonical indices (inferior -> superior).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: l3seg_lab

from l3seg_lab.l3_variants import BODY_OFFSET, VERTEBRAE, Pair, _rebuild  # noqa: E402
from l3seg_lib.imageio.ct import CTVolume  # noqa: E402
from l3seg_lib.localize.spine import trace_spine  # noqa: E402

SOFT_TISSUE_HU = 40.0
"""What a removed rib's voxels become (HU)."""
RIB_BONE_HU = 150.0
"""Bone threshold for tracing ribs from a reading (HU)."""


def read_reading(path: str | Path) -> dict[str, tuple[int, int]]:
    """``{vertebra: (first_slice, last_slice)}`` from a reading CSV (vertebra, first_slice, last_slice, ...)."""
    with open(path, newline="") as fh:
        return {r["vertebra"]: (int(r["first_slice"]), int(r["last_slice"])) for r in csv.DictReader(fh)}


def _column_position(volume: CTVolume) -> tuple[float, float]:
    """Median (row, col) of the vertebral-body centre in original pixels (from the traced spine)."""
    spine = trace_spine(volume, 120.0)
    if spine is None:
        raise ValueError("no spinal column traced: cannot place the reading's vertebrae in plane")
    return (float(np.nanmedian(spine.body[:, 0] / spine.row_scale)),
            float(np.nanmedian(spine.body[:, 1] / spine.col_scale)))


def reading_labels(volume: CTVolume, reading: dict[str, tuple[int, int]]) -> np.ndarray:
    """Prepared vertebra labels (body = ``value + BODY_OFFSET``) built from ``reading``."""
    row, col = _column_position(volume)
    _, dr, dc = volume.spacing_mm
    hr, hc = 15.0 / dr, 15.0 / dc
    r0, r1 = int(max(0, row - hr)), int(min(volume.hu.shape[1], row + hr))
    c0, c1 = int(max(0, col - hc)), int(min(volume.hu.shape[2], col + hc))
    out = np.zeros(volume.hu.shape, np.uint8)
    for name, (lo, hi) in reading.items():
        out[lo: hi + 1, r0:r1, c0:c1] = VERTEBRAE[name] + BODY_OFFSET
    lowest = min(lo for lo, _ in reading.values())
    if "L5" in reading:  # the sacrum below the L5/S1 disc
        out[: max(0, lowest - 1), r0:r1, c0:c1] = VERTEBRAE["sacrum"]
    return out


def lowest_ribs(volume: CTVolume, t12: tuple[int, int], rib_labels: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the lowest rib pair: ``rib_labels`` (a mask of the 12th ribs) where given,
    else bone components (> :data:`RIB_BONE_HU`) more than 25 mm lateral of the column that reach
    60 mm to the side and whose most medial voxel lies in slices ``t12`` (the reading's T12)."""
    if rib_labels is not None:
        return rib_labels.astype(bool)
    row, col = _column_position(volume)
    _, dr, dc = volume.spacing_mm
    lat = np.abs(np.arange(volume.hu.shape[2]) - col) * dc
    rows = (np.arange(volume.hu.shape[1]) - row) * dr
    region = (volume.hu > RIB_BONE_HU) & (lat >= 25.0)[None, None, :] & ((rows >= -30.0) & (rows <= 70.0))[None, :, None]
    region[t12[1] + 3:] = False  # the ribs above run down into this slab too: keep to what starts at T12
    labels, _ = ndimage.label(region)
    out = np.zeros(region.shape, bool)
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        zz, rr, cc = np.nonzero(labels[box] == k)
        if zz.size < 20:
            continue
        lateral = lat[cc + box[2].start]
        z_head = zz[np.argmin(lateral)] + box[0].start
        if lateral.max() >= 60.0 and lateral.min() <= 45.0 and t12[0] - 1 <= z_head <= t12[1] + 1:
            out[box][labels[box] == k] = True
    return out


def remove_lowest_ribs(volume: CTVolume, labels: np.ndarray, ribs: np.ndarray) -> Pair:
    """The lowest rib pair replaced by soft tissue (an eleven-rib patient, by image edit)."""
    grown = ndimage.binary_dilation(ribs, iterations=1)
    hu = volume.hu.copy()
    hu[grown] = SOFT_TISSUE_HU
    return _rebuild(volume, hu, volume.affine.copy(), "lowest ribs removed"), labels.copy()


def add_rib_pair_below(volume: CTVolume, labels: np.ndarray, ribs: np.ndarray, shift: int) -> Pair:
    """The lowest rib pair copied ``shift`` slices lower as well (a thirteenth rib pair on the
    vertebra below, by image edit; existing bone is kept where brighter)."""
    hu = volume.hu.copy()
    moved = np.zeros_like(ribs)
    moved[:-shift] = ribs[shift:]
    src = np.zeros_like(hu)
    src[:-shift] = volume.hu[shift:]
    hu[moved] = np.maximum(hu[moved], src[moved])
    return _rebuild(volume, hu, volume.affine.copy(), f"rib pair added {shift} slices lower"), labels.copy()
