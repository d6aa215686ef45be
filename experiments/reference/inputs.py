"""Hand inputs of one reference slice: the YAML file format, its checks and the method options.

One YAML file per slice, ``inputs/<patient>/<slice>.yaml``, merged over an optional
``inputs/<patient>/patient.yaml`` (the source and options shared by the patient's slices; the
slice file wins, key by key for ``source`` and ``options``).  Coordinates are (x = column,
y = row) of the radiological display image of the slice as read (image-left = patient right,
anterior at the top).  Every size option is in mm (mm² for areas); it is turned into pixels
with the slice's pixel size, so one file format serves 0.7, 0.98 and 3 mm pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from l3seg_lib.errors import L3SegInputError

POINT_KEYS = ("muscle_seeds", "organ_seeds", "vert_seeds")
LINE_KEYS = ("bridges", "cut_lines", "wall_lines")
POLY_KEYS = ("fascia_polys", "organ_polys", "cavity_polys", "canal_polys", "lumen_polys")
TOP_KEYS = {"patient", "level", "source", "options", "notes", "how_sure", *POINT_KEYS, *LINE_KEYS, *POLY_KEYS}
SOURCE_KEYS = {"kind", "path", "index", "series_uid", "expected_count", "z_mm", "labels"}
PATIENT_FILE = "patient.yaml"


@dataclass(frozen=True)
class Options:
    """Method options; sizes in mm (areas in mm²), HU thresholds in HU.

    Defaults are those of the ACRIN script (0.977 mm pixels: 3 px body erosion, disk(2) ring
    closing, disk(4) vertebra closing, Gaussian 0.7 px region smoothing)."""

    body_hu: float = -500.0  # body = largest component above this HU, holes filled
    inner_erosion_mm: float = 2.93  # body erosion for the watershed mask (drops the skin)
    smooth_sigma_mm: float = 0.684  # Gaussian of the region logic (mask M, bone); 0 = raw HU
    elevation_sigma_mm: float = 0.977  # Gaussian before the Sobel elevation of the watershed
    seed_radius_mm: float = 1.6  # hand seeds are disks of this radius (at least 1 px)
    vertebra_mode: str = "seeds"  # "seeds" (bone touching vert_seeds) or "labels" (label-map vertebra)
    vert_bone_hu_smoothed: float | None = 130.0  # bone = smoothed HU above this ...
    vert_bone_hu_raw: float = 200.0  # ... or raw HU above this
    vert_near_mm: float = 2.93  # bone pieces this close to the seeded vertebra join it (seeds mode)
    vert_min_piece_mm2: float = 9.5  # smallest such piece (seeds mode)
    vert_label_min_piece_mm2: float = 46.1  # labels mode: smallest bone piece overlapping the label
    vert_label_max_offset_mm: float = 64.4  # labels mode: bone piece centre within this of the body centre
    vert_close_mm: float = 3.7  # closing radius of the vertebra mask
    vert_dilate_mm: float = 1.0  # final vertebra dilation (at least 1 px)
    rib_hu: float = 150.0  # small bone pieces above this HU next to the muscle core close the ring
    rib_max_mm2: float = 173.0
    rib_near_mm: float = 2.93
    ring_close_mm: float = 2.0  # closing radius of the muscle ring
    cavity_min_mm2: float = 3460.0  # smaller cavity: warning "ring not closed"
    skin_rim_mm: float = 1.0  # outer body rim that is not SAT (at least 1 px)
    gas_rim_mm: float = 1.0  # rim around bowel gas (HU < -300) that is not VAT (at least 1 px)
    gas_hu: float = -300.0
    lumen_erosion_mm: float = 1.0  # label-map lumen eroded so that pericolic fat stays VAT
    # label-map ids (TotalSegmentator v2 numbering), used only when the source has labels
    vertebra_label_ids: tuple[int, ...] = tuple(range(25, 51))
    lumen_label_ids: tuple[int, ...] = ()  # e.g. (20,) colon: contents are not VAT
    bone_label_ids: tuple[int, ...] = ()  # label-map ribs / sternum / costal cartilage: never muscle, close the ring
    label_seeds: bool = False  # seeds from the label map (organs -> organ, muscles -> muscle)
    organ_label_ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 18, 19, 20, 21, 23, 24, 52, 63, 64, 65, 66, 67, 68)
    muscle_label_ids: tuple[int, ...] = (86, 87, 88, 89)
    label_seed_erosion_mm: float = 2.0  # label regions are eroded by this before seeding

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path) -> Options:
        """Options from a YAML mapping; unknown names are an error naming ``path``."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - set(names))
        if bad:
            raise L3SegInputError(path, f"unknown option(s) {bad}; known: {sorted(names)}")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k.endswith("_ids"):
                if not isinstance(v, (list, tuple)) or not all(isinstance(i, int) for i in v):
                    raise L3SegInputError(path, f"option {k} must be a list of integers, got {v!r}")
                v = tuple(v)
            elif k == "vertebra_mode":
                if v not in ("seeds", "labels"):
                    raise L3SegInputError(path, f"option vertebra_mode must be 'seeds' or 'labels', got {v!r}")
            elif k == "label_seeds":
                if not isinstance(v, bool):
                    raise L3SegInputError(path, f"option label_seeds must be true/false, got {v!r}")
            elif v is not None and not isinstance(v, (int, float)):
                raise L3SegInputError(path, f"option {k} must be a number, got {v!r}")
            elif v is None and k != "vert_bone_hu_smoothed":
                raise L3SegInputError(path, f"option {k} must be a number, got null")
            kw[k] = v
        return cls(**kw)


@dataclass(frozen=True)
class Source:
    """Where the slice comes from: a DICOM folder + sorted index (0 = most inferior) or a NIfTI
    volume + array index on its third axis; paths relative to the data root."""

    kind: str
    path: str
    index: int
    series_uid: str | None = None
    expected_count: int | None = None
    z_mm: float | None = None
    labels: str | None = None  # TotalSegmentator-style label map on the same grid (NIfTI only)


@dataclass(frozen=True)
class SliceInputs:
    """Everything the method needs for one slice besides the image."""

    patient: str
    name: str  # the YAML stem, e.g. "z051"
    level: str  # vertebral level, e.g. "L3"
    source: Source
    options: Options
    path: Path
    notes: str = ""
    muscle_seeds: list[tuple[int, int]] = field(default_factory=list)
    organ_seeds: list[tuple[int, int]] = field(default_factory=list)
    vert_seeds: list[tuple[int, int]] = field(default_factory=list)
    bridges: list[list[tuple[int, int]]] = field(default_factory=list)
    cut_lines: list[list[tuple[int, int]]] = field(default_factory=list)
    wall_lines: list[list[tuple[int, int]]] = field(default_factory=list)
    fascia_polys: list[list[tuple[int, int]]] = field(default_factory=list)
    organ_polys: list[list[tuple[int, int]]] = field(default_factory=list)
    cavity_polys: list[list[tuple[int, int]]] = field(default_factory=list)
    canal_polys: list[list[tuple[int, int]]] = field(default_factory=list)
    lumen_polys: list[list[tuple[int, int]]] = field(default_factory=list)

    @property
    def stem(self) -> str:
        """Output file stem ``<patient>_<level>_z<k>``."""
        return f"{self.patient}_{self.level}_z{self.source.index:03d}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise L3SegInputError(path, f"cannot read the hand-input file ({e.strerror})") from None
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise L3SegInputError(path, f"not valid YAML: {e}") from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise L3SegInputError(path, "the hand-input file must be a YAML mapping")
    return d


def _point(v: Any, path: Path, key: str) -> tuple[int, int]:
    if (
        not isinstance(v, (list, tuple))
        or len(v) != 2
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v)
    ):
        raise L3SegInputError(path, f"{key}: each point must be [x, y] (column, row), got {v!r}")
    return int(round(v[0])), int(round(v[1]))


def _points(v: Any, path: Path, key: str, min_len: int = 0) -> list[tuple[int, int]]:
    if not isinstance(v, list):
        raise L3SegInputError(path, f"{key}: must be a list of [x, y] points, got {type(v).__name__}")
    pts = [_point(p, path, key) for p in v]
    if len(pts) < min_len:
        raise L3SegInputError(path, f"{key}: needs at least {min_len} points, got {len(pts)}")
    return pts


def load_inputs(path: Path) -> SliceInputs:
    """Read and check one slice's YAML (merged over ``patient.yaml`` beside it)."""
    path = Path(path)
    d = _read_yaml(path)
    shared_path = path.parent / PATIENT_FILE
    shared = _read_yaml(shared_path) if shared_path.exists() and shared_path != path else {}
    for src, dd in ((shared_path, shared), (path, d)):
        bad = sorted(set(dd) - TOP_KEYS)
        if bad:
            raise L3SegInputError(src, f"unknown key(s) {bad}; known: {sorted(TOP_KEYS)}")
    merged = {**shared, **d}
    for k in ("source", "options"):
        a, b = shared.get(k) or {}, d.get(k) or {}
        if not isinstance(a, dict) or not isinstance(b, dict):
            raise L3SegInputError(path, f"{k} must be a mapping")
        merged[k] = {**a, **b}
    s = merged["source"]
    bad = sorted(set(s) - SOURCE_KEYS)
    if bad:
        raise L3SegInputError(path, f"source: unknown key(s) {bad}; known: {sorted(SOURCE_KEYS)}")
    for k in ("kind", "path", "index"):
        if k not in s:
            raise L3SegInputError(path, f"source: missing '{k}' (kind dicom|nifti, path relative to the data root, index)")
    if s["kind"] not in ("dicom", "nifti"):
        raise L3SegInputError(path, f"source.kind must be 'dicom' or 'nifti', got {s['kind']!r}")
    if not isinstance(s["index"], int) or s["index"] < 0:
        raise L3SegInputError(path, f"source.index must be a non-negative integer, got {s['index']!r}")
    if s.get("labels") and s["kind"] != "nifti":
        raise L3SegInputError(path, "source.labels is only supported for NIfTI sources")
    source = Source(**s)
    for k in ("patient", "level"):
        if not isinstance(merged.get(k), str) or not merged[k]:
            raise L3SegInputError(path, f"missing '{k}' (a short name)")
    kw: dict[str, Any] = {}
    for k in POINT_KEYS:
        kw[k] = _points(merged.get(k) or [], path, k)
    for k in LINE_KEYS:
        v = merged.get(k) or []
        if not isinstance(v, list):
            raise L3SegInputError(path, f"{k}: must be a list of polylines")
        kw[k] = [_points(line, path, k, 2) for line in v]
    for k in POLY_KEYS:
        v = merged.get(k) or []
        if not isinstance(v, list):
            raise L3SegInputError(path, f"{k}: must be a list of polygons")
        kw[k] = [_points(p, path, k, 3) for p in v]
    return SliceInputs(
        patient=merged["patient"],
        name=path.stem,
        level=merged["level"],
        source=source,
        options=Options.from_dict(merged["options"], path),
        path=path,
        notes=str(merged.get("notes") or ""),
        **kw,
    )


def check_in_image(inp: SliceInputs, shape: tuple[int, int]) -> None:
    """Every hand coordinate lies inside the display image of ``shape`` (rows, cols)."""
    h, w = shape
    for k in (*POINT_KEYS, *LINE_KEYS, *POLY_KEYS):
        v = getattr(inp, k)
        pts = v if k in POINT_KEYS else [p for item in v for p in item]
        for x, y in pts:
            if not (0 <= x < w and 0 <= y < h):
                raise L3SegInputError(inp.path, f"{k}: point ({x}, {y}) is outside the {w}x{h} display image")
