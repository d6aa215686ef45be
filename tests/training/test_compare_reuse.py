"""The comparison reuses the cross-validation's baseline model only when it was trained exactly as
the comparison's first baseline seed (issue 24: the fold models trained once)."""

from __future__ import annotations

import copy

from conftest import tiny_params

from l3seg_lib.preprocessing.processed import read_processed_manifest
from l3seg_lib.training.compare import baseline_setting, comparison_setting, equal_steps_per_epoch, reusable_model
from l3seg_lib.training.crossval import cross_validate
from l3seg_lib.training.splits import make_splits


def test_baseline_setting_is_the_comparisons_first_baseline_seed(tiny_processed):
    man = read_processed_manifest(tiny_processed / "proc")
    p = tiny_params()
    split = make_splits(man, p.split, p.seed)
    b = baseline_setting(man, split, p)
    assert b.seed == p.seed and b.train.steps_per_epoch == equal_steps_per_epoch(man, split, p)
    assert b == comparison_setting(p, p.seed, equal_steps_per_epoch(man, split, p))
    assert p.train.steps_per_epoch is None  # the params themselves untouched


def test_reusable_model_only_for_the_same_setting(tiny_processed, tmp_path):
    proc = tiny_processed / "proc"
    man = read_processed_manifest(proc)
    p = tiny_params(epochs=1)
    split = make_splits(man, p.split, p.seed)
    b = baseline_setting(man, split, p)
    cross_validate(proc, man, split, b, out_dir=tmp_path / "train", progress=False)
    assert reusable_model(tmp_path / "train", b) == tmp_path / "train" / "model.onnx"
    other_seed = comparison_setting(p, p.seed + 1, b.train.steps_per_epoch)
    assert reusable_model(tmp_path / "train", other_seed) is None
    other_weights = copy.deepcopy(b)
    other_weights.train.class_weights = (1.0, 2.0, 1.0, 1.0)
    assert reusable_model(tmp_path / "train", other_weights) is None
    assert reusable_model(None, b) is None and reusable_model(tmp_path / "nowhere", b) is None
