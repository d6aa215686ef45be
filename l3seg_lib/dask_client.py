"""A Dask client for a run: a LocalCluster on this machine, or an existing cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def dask_client(workers: int, scheduler: str | None = None, processes: bool = True) -> Iterator[Any]:
    """A ``dask.distributed.Client`` on the cluster at ``scheduler`` (``tcp://host:8786``) or on a
    LocalCluster of ``workers`` single-threaded workers (processes, or threads when ``processes``
    is false); client and cluster are closed on leaving."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None)
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
