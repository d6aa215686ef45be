"""One model description (:class:`ModelSpec`), written and read in one place, the same through
an exported ONNX file and a ``.pt`` checkpoint."""

from __future__ import annotations

import pytest
import torch

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.inference.model_file import ONNX_FORMAT, ModelSpec, OnnxModel
from l3seg_lib.tissues import CLASS_NAMES
from l3seg_lib.training.checkpoint import CHECKPOINT_FORMAT, checkpoint_spec, load_checkpoint
from l3seg_lib.training.export import add_metadata


def test_model_spec_round_trip_through_onnx_and_checkpoint(tiny_model, tmp_path):
    onnx_spec = OnnxModel(tiny_model, device="cpu").info
    ckpt = load_checkpoint(tiny_model.with_suffix(".pt"))
    pt_spec = checkpoint_spec(ckpt)
    assert isinstance(onnx_spec, ModelSpec) and onnx_spec == pt_spec
    assert onnx_spec.classes == CLASS_NAMES and onnx_spec.members == 2 and onnx_spec.image_size == 32
    assert len(onnx_spec.params_sha256) == 64 and {"model", "train", "training_data"} <= set(onnx_spec.extra)
    # to_metadata / from_metadata is the identity, for both formats
    for fmt in (ONNX_FORMAT, CHECKPOINT_FORMAT):
        assert ModelSpec.from_metadata(onnx_spec.to_metadata(fmt), None, fmt) == onnx_spec
    # the checkpoint's keys stay what fine-tuning reads
    assert ckpt["model"] == onnx_spec.extra["model"] and ckpt["image_size"] == 32 and len(ckpt["state_dicts"]) == 2

    # add_metadata goes through the spec: extras and fields updated, the file still valid
    copy = tmp_path / "m.onnx"
    copy.write_bytes(tiny_model.read_bytes())
    add_metadata(copy, label="relabelled", real_ct={"x": 1.5})
    spec = OnnxModel(copy, device="cpu").info
    assert spec.label == "relabelled" and spec.extra["real_ct"] == {"x": 1.5} and spec.window_hu == onnx_spec.window_hu


def test_model_spec_refuses_incomplete_metadata(tmp_path):
    good = ModelSpec((-200.0, 800.0), 32, True).to_metadata(CHECKPOINT_FORMAT)
    with pytest.raises(L3SegInputError, match="m.pt: l3seg metadata lacks window_hu"):
        ModelSpec.from_metadata({k: v for k, v in good.items() if k != "window_hu"}, tmp_path / "m.pt", CHECKPOINT_FORMAT)
    with pytest.raises(L3SegInputError, match="invalid window_hu"):
        ModelSpec.from_metadata({**good, "window_hu": [800, -200]}, None, CHECKPOINT_FORMAT)
    torch.save({**good, "state_dicts": []}, tmp_path / "empty.pt")
    with pytest.raises(L3SegInputError, match="empty.pt: l3seg model file lacks its networks"):
        load_checkpoint(tmp_path / "empty.pt")


def test_old_checkpoints_with_nested_info_still_read():
    meta = {**ModelSpec((-200.0, 800.0), 32, True).to_metadata(CHECKPOINT_FORMAT), "info": {"training_data": "x"}}
    assert ModelSpec.from_metadata(meta, None, CHECKPOINT_FORMAT).extra["training_data"] == "x"
