"""The real example CT in ../shared/data: loaders on the real files, and the real-CT study
script (experiments/realct_check.py).

Skipped with a message when ../shared/data is absent; run in CI where it is present.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from realct_check import (  # experiments/, on the path via conftest
    l3_slices,
    load_tissue_crop,
    run_realct,
)

from l3seg_lib.imageio.nifti import read_nifti
from l3seg_lib.training.finetune import block_folds


def test_nifti_and_binary_tissue_masks_combine(shared_data):
    volume, labels = load_tissue_crop(shared_data)
    assert volume.hu.shape == labels.shape == (30, 101, 122)
    assert volume.spacing_mm == pytest.approx((3.0, 3.0, 3.0))
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # tissue HU in the reference masks are physiological: muscle soft tissue, fat negative
    assert 0 < np.median(volume.hu[labels == 1]) < 80
    assert -130 < np.median(volume.hu[labels == 2]) < -60
    assert -130 < np.median(volume.hu[labels == 3]) < -40
    # canonical orientation: anterior at the top, so the spine (bone) sits in the lower half
    bone = volume.hu[15] > 300
    rows = np.nonzero(bone)[0]
    assert rows.mean() > volume.hu.shape[1] / 2


def test_l3_middle_slice_is_72(shared_data):
    full, middle, indices = l3_slices(shared_data, margin=2)
    assert full.hu.shape == (112, 101, 122)
    assert middle == 72 and indices == [70, 71, 72, 73, 74]


def test_block_folds_keep_a_buffer():
    folds = block_folds(30, 3, buffer=1)
    assert [t for _, t in folds] == [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    train, test = folds[1]
    assert 9 not in train and 20 not in train and 8 in train and 21 in train
    assert not set(train) & set(test)


@pytest.mark.slow
def test_run_realct_with_a_tiny_model(shared_data, tiny_model, tmp_path):
    summary = run_realct(shared_data, tiny_model.with_suffix(".pt"), tmp_path, finetune_epochs=1, device="cpu", docs_dir=tmp_path / "docs")
    assert summary["l3_slice"] == 72 and summary["crop_slices"] == 30
    assert set(summary["transfer"]) == {"model as trained (ensemble)", "model as trained (member 0)",
                                        "member 0 fine-tuned on other blocks"}
    assert (tmp_path / "figures" / "l3_overlay.png").is_file() and (tmp_path / "docs" / "realct_l3_overlay.png").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["dicom_series"]["slices"] == 20
    assert read_nifti(shared_data / "example_ct.nii.gz").n_slices == 112
