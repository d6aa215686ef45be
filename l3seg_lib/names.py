"""File-name helpers shared by the writers of outputs."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png")


def safe_name(name: str) -> str:
    """``name`` with every character other than letters, digits and ``._-`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def input_stem(path: str | Path) -> str:
    """The name of an input without its image suffix (``ct.nii.gz`` -> ``ct``)."""
    name = Path(path).name
    for ext in IMAGE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
