"""What ``l3seg measure`` finds in a folder, and the reference masks that go with each input.

* a ``manifest.csv`` (read by :func:`l3seg_lib.data.manifest.read_manifest`) lists inputs
  explicitly; else
* each sub-folder holding DICOM files is one series, each DICOM file directly in the folder is
  one slice, and each NIfTI file is one volume. PNG needs the manifest (no geometry in PNG).
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import yaml

from l3seg_lib.data.manifest import MANIFEST_NAME, ManifestEntry, manifest_entries
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.names import input_stem

REFERENCE_SUFFIXES = (".nii.gz", ".nii", ".png", ".dcm.tag", ".tag")
_NOT_IMAGES = (".csv", ".txt", ".md", ".json", ".yaml", ".yml", ".tag")


def _is_dicom(path: Path) -> bool:
    try:
        return path.suffix.lower() in (".dcm", ".ima") or pydicom.misc.is_dicom(path)
    except OSError:
        return False


def discover_inputs(folder: str | Path) -> list[ManifestEntry]:
    """The inputs in ``folder`` (see the module docstring for the rules)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise L3SegInputError(folder, "folder not found")
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        return manifest_entries(manifest)
    inputs: list[ManifestEntry] = []
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if path.is_dir():
            if any(_is_dicom(p) for p in path.iterdir() if p.is_file()):
                inputs.append(ManifestEntry(path))
        elif name.endswith((".nii", ".nii.gz", ".png")):  # PNG fails with a clear message: it needs spacing
            inputs.append(ManifestEntry(path))
        elif not name.endswith(_NOT_IMAGES) and _is_dicom(path):
            inputs.append(ManifestEntry(path))
    return inputs


def find_reference(reference_dir: Path, image: Path, volume: CTVolume) -> Path | None:
    """Reference mask for an input: same name (or patient ID) with a mask suffix."""
    for stem in dict.fromkeys([image.name, input_stem(image), volume.patient_id]):
        for suffix in REFERENCE_SUFFIXES:
            cand = reference_dir / f"{stem}{suffix}"
            if cand.is_file() and cand != image:
                return cand
    return None


def load_label_map(path: str | Path | None) -> dict[str, list[int]] | None:
    """A label map (class name -> source values) from a YAML or JSON file."""
    if path is None:
        return None
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict) or set(data) != {"background", "muscle", "sat", "vat"}:
        raise L3SegInputError(path, "label map needs exactly the keys background, muscle, sat, vat")
    return {k: [int(v) for v in vals] for k, vals in data.items()}
