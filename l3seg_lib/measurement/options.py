"""How a batch is measured: :class:`MeasureOptions` (everything but the inputs, the model and the
output folder) and the names the measurement tables use for how a slice's level is known."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

from l3seg_lib.config import CUTOFF_SET_NAMES, DEVICES, CompositionConfig, LocalizeConfig
from l3seg_lib.errors import L3SegConfigError
from l3seg_lib.imageio.ct import DEFAULT_LIMITS, ReadLimits
from l3seg_lib.measurement.result import LevelSource

LEVEL_SOURCES = {LevelSource.LOCALISER: "L3 found by the localiser in the whole series or volume",
                 LevelSource.MANIFEST: "the slice named by the manifest's slice_index (vouched for by the user)",
                 LevelSource.AS_GIVEN: "a single slice, or every slice of a short input, measured as "
                                       "given: nothing checked that it lies at L3"}
"""Values of ``level_source`` in ``measurements.csv`` (:class:`~l3seg_lib.measurement.result.LevelSource`):
how the measured slice's vertebral level is known."""
NOT_CHECKED = LevelSource.AS_GIVEN


@dataclass
class MeasureOptions:
    """How :func:`l3seg_lib.measurement.orchestration.measure_folder` measures (everything but the
    inputs, the model and the output). Checked when made (and by ``dataclasses.replace``): a bad
    value raises :class:`~l3seg_lib.errors.L3SegConfigError` naming the field and its option."""

    composition: CompositionConfig = field(default_factory=CompositionConfig)
    """HU ranges and the cut-off set."""
    clinical_csv: str | Path | None = None
    """CSV with ``patient_id`` and sex, age, height, weight (see :mod:`l3seg_lib.data.clinical`)."""
    reference_dir: str | Path | None = None
    """Folder of reference masks to validate against (matched by name)."""
    reference_labels: dict[str, list[int]] | None = None
    """Label map of the reference masks (default 0-3; Slice-O-Matic tags for ``.tag``)."""
    device: str = "auto"
    """Where the network runs: one of :data:`~l3seg_lib.config.DEVICES`."""
    check_hu: bool = True
    max_slices: int = 5
    """Inputs with more slices are whole series: L3 is found by the localiser (``localize``),
    unless the manifest gives ``slice_index``."""
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    progress: bool = True
    postprocess: bool = True
    """Clean the labels anatomically (:mod:`l3seg_lib.inference.postprocess`)."""
    read_threads: int = 2
    """Threads reading and decoding the next inputs while the network runs (0: read in turn)."""
    dicom: bool = False
    """Also write a DICOM SEG and a DICOM SR (TID 1500) per measured slice under ``dicom/``."""
    force: bool = False
    """Measure again inputs the ledger lists as finished."""
    max_inputs: int | None = None
    """Stop after this many new inputs (to test resuming)."""
    workers: int = 0
    """Measure on this many Dask workers (a LocalCluster on this machine); 0: in this process."""
    scheduler: str | None = None
    """Address of an existing Dask scheduler (``tcp://host:8786``) to measure on instead."""
    min_matrix: int = DEFAULT_LIMITS.min_matrix
    """Rows and columns a slice must have to be measured (64): a smaller image is refused, naming
    its matrix, before anything is measured (with or without the HU check)."""
    min_fov_mm: float = DEFAULT_LIMITS.min_fov_mm
    """Field of view (mm, rows x row spacing and columns x column spacing) a slice must cover to be
    measured (150 mm; an abdomen at L3 is some 250-400 mm across). Lower it (and ``min_matrix``)
    only for small synthetic test images; whatever is set, 8 pixels and 10 mm are always needed."""

    def __post_init__(self) -> None:
        """Check the values (types aside): the device, the cut-off set, counts that cannot be negative."""
        def bad(name: str, flag: str, problem: str) -> L3SegConfigError:
            """The error for field ``name`` (option ``flag``)."""
            return L3SegConfigError(f"{name} ({flag}): {problem}")

        if not isinstance(self.composition, CompositionConfig):
            raise bad("composition", "--params", f"expected a CompositionConfig, got {type(self.composition).__name__}")
        if not isinstance(self.localize, LocalizeConfig):
            raise bad("localize", "--params", f"expected a LocalizeConfig, got {type(self.localize).__name__}")
        if self.composition.cutoffs not in CUTOFF_SET_NAMES:
            raise bad("composition.cutoffs", "--cutoffs", f"unknown cut-off set {self.composition.cutoffs!r}; "
                      f"available: {sorted(CUTOFF_SET_NAMES)}")
        if self.device not in DEVICES:
            raise bad("device", "--device", f"{self.device!r} is not one of {', '.join(DEVICES)}")
        for name, flag, value in (("max_slices", "--max-slices", self.max_slices),
                                  ("read_threads", "--read-threads", self.read_threads),
                                  ("workers", "--workers", self.workers),
                                  ("max_inputs", "max_inputs", 0 if self.max_inputs is None else self.max_inputs),
                                  ("min_matrix", "--min-matrix", self.min_matrix)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise bad(name, flag, f"expected a whole number >= 0, got {value!r}")
        if isinstance(self.min_fov_mm, bool) or not isinstance(self.min_fov_mm, Real) \
                or not math.isfinite(self.min_fov_mm) or self.min_fov_mm < 0:
            raise bad("min_fov_mm", "--min-fov-mm", f"expected a number of mm >= 0, got {self.min_fov_mm!r}")

    @property
    def image_limits(self) -> ReadLimits:
        """The :class:`~l3seg_lib.imageio.ct.ReadLimits` an input is read and checked with."""
        return ReadLimits(min_matrix=self.min_matrix, min_fov_mm=self.min_fov_mm)
