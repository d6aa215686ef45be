"""Reproducibility (docs/reproducibility.md): the quick pipeline, run twice in fresh run folders
(the shared quick run of ``tests/conftest.py`` and a second run of notebooks 01-04), gives exactly the
same numbers; with another ``num_threads`` the trained weights differ, which is
why the thread count is a fixed setting and not the machine's core count."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from l3seg_lib.config import load_params
from l3seg_lib.pipeline.runner import run_pipeline

from conftest import QUICK, QUICK_OVERRIDES, REPO  # the shared quick run's settings

TIMING = ("seconds", "inference_s")


def _run(run_dir: Path) -> Path:
    """The quick run's notebooks 01-04 again in ``run_dir``, no reports."""
    run_pipeline(QUICK, QUICK_OVERRIDES, run_dir=run_dir, reports_dir=None, notebooks_dir=REPO / "notebooks",
                 only=["01_preprocess", "02_train", "03_optimize", "04_evaluate"], log=lambda *_: None, stream=False)
    return run_dir


def _table(path: Path) -> pd.DataFrame:
    """A CSV of a run without its timing columns."""
    df = pd.read_csv(path)
    return df.drop(columns=[c for c in df.columns if c in TIMING])


def _weights(model_pt: Path) -> list:
    """The fold networks' weights of a checkpoint, as arrays."""
    import torch

    ckpt = torch.load(model_pt, map_location="cpu", weights_only=True)
    return [v.numpy() for state in ckpt["state_dicts"] for v in state.values()]


@pytest.mark.slow
def test_quick_pipeline_twice_gives_identical_numbers(quick_run, tmp_path):
    a, b = quick_run.dir, _run(tmp_path / "b")
    trials = [[(r["trial"], r["params"], r["target"]) for r in map(json.loads, (d / "optimize" / "trials.jsonl")
                                                                   .read_text().splitlines())] for d in (a, b)]
    assert len(trials[0]) == load_params(QUICK).optimize.n_trials and trials[0] == trials[1]
    for name in ("optimize/comparison.csv", "evaluate/per_slice.csv", "train/cv_slices.csv",
                 "optimize/test_optimised.csv"):
        pd.testing.assert_frame_equal(_table(a / name), _table(b / name), check_exact=True, obj=name)
    assert json.loads((a / "evaluate" / "summary.json").read_text())["mean_fg_dice"] == \
        json.loads((b / "evaluate" / "summary.json").read_text())["mean_fg_dice"]
    wa, wb = _weights(a / "train" / "model.pt"), _weights(b / "train" / "model.pt")
    assert all((x == y).all() for x, y in zip(wa, wb, strict=True))
    assert (a / "train" / "model.onnx").read_bytes() == (b / "train" / "model.onnx").read_bytes()

    # 02_train's cross-validation again, in this process: with 2 threads the same weights, with 1 thread
    # (float reductions in another order) other weights
    from l3seg_lib.preprocessing.processed import read_processed_manifest
    from l3seg_lib.training.compare import baseline_setting
    from l3seg_lib.training.crossval import cross_validate

    manifest = read_processed_manifest(a / "processed")
    split = pd.read_csv(a / "processed" / "split.csv", dtype={"patient_id": str})
    params = baseline_setting(manifest, split, load_params(a / "params.yaml"))
    for threads, same in ((1, False), (2, True)):
        params.num_threads = threads
        states = cross_validate(a / "processed", manifest, split, params, progress=False).states
        again = [v.numpy() for state in states for v in state.values()]
        assert all((x == y).all() for x, y in zip(wa, again, strict=True)) is same, f"{threads} thread(s)"
