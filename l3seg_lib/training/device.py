"""Where the network runs: CUDA when present (``auto``), else the CPU."""

from __future__ import annotations

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
