"""Where the network runs (CUDA when present, ``auto``, else the CPU) and how: CPU threads and
deterministic algorithms (see docs/reproducibility.md)."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA device is available")
    return torch.device(name)


def configure_threads(n: int) -> None:
    """Use ``n`` CPU threads for torch (0 keeps torch's default)."""
    if n > 0:
        torch.set_num_threads(n)


def configure_torch(num_threads: int, deterministic: bool) -> None:
    """Set torch up for a training stage: ``num_threads`` CPU threads (0 keeps torch's default; the
    count changes the order of float reductions, so a fixed count gives the same weights on any
    machine of the same CPU type) and, with ``deterministic``, torch's deterministic algorithms
    (``warn_only``: an operation without a deterministic GPU version warns instead of failing),
    deterministic cuDNN without benchmarking, and the cuBLAS workspace setting they need on a GPU.
    Called at the start of every training stage, in worker processes too (Dask workers start with
    ``OMP_NUM_THREADS=1``)."""
    configure_threads(num_threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
