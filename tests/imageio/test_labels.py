"""Label remapping, ITK-SNAP label files, Slice-O-Matic .tag files, binary masks, L3 selection."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import body_phantom, write_dicom

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.dicom import read_dicom
from l3seg_lib.imageio.labels import (
    LabelDescription,
    combine_binary_masks,
    read_itksnap_labels,
    read_label_file,
    read_tag,
    remap_labels,
    write_itksnap_labels,
)
from l3seg_lib.localize.selection import select_vertebra_slices
from l3seg_lib.tissues import SLICE_O_MATIC_TAGS

ITK_MAP = {"background": [0, 7, 8], "muscle": [1, 2, 4], "sat": [5], "vat": [6]}


def test_remap_itksnap_values_to_classes():
    src = np.array([[0, 1, 2], [4, 5, 6], [7, 8, 6]])
    out = remap_labels(src, ITK_MAP, "m.nii.gz")
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1, 1], [1, 2, 3], [0, 0, 3]]


def test_remap_unknown_values_error_names_file_and_values():
    src = np.array([[0, 1, 9], [12, 5, 6]])
    with pytest.raises(L3SegInputError) as err:
        remap_labels(src, ITK_MAP, "case7_mask.nii.gz")
    assert "case7_mask.nii.gz" in str(err.value)
    assert "[9, 12]" in str(err.value)


def test_remap_rejects_probability_maps():
    with pytest.raises(L3SegInputError, match="non-integer"):
        remap_labels(np.array([[0.0, 0.4], [1.0, 2.0]]), ITK_MAP, "p.nii.gz")
    assert remap_labels(np.array([[0.0, 1.0000001]]), ITK_MAP, "f.nii.gz").tolist() == [[0, 1]]


def test_slice_o_matic_default_mapping():
    tags = np.array([[0, 1, 2, 5, 7]])
    assert remap_labels(tags, SLICE_O_MATIC_TAGS, "x.tag").tolist() == [[0, 1, 1, 3, 2]]


def test_itksnap_label_file_round_trip(tmp_path):
    labels = [LabelDescription(0, "Clear Label", (0, 0, 0)), LabelDescription(5, "subcutaneous fat", (250, 220, 90))]
    path = write_itksnap_labels(tmp_path / "labels.txt", labels)
    assert read_itksnap_labels(path) == labels
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(L3SegInputError, match="bad.txt: line 1"):
        read_itksnap_labels(tmp_path / "bad.txt")


def _tag_bytes(header: str, data: np.ndarray) -> bytes:
    return header.encode("latin-1") + b"\x0c" + data.astype(np.uint8).tobytes()


def test_tag_reader_on_written_file(tmp_path):
    tags = np.array([[0, 1, 1, 7], [5, 5, 2, 7], [0, 0, 0, 7]], dtype=np.uint8)
    header = "x:4 y:3 z:1 org_x:-100.0 org_y:-120.0 inc_x:0.7 inc_y:0.7 epais:3.0 type:BYTE\n*comment:made-by-test"
    path = tmp_path / "case.dcm.tag"
    path.write_bytes(_tag_bytes(header, tags))
    assert np.array_equal(read_tag(path), tags)
    assert np.array_equal(read_tag(path, shape=(3, 4)), tags)
    with pytest.raises(L3SegInputError, match="does not match the image 4x3"):
        read_tag(path, shape=(4, 3))


def test_tag_reader_without_size_uses_image_shape(tmp_path):
    tags = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    path = tmp_path / "nosize.tag"
    path.write_bytes(_tag_bytes("type:BYTE", tags))
    assert np.array_equal(read_tag(path, shape=(3, 4)), tags)
    with pytest.raises(L3SegInputError, match="no x:/y: size"):
        read_tag(path)


def test_tag_reader_errors(tmp_path):
    (tmp_path / "plain.tag").write_bytes(b"x:4 y:3 no form feed here")
    with pytest.raises(L3SegInputError, match="plain.tag: not a Slice-O-Matic tag file"):
        read_tag(tmp_path / "plain.tag")
    (tmp_path / "short.tag").write_bytes(_tag_bytes("x:4 y:3", np.zeros(5)))
    with pytest.raises(L3SegInputError, match="truncated tag file: 5 label bytes, expected 12"):
        read_tag(tmp_path / "short.tag")


def test_tag_follows_dicom_stored_pixel_order(tmp_path):
    hu, mask = body_phantom(32, 40)
    mask = mask.copy()
    mask[2, 3] = 1  # asymmetric marker
    stored_hu, stored_mask = hu[:, ::-1], mask[:, ::-1]
    img = read_dicom(write_dicom(tmp_path / "m.dcm", stored_hu, orientation=(-1, 0, 0, 0, 1, 0)))
    tag = tmp_path / "m.dcm.tag"
    tag.write_bytes(_tag_bytes("x:40 y:32 z:1", stored_mask))
    canon = read_label_file(tag, img)[0]
    assert np.array_equal(canon, mask)


def test_combine_binary_masks():
    muscle = np.array([[1, 0, 0], [0, 0, 0]])
    sat = np.array([[0, 1, 0], [0, 0, 0]])
    vat = np.array([[0, 0, 1], [0, 1, 0]])
    assert combine_binary_masks({"muscle": muscle, "sat": sat, "vat": vat}).tolist() == [[1, 2, 3], [0, 3, 0]]
    with pytest.raises(L3SegInputError, match="torso.nii.gz: 1 voxels are also marked muscle"):
        combine_binary_masks({"muscle": muscle, "vat": muscle}, {"vat": "torso.nii.gz"})
    with pytest.raises(L3SegInputError, match="binary mask expected"):
        combine_binary_masks({"muscle": muscle * 3})


def test_select_vertebra_slices():
    vol = np.zeros((20, 4, 4), dtype=np.uint8)
    vol[5:12, 1, 1] = 29
    vol[12:18, 1, 1] = 30
    assert select_vertebra_slices(vol, 29) == (8, [8])
    assert select_vertebra_slices(vol, 29, margin=2) == (8, [6, 7, 8, 9, 10])
    assert select_vertebra_slices(vol, 30, margin=5)[1] == list(range(9, 20))
    with pytest.raises(L3SegInputError, match="label 31 .* does not occur"):
        select_vertebra_slices(vol, 31)
    vol[2, 0, 0] = 29
    with pytest.raises(L3SegInputError, match="non-contiguous"):
        select_vertebra_slices(vol, 29)
