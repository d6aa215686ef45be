"""A Dask client for a run: a LocalCluster on this machine, or an existing cluster.

On a machine with NVIDIA GPUs each local worker process is given one GPU
(``CUDA_VISIBLE_DEVICES`` set before it starts, as dask-cuda does), so torch's ``cuda`` and
onnxruntime's CUDA provider in that worker use that GPU only. With more workers than GPUs the
GPUs are shared round-robin. An existing cluster (``scheduler``) places its own workers: start one
worker per GPU there (``CUDA_VISIBLE_DEVICES=<i> dask worker <address> --nthreads 1``, or
dask-cuda's ``dask cuda worker <address>``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: that variable's
    entries when it is set (empty or ``-1``: none), else every GPU the NVIDIA driver reports (NVML,
    through nvidia-ml-py); ``[]`` on a machine without GPUs or driver."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for item in (s.strip() for s in env.split(",")):
            if not item or item.startswith("-"):
                break  # CUDA ignores a device and everything after an invalid entry
            ids.append(item)
        return ids
    from distributed.diagnostics import nvml

    return [str(i) for i in range(nvml.device_get_count())]


def gpu_for_worker(index: int, gpus: Sequence[str]) -> str:
    """The GPU of local worker ``index`` (0-based): round-robin over ``gpus``."""
    return gpus[index % len(gpus)]


def _gpu_cluster(workers: int, gpus: Sequence[str]) -> Any:
    """A LocalCluster of single-threaded worker processes, worker ``i`` seeing only GPU
    ``gpu_for_worker(i, gpus)``."""
    from distributed import LocalCluster

    class GPULocalCluster(LocalCluster):
        """LocalCluster whose worker ``i`` sees only GPU ``gpu_for_worker(i, gpus)`` (CUDA_VISIBLE_DEVICES)."""
        def new_worker_spec(self) -> dict[str, Any]:
            """The base worker spec with CUDA_VISIBLE_DEVICES set to the worker's GPU."""
            (name, spec), = super().new_worker_spec().items()
            spec = {**spec, "options": {**spec["options"],
                                        "env": {"CUDA_VISIBLE_DEVICES": gpu_for_worker(int(name), gpus)}}}
            return {name: spec}

    cluster = GPULocalCluster(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=None)
    cluster.scale(workers)
    return cluster


@contextmanager
def dask_client(workers: int, scheduler: str | None = None, processes: bool = True,
                gpus: Sequence[str] | None = None) -> Iterator[Any]:
    """A ``dask.distributed.Client`` on the cluster at ``scheduler`` (``tcp://host:8786``) or on a
    LocalCluster of ``workers`` single-threaded workers (processes, or threads when ``processes``
    is false). Local worker processes get one GPU each from ``gpus`` (default: :func:`visible_gpus`).
    Client and cluster are closed on leaving."""
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        gpus = visible_gpus() if gpus is None else list(gpus)
        if processes and gpus:
            cluster = _gpu_cluster(workers, gpus)
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                   dashboard_address=None)
        client = Client(cluster)
        client.wait_for_workers(workers)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
