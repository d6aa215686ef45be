"""The measures and verdicts l3seg reports, in one table beside :mod:`l3seg_lib.tissues`: the
vocabulary every module that lists them reads (``measurements.csv``, the HTML pages, the DICOM SR,
``remeasure`` and the evaluation). It imports only the standard library.

Each :class:`Measure` is a column of ``measurements.csv`` with its names and unit; each
:class:`Condition` is a verdict of a cut-off set (:class:`~l3seg_lib.measurement.composition.CutoffSet`
holds its verdict function under the condition's key) with its columns, label and SR code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """One measure, as ``measurements.csv`` holds it."""

    key: str
    """The ``measurements.csv`` column, e.g. ``sma_refined_cm2``."""
    name: str
    """Display name, e.g. ``muscle area`` (the evaluation's tables)."""
    short: str
    """Short display name, e.g. ``SMA`` (``remeasure``'s before/after table)."""
    unit: str
    """Unit as displayed: ``cm²``, ``HU`` or ``cm²/m²``."""
    from_image: bool = True
    """Whether the slice alone gives it (False for SMI, which needs the height)."""

    @property
    def column(self) -> str:
        """The ``measurements.csv`` column (the key)."""
        return self.key

    @property
    def name_with_unit(self) -> str:
        """Display name with unit, e.g. ``muscle area (cm²)``."""
        return f"{self.name} ({self.unit})"

    @property
    def short_with_unit(self) -> str:
        """Short display name with unit, e.g. ``SMA (cm²)``."""
        return f"{self.short} ({self.unit})"


@dataclass(frozen=True)
class Condition:
    """A clinical condition a cut-off set judges: met (``yes``), not met (``no``) or ``not computable``."""

    key: str
    """Machine name: the ``measurements.csv`` column of the verdict and the cut-off set's field
    holding its verdict function, e.g. ``sarcopenic_obesity``."""
    label: str
    """Display name, e.g. ``Sarcopenic obesity``."""
    sr_code: str
    """Code value (private scheme 99L3SEG) in the DICOM SR; its reason's text item is the code + ``_R``."""

    @property
    def column(self) -> str:
        """The ``measurements.csv`` column of the verdict (the key)."""
        return self.key

    @property
    def cutoff_key(self) -> str:
        """The cut-off set's field holding the verdict function (the key)."""
        return self.key

    @property
    def reason_column(self) -> str:
        """The ``measurements.csv`` column of the verdict's reason."""
        return f"{self.key}_reason"


SMA = Measure("sma_refined_cm2", "muscle area", "SMA", "cm²")
SAT_AREA = Measure("sat_refined_cm2", "SAT area", "SAT", "cm²")
VAT_AREA = Measure("vat_refined_cm2", "VAT area", "VAT", "cm²")
IMAT_AREA = Measure("imat_cm2", "IMAT", "IMAT", "cm²")
MUSCLE_DENSITY = Measure("muscle_refined_hu_mean", "muscle density", "muscle density", "HU")
SMI = Measure("smi_cm2_m2", "SMI", "SMI", "cm²/m²", from_image=False)

MEASURES: tuple[Measure, ...] = (SMA, SAT_AREA, VAT_AREA, IMAT_AREA, MUSCLE_DENSITY, SMI)
"""The measures the verdicts rest on and that ``remeasure`` and the evaluation compare, in order:
the HU-refined areas (cm²), IMAT (cm²), the refined muscle density (HU) and SMI (cm²/m²)."""
IMAGE_MEASURES: tuple[Measure, ...] = tuple(m for m in MEASURES if m.from_image)
""":data:`MEASURES` that the slice alone gives (all but SMI)."""

SARCOPENIA = Condition("sarcopenia", "Sarcopenia", "SARCOPENIA")
SARCOPENIC_OBESITY = Condition("sarcopenic_obesity", "Sarcopenic obesity", "SARCOBESITY")
MYOSTEATOSIS = Condition("myosteatosis", "Myosteatosis", "MYOSTEATOSIS")
VISCERAL_OBESITY = Condition("visceral_obesity", "Visceral obesity", "VISCOBESITY")

VERDICTS: tuple[Condition, ...] = (SARCOPENIA, SARCOPENIC_OBESITY, MYOSTEATOSIS, VISCERAL_OBESITY)
"""The conditions every cut-off set judges, in the order of the ``measurements.csv`` columns."""
VERDICT_KEYS: tuple[str, ...] = tuple(v.key for v in VERDICTS)
"""Keys of :data:`VERDICTS`: ``sarcopenia, sarcopenic_obesity, myosteatosis, visceral_obesity``."""
