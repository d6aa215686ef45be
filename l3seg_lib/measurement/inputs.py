"""What ``l3seg measure`` finds in a folder, and the reference masks that go with each input.

* a ``manifest.csv`` (read by :func:`l3seg_lib.data.manifest.read_manifest`) lists inputs
  explicitly; else
* each sub-folder holding DICOM files is one series; the DICOM files directly in the folder are
  grouped into series the way a series folder is (:func:`l3seg_lib.imageio.dicom.group_series`:
  by SeriesInstanceUID, or without one by frame of reference and geometry): a series of several
  files is one input (:class:`SeriesEntry`; named by the folder when the folder holds one such
  series, else ``<folder>/series_<key>``), and every other file is one slice (alone in its
  series; without SeriesInstanceUID and FrameOfReferenceUID, so nothing says what it belongs to;
  or not an axial CT image, refused with the reason when read); each NIfTI file is one volume.
  PNG needs the manifest (no geometry in PNG).

``measure`` also takes one file: an image file is that one input, a ``manifest.csv`` its rows.
:func:`discover` also says what it left out of the folder, and why (sub-folders without DICOM
files, such as a folder of NIfTI masks; files that are no image; hidden files such as
``.DS_Store``; files that cannot be read), for ``skipped.csv``.

:func:`read_entry` reads one input the way ``measure`` and ``remeasure`` both read it;
:func:`entry_for_source` finds again, for ``remeasure``, how a measured input was listed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pydicom
import yaml

from l3seg_lib.data.manifest import MANIFEST_NAME, ManifestEntry, manifest_entries
from l3seg_lib.errors import L3SegError, L3SegInputError
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.imageio.dicom import SPLIT_NOTE, group_series, read_dicom_files
from l3seg_lib.imageio.reader import read_image
from l3seg_lib.names import input_stem
from l3seg_lib.tissues import CLASS_NAMES

REFERENCE_SUFFIXES = (".nii.gz", ".nii", ".png", ".dcm.tag", ".tag")
_NOT_IMAGES = (".csv", ".txt", ".md", ".json", ".yaml", ".yml", ".tag")


def _is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (``.dcm``/``.ima`` suffix or the DICOM preamble); False when unreadable."""
    try:
        return path.suffix.lower() in (".dcm", ".ima") or pydicom.misc.is_dicom(path)
    except OSError:
        return False


@dataclass
class SeriesEntry(ManifestEntry):
    """A series of DICOM files lying directly in the measured folder (read with
    :func:`l3seg_lib.imageio.dicom.read_dicom_files`); ``image`` names it (it may not exist as such)."""

    files: tuple[Path, ...] = ()
    series_uid: str = ""
    notes: tuple[str, ...] = ()
    """Series notes the files carry from discovery (why they were split from others that share
    their SeriesInstanceUID: :func:`l3seg_lib.imageio.dicom.split_by_patient`)."""


def discover_inputs(folder: str | Path) -> list[ManifestEntry]:
    """The inputs in ``folder`` (see the module docstring for the rules); ``folder`` may also be
    one file: a ``manifest.csv`` (its rows) or an image file (that one input)."""
    return discover(folder)[0]


def discover(folder: str | Path) -> tuple[list[ManifestEntry], list[tuple[str, str]]]:
    """:func:`discover_inputs` and what it left out of ``folder``: (file or sub-folder name, why)
    for each entry that is not an input (for ``skipped.csv``; files left out inside a series are
    listed when the series is read)."""
    folder = Path(folder)
    if folder.is_file():
        if folder.name == MANIFEST_NAME:
            return manifest_entries(folder), []
        return [ManifestEntry(folder)], []
    if not folder.exists():
        raise L3SegInputError(folder, "file or folder not found")
    if not folder.is_dir():
        raise L3SegInputError(folder, "neither a file nor a folder")
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        return manifest_entries(manifest), []
    found: list[tuple[Path, ManifestEntry]] = []  # (where it sorts, input)
    loose: list[Path] = []
    left_out: list[tuple[str, str]] = []
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if name.startswith(".") and not _hidden_dicom(path):  # .DS_Store, ._IM0001.dcm (macOS), .git/
            left_out.append((path.name + ("/" if path.is_dir() else ""),
                             "hidden " + ("folder" if path.is_dir() else "file, not DICOM") + " (name starts with .)"))
        elif path.is_dir():
            try:
                files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
            except OSError as exc:
                left_out.append((path.name + "/", f"sub-folder cannot be read: {exc.strerror or exc}"))
                continue
            if any(_is_dicom(p) for p in files):
                found.append((path, ManifestEntry(path)))
            else:
                left_out.append((path.name + "/", _why_folder_left_out(files)))
        elif not path.is_file():
            left_out.append((path.name, "not a regular file (a broken link, a device or a pipe)"))
        elif (unreadable := _unreadable(path)) is not None:
            left_out.append((path.name, f"cannot be read: {unreadable}"))
        elif name.endswith((".nii", ".nii.gz", ".png")):  # PNG fails with a clear message: it needs spacing
            found.append((path, ManifestEntry(path)))
        elif name.endswith(_NOT_IMAGES):
            left_out.append((path.name, f"not an image ({path.suffix.lower()} file)"))
        elif _is_dicom(path):
            loose.append(path)
        else:
            left_out.append((path.name, "not a DICOM, NIfTI or PNG file"))
    found += _loose_dicom_inputs(folder, loose)
    return [entry for _, entry in sorted(found, key=lambda item: item[0])], left_out


def _hidden_dicom(path: Path) -> bool:
    """Whether a hidden file is a DICOM file by its content (the ``DICM`` preamble; a macOS
    ``._IM0001.dcm`` companion file is not, whatever its suffix)."""
    try:
        return path.is_file() and pydicom.misc.is_dicom(path)
    except OSError:
        return False


def _unreadable(path: Path) -> str | None:
    """Why the file ``path`` cannot be opened for reading (no permission, ...), or None when it can."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _why_folder_left_out(files: list[Path]) -> str:
    """Why a sub-folder without DICOM files is not measured."""
    images = [p.name for p in files if p.name.lower().endswith((".nii", ".nii.gz", ".png"))]
    if images:
        return (f"a sub-folder of {len(images)} NIfTI/PNG file(s), e.g. {images[0]}: only DICOM series are read from "
                "sub-folders (reference masks go in --reference-dir; to measure these images, give this folder itself)")
    return "no DICOM files in this sub-folder" if files else "empty sub-folder"


def _loose_dicom_inputs(folder: Path, files: list[Path]) -> list[tuple[Path, ManifestEntry]]:
    """The DICOM files lying directly in ``folder``: one input per series of several files, one
    per other file (a slice alone in its series, or a file that is refused when read). Files that
    share a SeriesInstanceUID but not the patient or study are split
    (:func:`~l3seg_lib.imageio.dicom.split_by_patient`); each part, even a single file, carries the
    note that says so."""
    if not files:
        return []
    candidates, _ = group_series(files)
    keyed = [c for c in candidates if c.uid.split("~")[0] and "/" not in c.uid]  # has a key; not enhanced
    series = [c for c in keyed if len(c.files) > 1]
    split = {c.files[0][0]: c for c in keyed if len(c.files) == 1 and c.note}
    grouped = {p for c in series for p, _ in c.files}
    inputs: list[tuple[Path, ManifestEntry]] = []
    for p in files:
        if p in split:  # a single file split from others sharing its SeriesInstanceUID: named by the file
            inputs.append((p, SeriesEntry(p, files=(p,), series_uid=split[p].uid, notes=(split[p].note,))))
        elif p not in grouped:
            inputs.append((p, ManifestEntry(p)))
    for c in series:
        paths = tuple(sorted(p for p, _ in c.files))
        image = folder if len(series) == 1 else folder / f"series_{c.uid}"
        inputs.append((paths[0], SeriesEntry(image, files=paths, series_uid=c.uid, notes=(c.note,) if c.note else ())))
    return inputs


def split_series(series_notes: list[str] | None) -> list[str]:
    """Review reasons for a series split from others sharing its SeriesInstanceUID (its note from
    :func:`l3seg_lib.imageio.dicom.split_by_patient`): which patient's files these are is known only
    from PatientID and StudyInstanceUID."""
    return [f"series split: {n}" for n in series_notes or [] if n.startswith(SPLIT_NOTE)]


def read_entry(entry: ManifestEntry, check_hu: bool = True) -> CTVolume:
    """The CT of one input: a series lying loose in a folder from its files; a PNG with the pixel
    spacing (mm) and export window (HU) of its manifest row (its HU are not checked: they come
    from that window); anything else with :func:`l3seg_lib.imageio.reader.read_image`."""
    if isinstance(entry, SeriesEntry):
        return read_dicom_files(list(entry.files), entry.image, check_hu=check_hu, notes=entry.notes)
    return read_image(entry.image, check_hu=check_hu and not entry.is_png, **entry.png_kwargs())


@lru_cache(maxsize=16)
def _listed(manifest: str, mtime_ns: int) -> dict[str, ManifestEntry]:
    """The entries of a manifest by resolved image path (cached per file version)."""
    return {str(e.image.resolve()): e for e in manifest_entries(manifest)}


def entry_for_source(source: str | Path) -> ManifestEntry:
    """How ``measure`` listed the input ``source`` (the ``source`` column of ``measurements.csv``):
    for a PNG, the row of the ``manifest.csv`` that lists it, searched in the PNG's folder and the
    folders above (it carries the spacing and window the PNG was read with); else a plain entry.
    A PNG that no manifest lists gets a plain entry, which :func:`read_entry` refuses with the reason."""
    path = Path(source)
    entry = ManifestEntry(path)
    if not entry.is_png:
        return entry
    target = str(path.resolve())
    for folder in path.resolve().parents:
        manifest = folder / MANIFEST_NAME
        if manifest.is_file():
            try:
                found = _listed(str(manifest), manifest.stat().st_mtime_ns).get(target)
            except (L3SegError, OSError):
                continue
            if found is not None:
                return found
    return entry


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
    if not isinstance(data, dict) or set(data) != set(CLASS_NAMES):
        raise L3SegInputError(path, f"label map needs exactly the keys {', '.join(CLASS_NAMES)}")
    return {k: [int(v) for v in vals] for k, vals in data.items()}
