"""The default model's recipe (issue 26): several seeds joined into one ensemble, weights stored
in float16, and the CUDA-safe training loop's CPU result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from l3seg_lib.config import Params
from l3seg_lib.training.checkpoint import load_checkpoint, models_from_checkpoint, save_checkpoint
from l3seg_lib.training.export import export_onnx, store_weights_float16
from l3seg_lib.training.network import build_model


def _states(n: int, p: Params) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    states = []
    for _ in range(n):
        m = build_model(p.model)
        with torch.no_grad():  # non-trivial BN statistics, so a wrong cast would show
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.1, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
        states.append(m.state_dict())
    return states


def test_float16_weights_halve_the_file_and_keep_the_labels(tmp_path):
    p = Params()
    p.model.base_width = 4
    states = _states(2, p)
    f32 = export_onnx(states, p, 64, tmp_path / "f32.onnx")
    f16 = export_onnx(states, p, 64, tmp_path / "f16.onnx", weights_dtype="float16")
    onnx.checker.check_model(onnx.load(str(f16)))
    assert f16.stat().st_size < 0.6 * f32.stat().st_size
    x = np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32)
    a = ort.InferenceSession(str(f32), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    b = ort.InferenceSession(str(f16), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert b.dtype == np.float32 and b.shape == a.shape
    assert np.abs(a - b).max() < 5e-3
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.999
    with pytest.raises(ValueError, match="float32 or float16"):
        export_onnx(states, p, 64, tmp_path / "bad.onnx", weights_dtype="int8")


def test_store_weights_float16_leaves_small_and_non_float_tensors():
    from onnx import TensorProto, helper, numpy_helper

    big = numpy_helper.from_array(np.ones((4, 8), np.float32), "w")
    small = numpy_helper.from_array(np.ones(3, np.float32), "b")
    ints = numpy_helper.from_array(np.arange(20, dtype=np.int64), "i")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [big, small, ints])
    model = helper.make_model(graph)
    assert store_weights_float16(model) == 1
    kinds = {t.name: t.data_type for t in model.graph.initializer}
    assert kinds == {"w__fp16": TensorProto.FLOAT16, "b": TensorProto.FLOAT, "i": TensorProto.INT64}
    assert model.graph.node[0].op_type == "Cast" and model.graph.node[0].output[0] == "w"


def test_float16_checkpoint_loads_into_float32_networks(tmp_path):
    p = Params()
    p.model.base_width = 4
    states = _states(2, p)
    path = save_checkpoint(tmp_path / "m.pt", states, p, 64, weights_dtype="float16")
    ckpt = load_checkpoint(path)
    assert all(v.dtype == torch.float16 for v in ckpt["state_dicts"][0].values() if v.is_floating_point())
    nets = models_from_checkpoint(ckpt, torch.device("cpu"))
    assert len(nets) == 2 and all(prm.dtype == torch.float32 for prm in nets[0].parameters())
    ref = build_model(p.model)
    ref.load_state_dict(states[0])
    ref.eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(nets[0](x).softmax(1), ref(x).softmax(1), atol=5e-3)


@pytest.mark.slow
def test_train_default_model_joins_every_seed(tmp_path):
    from l3seg_lib.inference.model_file import OnnxModel
    from l3seg_lib.training.default_model import default_model_params, train_default_model

    p = default_model_params(members=2)
    p.data.phantom.n_patients, p.data.phantom.matrix = 12, 256
    p.preprocess.image_size, p.model.base_width = 64, 4
    p.train.epochs, p.train.steps_per_epoch = 1, 2
    res = train_default_model(tmp_path / "d", p, progress=False, seeds=(3, 5))
    assert sorted(res.runs) == [3, 5]
    assert (tmp_path / "d" / "train" / "seed_3" / "model.onnx").is_file()
    info = OnnxModel(res.model_path, "cpu").info
    assert info.members == 4  # 2 seeds x 2 folds
    assert info.extra["seeds"] == [3, 5] and info.extra["weights_dtype"] == "float16"
    ckpt = load_checkpoint(res.checkpoint_path)
    assert len(ckpt["state_dicts"]) == 4
    # the seeds differ: their first networks are not the same weights
    w = [s[next(iter(s))] for s in ckpt["state_dicts"]]
    assert not torch.equal(w[0], w[2])
    with pytest.raises(ValueError, match="at least one seed"):
        train_default_model(tmp_path / "e", p, progress=False, seeds=())


def test_shipped_models_by_name(tmp_path, monkeypatch):
    from l3seg_lib.errors import L3SegInputError
    from l3seg_lib.inference.model_file import OnnxModel
    from l3seg_lib.models import default_model_path, resolve_model, shipped_model_path

    assert resolve_model(None) == default_model_path() == resolve_model("default")
    fast = resolve_model("fast")
    assert fast == shipped_model_path("fast") and fast.is_file()
    info_default, info_fast = OnnxModel(default_model_path(), "cpu").info, OnnxModel(fast, "cpu").info
    assert (info_default.members, info_fast.members) == (8, 2)
    assert info_fast.label == "l3seg fast model" and info_fast.extra["weights_dtype"] == "float16"
    assert fast.stat().st_size < 3e6
    real = resolve_model("real")
    info_real = OnnxModel(real, "cpu").info
    assert real == shipped_model_path("real") and info_real.members == 4 and real.stat().st_size < 5e6
    assert info_real.extra["ship_candidate"] is True and info_real.extra["lopo_regressions"] == []
    assert "WiSE-FT" in info_real.extra["training_data"] and "CC BY 3.0" in info_real.extra["training_data"]
    with pytest.raises(L3SegInputError, match="shipped: default, fast, real"):
        shipped_model_path("huge")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").write_bytes(b"x")  # a file of that name in the working folder wins
    assert resolve_model("fast") == Path("fast")
    assert resolve_model("mine.onnx") == Path("mine.onnx")
