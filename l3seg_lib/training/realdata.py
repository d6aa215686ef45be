"""Real CT slices for training, with what the scans give without hand work, grouped by patient.

Per pixel a *set of allowed classes* (a uint8 bit code, bit c = class c; see
:func:`~l3seg_lib.training.losses.partial_label_loss`), built from

- careful references (tissue pixels, classes 0-3: the ``*_ct.nii.gz`` / ``*_ref.nii.gz`` pairs);
- whole-compartment labels made by another model (TotalSegmentator tissue masks);
- TotalSegmentator-style label maps (organs, bowel, vessels, bone -> not muscle nor fat;
  psoas, back and gluteal muscles -> muscle where the HU is muscle's);
- HU alone on unlabelled pixels: inside the body fat HU (-190..-30) can be SAT, VAT or background,
  muscle HU (-29..150) muscle or background, anything else background; outside the body background.

The rules (:func:`allowed_codes`): let E(h) = {background} + every class whose HU range excludes h
(the predictions that the HU refinement turns into background at that pixel) and H(h) the HU rule
above. A pixel labelled t (reference or compartment) allows {t} when h lies in t's range, else E(h);
an unlabelled pixel, or one a label map calls an organ, allows H(h) (organ: H(h) minus muscle);
everything is intersected with H(h). So no rule asks for a distinction the HU-refined scores cannot
see, and none contradicts a reference.

A patient is a :class:`RealPatient` (its files relative to a data folder) with its reference pairs
(:class:`RefPair`); which patients and references a study uses is the research harness's
(``l3seg_lab/patients.py``: the shared data folder's patients, references found by file name).
:func:`lopo_folds` gives the leave-one-patient-out splits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.evaluation.scoring import HU_RANGES
from l3seg_lib.imageio.dicom import read_dicom_series
from l3seg_lib.imageio.labels import combine_binary_masks, read_mask_for
from l3seg_lib.imageio.nifti import read_nifti
from l3seg_lib.preprocessing.geometry import body_mask, fill_holes, image_to_model, make_geometry, mask_to_model
from l3seg_lib.tissues import TISSUES

MUSCLE_HU = HU_RANGES["muscle"]
FAT_HU = (min(HU_RANGES["sat"][0], HU_RANGES["vat"][0]), max(HU_RANGES["sat"][1], HU_RANGES["vat"][1]))
ALL_CODE = 0b1111

TS_MUSCLE_IDS = tuple(range(80, 90))
"""TotalSegmentator v2 ids of skeletal muscles: gluteus maximus/medius/minimus (80-85), autochthon
(86, 87), iliopsoas (88, 89)."""
TS_LUMBAR_IDS = {"T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27}
"""TotalSegmentator v2 ids of the vertebrae T12-L5."""
DEFAULT_LEVELS = ("L2", "L3", "L4")
"""Vertebral levels whose slices train (L3 and its neighbours; references are used at any level)."""


# --------------------------------------------------------------------------------------------
# allowed classes per pixel


def hu_codes(hu: np.ndarray, body: np.ndarray | None) -> np.ndarray:
    """The HU rule H(h) as bit codes: in the body fat HU -> {0, SAT, VAT}, muscle HU -> {0, muscle},
    else {0}; outside ``body`` (bool, same shape; None = everywhere body) {0}."""
    out = np.ones(hu.shape, np.uint8)
    fat = (hu >= FAT_HU[0]) & (hu < MUSCLE_HU[0])
    mus = (hu >= MUSCLE_HU[0]) & (hu <= MUSCLE_HU[1])
    out[fat] = 0b1101
    out[mus] = 0b0011
    if body is not None:
        out[~body] = 1
    return out


def refine_equivalent_codes(hu: np.ndarray) -> np.ndarray:
    """E(h) as bit codes: background plus each class whose HU range excludes ``hu`` (HU)."""
    out = np.ones(hu.shape, np.uint8)
    for c, t in enumerate(TISSUES, start=1):
        lo, hi = HU_RANGES[t]
        out[~((hu >= lo) & (hu <= hi))] |= np.uint8(1 << c)
    return out


def allowed_codes(hu: np.ndarray, labels: np.ndarray | None = None, labelled: np.ndarray | None = None,
                  not_muscle: np.ndarray | None = None, body: np.ndarray | None = None) -> np.ndarray:
    """Bit codes of the allowed classes per pixel of one slice (see the module doc).

    ``labels`` (classes 0-3) hold where ``labelled`` (bool; default everywhere when ``labels`` is
    given) is true; ``not_muscle`` (bool) marks label-map organs, bowel, vessels and bone; ``body``
    (bool) the body (default :func:`body_mask` with holes filled)."""
    hu = np.asarray(hu, dtype=np.float32)
    if body is None:
        b = body_mask(hu)
        body = fill_holes(b) if b is not None else np.zeros(hu.shape, bool)
    codes = hu_codes(hu, body)
    if not_muscle is not None:
        codes[not_muscle] &= np.uint8(0b1101)
    if labels is not None:
        labels = np.asarray(labels).astype(np.uint8)
        if labels.shape != hu.shape:
            raise ValueError(f"labels {labels.shape} and image {hu.shape} differ in shape")
        lab = np.ones(hu.shape, bool) if labelled is None else labelled
        equiv = refine_equivalent_codes(hu)
        tgt = equiv.copy()
        for c, t in enumerate(TISSUES, start=1):
            lo, hi = HU_RANGES[t]
            inr = (labels == c) & (hu >= lo) & (hu <= hi)
            tgt[inr] = np.uint8(1 << c)
        codes = np.where(lab, codes & tgt, codes)
        codes[codes == 0] = 1  # cannot happen by construction; background as the safe fallback
    return codes.astype(np.uint8)


def label_map_masks(label_map: np.ndarray, muscle_ids: Sequence[int] = TS_MUSCLE_IDS,
                    spacing_mm: tuple[float, float] | None = None, erode_mm: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(muscle, not_muscle) bool masks of a TotalSegmentator-style map: muscle structures, and every
    other labelled structure (organs, bowel, vessels, bone, spinal cord), each eroded by ``erode_mm``
    (mm, with the (row, col) ``spacing_mm``): a model-made map's borders are uncertain, and bowel
    drawn over a thin wall muscle would teach exactly the wall-as-background error."""
    from scipy import ndimage

    muscle = np.isin(label_map, list(muscle_ids))
    other = (label_map > 0) & ~muscle
    if erode_mm > 0 and spacing_mm is not None:
        r = np.maximum(1, np.round(erode_mm / np.asarray(spacing_mm, float))).astype(int)
        yy, xx = np.ogrid[-r[0]: r[0] + 1, -r[1]: r[1] + 1]
        disk = (yy / r[0]) ** 2 + (xx / r[1]) ** 2 <= 1.0
        muscle = ndimage.binary_erosion(muscle, disk)
        other = ndimage.binary_erosion(other, disk)
    return muscle, other


# --------------------------------------------------------------------------------------------
# patients, references


@dataclass(frozen=True)
class RealPatient:
    """One real patient's unlabelled or partly labelled volume (paths relative to the data folder).

    ``volume`` is a NIfTI file or a DICOM folder; ``label_map`` a TotalSegmentator-style map of the same
    grid (None: none); ``vertebrae_csv`` a level reading (columns vertebra, first_slice, last_slice in
    volume indices, as ``acrin_example/l3_reference/vertebrae.csv``). Training slices are those of the
    wanted levels (:func:`patient_slices`' ``levels``): by the level reading, else where the label map
    shows a vertebra of those levels, else every slice. ``compartments``: an image file of some of the
    volume's slices (starting at volume index ``compartments_offset``) with binary masks per tissue
    made by another model (used on the slices of the wanted levels)."""

    name: str
    volume: str
    label_map: str | None = None
    vertebrae_csv: str | None = None
    compartments: tuple[str, Mapping[str, str]] | None = None
    compartments_offset: int = 0
    note: str = ""


@dataclass(frozen=True)
class RefPair:
    """A reference pair: CT and label files (classes 0-3), its patient, the volume slice index it names
    (None: none; such a slice is taken only as the reference), and the folder it was found under."""
    patient: str
    ct: Path
    ref: Path
    z: int | None
    folder: Path

    @property
    def stem(self) -> str:
        """File name without ``_ct.nii.gz``."""
        return self.ct.name[: -len("_ct.nii.gz")]


# --------------------------------------------------------------------------------------------
# training slices


@dataclass
class RealTrainSlices:
    """Real training slices at the model size: images (N, S, S) in [0, 1], allowed-class codes
    (N, S, S) uint8, and one row per slice in ``table`` (patient, kind, source, slice index)."""
    images: np.ndarray
    codes: np.ndarray
    table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def subset(self, mask: np.ndarray) -> RealTrainSlices:
        """The slices where ``mask`` (bool per slice) is true."""
        idx = np.flatnonzero(mask)
        return RealTrainSlices(self.images[idx], self.codes[idx], self.table.iloc[idx].reset_index(drop=True))

    def of_patients(self, patients: Iterable[str]) -> RealTrainSlices:
        """The slices of ``patients``."""
        return self.subset(self.table["patient"].isin(list(patients)).to_numpy())


@dataclass(frozen=True)
class ModelGrid:
    """How slices are put on the model grid (from the model file): size (px), window (HU), pixel (mm)."""
    image_size: int = 256
    window_hu: tuple[float, float] = (-200.0, 800.0)
    pixel_mm: float | None = 1.5
    pad_to_square: bool = True

    @classmethod
    def of_checkpoint(cls, ckpt: Mapping) -> ModelGrid:
        """The grid of a model file read by :func:`~l3seg_lib.training.checkpoint.load_checkpoint`."""
        return cls(int(ckpt["image_size"]), tuple(ckpt["window_hu"]), ckpt.get("pixel_mm"), bool(ckpt["pad_to_square"]))


def to_grid(hu: np.ndarray, codes: np.ndarray, spacing_mm: tuple[float, float], grid: ModelGrid
            ) -> tuple[np.ndarray, np.ndarray]:
    """One HU slice and its codes on the model grid (the geometry inference uses; codes nearest-neighbour)."""
    geom = make_geometry(hu.shape, spacing_mm, grid.image_size, grid.pad_to_square, grid.pixel_mm, hu)
    return image_to_model(hu, geom, grid.window_hu), mask_to_model(codes, geom)


def _read_volume(path: Path):
    """A real CT volume: a DICOM series folder or a NIfTI file."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: real volume not found")
    return read_dicom_series(path) if path.is_dir() else read_nifti(path)


def level_slices(patient: RealPatient, data_root: str | Path, n_slices: int, levels: Sequence[str],
                 label_map: np.ndarray | None = None) -> list[int]:
    """Volume indices of the vertebral ``levels`` of a patient: from its level reading
    (``vertebrae_csv``; each level's body and the disc below it), else from its label map (slices
    showing at least 20 pixels of such a vertebra), else every slice."""
    if patient.vertebrae_csv:
        path = Path(data_root) / patient.vertebrae_csv
        if not path.is_file():
            raise FileNotFoundError(f"{path}: level reading not found")
        table = pd.read_csv(path)
        if not {"vertebra", "first_slice", "last_slice"} <= set(table.columns):
            raise L3SegInputError(path, "needs columns vertebra, first_slice, last_slice")
        out: set[int] = set()
        for r in table[table["vertebra"].isin(list(levels))].itertuples(index=False):
            out.update(range(int(r.first_slice) - 1, int(r.last_slice) + 1))  # with the disc below
        return sorted(k for k in out if 0 <= k < n_slices)
    if label_map is not None:
        unknown = set(levels) - set(TS_LUMBAR_IDS)
        if unknown:
            raise ValueError(f"levels {sorted(unknown)} not known; known: {list(TS_LUMBAR_IDS)}")
        ids = [TS_LUMBAR_IDS[lv] for lv in levels]
        return [k for k in range(n_slices) if np.isin(label_map[k], ids).sum() >= 20]
    return list(range(n_slices))


def patient_slices(patient: RealPatient, data_root: str | Path, grid: ModelGrid,
                   references: Sequence[RefPair] = (), progress: bool = False, erode_mm: float = 3.0,
                   levels: Sequence[str] = DEFAULT_LEVELS) -> RealTrainSlices:
    """Training slices of one patient: each reference pair (kind ``reference``), each slice with
    model-made compartments (``compartments``; the label map is not used there), and each other slice
    of the vertebral ``levels`` (with the disc below each; :class:`RealPatient`) (``partial`` with a label map, its structures
    eroded by ``erode_mm``; ``unlabelled`` without). Volume slices that a reference names (``_z<k>``)
    are taken only as the reference."""

    root = Path(data_root)
    images, codes, rows = [], [], []

    def add(hu, cd, spacing, kind, source, z):
        img, c = to_grid(hu, cd, spacing, grid)
        images.append(img)
        codes.append(c)
        rows.append({"patient": patient.name, "kind": kind, "source": str(source), "z": z})

    ref_z = set()
    for p in references:
        vol = read_nifti(p.ct)
        lab = read_mask_for(p.ref, vol, "reference")
        bad = sorted(set(np.unique(lab).tolist()) - {0, 1, 2, 3})
        if bad:
            raise L3SegInputError(p.ref, f"reference values {bad[:10]} are not classes 0-3")
        for k in range(vol.n_slices):
            add(vol.hu[k], allowed_codes(vol.hu[k], lab[k]), tuple(vol.spacing_mm[1:]), "reference", p.ref.name, p.z)
        if p.z is not None:
            ref_z.add(p.z)
    volume = _read_volume(root / patient.volume)
    spacing = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
    lmap = read_mask_for(root / patient.label_map, volume, "label map") if patient.label_map else None
    wanted = set(level_slices(patient, root, volume.n_slices, levels, lmap))
    comp: dict[int, np.ndarray] = {}
    if patient.compartments is not None:
        image, masks = patient.compartments
        cvol = read_nifti(root / image)
        m = {k: read_mask_for(root / v, cvol, f"{k} mask") for k, v in masks.items()}
        labels = combine_binary_masks(m, {k: str(root / v) for k, v in masks.items()})
        for k in range(cvol.n_slices):
            if patient.compartments_offset + k in wanted:
                comp[patient.compartments_offset + k] = labels[k]
    todo = sorted(wanted - ref_z)
    for k in tqdm(todo, desc=f"real slices {patient.name}", unit="slice", disable=not progress, leave=False):
        hu = volume.hu[k]
        if k in comp:
            add(hu, allowed_codes(hu, comp[k]), spacing, "compartments", patient.compartments[0], k)
        elif lmap is not None:
            muscle, not_muscle = label_map_masks(lmap[k], spacing_mm=spacing, erode_mm=erode_mm)
            labels = np.where(muscle, 1, 0).astype(np.uint8)
            add(hu, allowed_codes(hu, labels, labelled=muscle, not_muscle=not_muscle), spacing, "partial",
                patient.label_map, k)
        else:
            add(hu, allowed_codes(hu), spacing, "unlabelled", patient.volume, k)
    s = grid.image_size
    return RealTrainSlices(np.stack(images).astype(np.float32) if images else np.zeros((0, s, s), np.float32),
                           np.stack(codes).astype(np.uint8) if codes else np.zeros((0, s, s), np.uint8),
                           pd.DataFrame(rows, columns=["patient", "kind", "source", "z"]))


def all_real_slices(patients: Sequence[RealPatient], data_root: str | Path, grid: ModelGrid,
                    references: Sequence[RefPair] = (), progress: bool = True, erode_mm: float = 3.0,
                    levels: Sequence[str] = DEFAULT_LEVELS) -> RealTrainSlices:
    """:func:`patient_slices` of every patient joined (references assigned by patient)."""
    parts = [patient_slices(p, data_root, grid, [r for r in references if r.patient == p.name], progress, erode_mm,
                            levels)
             for p in tqdm(patients, desc="real slices", unit="patient", disable=not progress)]
    if not parts:
        raise ValueError("no real patient")
    return RealTrainSlices(np.concatenate([p.images for p in parts]), np.concatenate([p.codes for p in parts]),
                           pd.concat([p.table for p in parts], ignore_index=True))


def sample_weights(table: pd.DataFrame, real_share: float = 0.5, reference_share: float = 0.5,
                   n_phantom: int = 0) -> np.ndarray:
    """Relative draw probabilities of ``n_phantom`` phantom slices followed by the real slices of ``table``.

    The real slices together get ``real_share`` of the draws (the phantom the rest), each patient an
    equal part of it, and within a patient its references ``reference_share`` (when it has both
    references and other slices), spread evenly."""
    if not 0 <= real_share <= 1 or not 0 <= reference_share <= 1:
        raise ValueError("real_share and reference_share are fractions in [0, 1]")
    w_real = np.zeros(len(table))
    patients = table["patient"].unique() if len(table) else []
    for pt in patients:
        sel = (table["patient"] == pt).to_numpy()
        is_ref = sel & (table["kind"] == "reference").to_numpy()
        other = sel & ~is_ref
        share_ref = reference_share if is_ref.any() and other.any() else float(is_ref.any())
        if is_ref.any():
            w_real[is_ref] = share_ref / is_ref.sum()
        if other.any():
            w_real[other] = (1 - share_ref) / other.sum()
    if len(patients):
        w_real = w_real / len(patients) * (real_share if n_phantom else 1.0)
    w_ph = np.full(n_phantom, ((1 - real_share) if len(patients) else 1.0) / max(n_phantom, 1))
    return np.concatenate([w_ph, w_real])


def lopo_folds(patients: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Leave one patient out: (held-out patient, training patients) for each patient."""
    ps = list(dict.fromkeys(patients))
    return [(p, [q for q in ps if q != p]) for p in ps]
