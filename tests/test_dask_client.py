"""The Dask client: GPU discovery and one GPU per local worker process (checked on CPU machines
through the environment each worker process sees)."""

from __future__ import annotations

import os

import pytest

from l3seg_lib.dask_client import dask_client, gpu_for_worker, visible_gpus


@pytest.mark.parametrize("env, expected", [("0,1", ["0", "1"]), ("2", ["2"]), ("", []), ("-1", []),
                                           ("1,-1,2", ["1"]), ("GPU-8c1f2d, MIG-aa", ["GPU-8c1f2d", "MIG-aa"])])
def test_visible_gpus_follow_cuda_visible_devices(monkeypatch, env, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert visible_gpus() == expected


def test_visible_gpus_without_driver_is_empty(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    from distributed.diagnostics import nvml

    monkeypatch.setattr(nvml, "device_get_count", lambda: 0)
    assert visible_gpus() == []
    monkeypatch.setattr(nvml, "device_get_count", lambda: 3)
    assert visible_gpus() == ["0", "1", "2"]


def test_gpus_are_shared_round_robin_when_workers_outnumber_them():
    assert [gpu_for_worker(i, ["0", "1"]) for i in range(5)] == ["0", "1", "0", "1", "0"]


def _cuda_visible_devices():
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_each_local_worker_process_sees_one_gpu():
    with dask_client(2, gpus=["0", "1"]) as client:
        seen = client.run(_cuda_visible_devices)
    assert sorted(seen.values()) == ["0", "1"]


def test_no_gpus_leaves_workers_unpinned(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with dask_client(2, gpus=[]) as client:
        seen = client.run(_cuda_visible_devices)
    assert len(seen) == 2 and set(seen.values()) == {None}


def test_a_trial_on_a_pinned_worker_names_its_gpu(monkeypatch):
    from l3seg_lib.config import Params
    from l3seg_lib.training.optimize import _evaluate

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    result, seconds = _evaluate(lambda params, point: {"target": 0.5}, Params(), {})
    assert result == {"target": 0.5, "gpu": "3"} and seconds >= 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _evaluate(lambda params, point: {"target": 0.5}, Params(), {})[0] == {"target": 0.5}
