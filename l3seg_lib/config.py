"""Typed run parameters, loaded from one YAML file under ``params/``.

The dataclasses below hold the defaults, the one source of truth: ``params/default.yaml`` spells
out exactly these values (a test checks), other params files list what they change. Every section of a params file maps onto a dataclass below. Unknown keys and wrong types are
errors (naming the file and the dotted key), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from l3seg_lib.errors import L3SegConfigError
from l3seg_lib.tissues import CLASS_NAMES, DEFAULT_HU_RANGES, complete_hu_ranges


@dataclass
class PhantomConfig:
    """Synthetic L3 data set written as real DICOM files (see ``l3seg_lib.phantom``)."""

    n_patients: int = 60
    slices_per_patient: tuple[int, int] = (1, 3)
    matrix: int = 512
    seed: int = 0
    realism: bool = True
    """Add what real scans hold: realistic vertebrae, ribs, arms, contrast phases, extreme
    habitus, intensity randomisation, kernels, metal streaks, truncated fields of view."""


@dataclass
class DataConfig:
    """Where the cases come from and how their label files map onto the four classes."""

    source: str = "phantom"
    """``phantom`` (generate the built-in data set) or ``manifest`` (a CSV listing your cases)."""
    manifest: str | None = None
    """CSV with columns ``image, mask`` and optionally ``patient_id, slice_index,
    spacing_row_mm, spacing_col_mm, window_lo_hu, window_hi_hu`` (see docs/inputs.md)."""
    clinical_csv: str | None = None
    """CSV with ``patient_id`` and any of ``sex, age, height_m|height_cm, weight_kg, bmi``."""
    label_map: dict[str, list[int]] | None = None
    """Source label values (e.g. ITK-SNAP label indices) for each class. A value found in a
    mask but listed under no class is an error, never silently background. ``null``: the
    source's own (the phantom's anatomical labels for ``phantom``; 0-3 as the classes for
    ``manifest``)."""
    check_hu: bool = True
    """Refuse images whose values do not look like HU (air not near -1000 HU)."""
    phantom: PhantomConfig = field(default_factory=PhantomConfig)


@dataclass
class PreprocessConfig:
    """Windowing and resampling of CT slices to the model input."""
    window_hu: tuple[float, float] = (-200.0, 800.0)
    """HU window clipped and scaled to [0, 1]."""
    image_size: int = 256
    """Model input size in pixels (square)."""
    pad_to_square: bool = True
    """Whole-image mode (``pixel_mm`` null): pad non-square images with air before resizing."""
    pixel_mm: float | None = 1.5
    """Physical scale: model pixels of this size in mm with the body centred (coarser only for a
    body wider than the field of view, ``image_size * pixel_mm``); null = the whole image resized."""


@dataclass
class SplitConfig:
    """Held-out test set and patient-wise cross-validation folds."""
    test_fraction: float = 0.2
    """Fraction of patients held out as the final test set (never used for training or tuning)."""
    n_folds: int = 5
    """Patient-wise cross-validation folds over the remaining patients."""
    stratify_by: str | None = "sex"
    """Patient-level column used to balance folds when present (``null`` for none)."""


@dataclass
class ModelConfig:
    """U-Net architecture."""
    depth: int = 4
    """Number of 2x down-sampling steps."""
    base_width: int = 8
    """Feature channels at full resolution; doubles at each level."""
    norm: str = "batch"
    """``batch``, ``instance``, ``group`` or ``none``."""
    dropout: float = 0.1
    """Dropout probability in the bottleneck and decoder."""


@dataclass
class AugmentConfig:
    """Training-time augmentation (random rotation in degrees, shift, scale, intensity and noise)."""
    rotate_deg: float = 45.0
    shift_px: int = 10
    """Maximum shift in pixels at the model size."""
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.05
    contrast: float = 0.1
    noise_std: float = 0.02
    """Gaussian noise SD on the [0, 1] windowed image (0.02 = 20 HU in the default window)."""
    hflip: bool = False
    """Left-right flips (off: L3 anatomy is not symmetric - liver, aorta, IVC)."""


@dataclass
class TrainConfig:
    """Training hyperparameters (optimizer, schedule, loss weights, data ratio, epoch selection)."""
    epochs: int = 15
    batch_size: int = 8
    lr: float = 0.003
    weight_decay: float = 1e-5
    lr_schedule: str = "cosine"
    """``cosine`` or ``none``."""
    early_stopping_patience: int = 6
    """Stop when the validation Dice has not improved for this many epochs (0 = never)."""
    grad_clip: float = 1.0
    class_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    """Loss weights for background, muscle, SAT, VAT."""
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    data_ratio: float = 1.0
    """Augmented copies added per original training slice each epoch (0 = originals only). With
    ``steps_per_epoch`` it sets the share of augmented samples, r / (1 + r), not the compute."""
    steps_per_epoch: int | None = None
    """Optimizer steps per epoch, drawn with replacement from originals and augmented copies
    (equal compute whatever the data ratio); null = one pass over the originals and copies."""
    select_epoch: str = "best"
    """Which epoch's weights to keep: ``best`` validation Dice (with early stopping), or ``last``
    (no selection on the validation data, which can then be reported without optimism)."""
    folds_to_run: list[int] | None = field(default_factory=lambda: [0, 1])
    """Subset of fold indices to train (``null`` = all). Default: 2 of the 5 folds, a 2-network
    ensemble (2 folds per seed, as in the shipped default model's recipe); the cross-validated Dice
    is then over their validation patients. This keeps ``make run`` within 45 minutes on 2 CPU cores."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class BudgetConfig:
    """Cheaper training used inside each optimisation trial."""

    epochs: int = 8
    image_size: int = 128
    folds: list[int] | None = field(default_factory=lambda: [0])
    """Folds trained and scored per trial (one fold: half the cost of two)."""
    steps_per_epoch: int = 20
    """Optimizer steps per epoch in every trial: equal compute whatever the data ratio."""


@dataclass
class OptimizeConfig:
    """Bayesian optimisation of loss weights, data ratio and learning rate."""
    enabled: bool = True
    n_trials: int = 8
    init_points: int = 3
    """Random trials before the Gaussian-process suggestions start."""
    acquisition: str = "ei"
    """``ei`` (expected improvement) or ``ucb`` (upper confidence bound)."""
    bounds: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "w_muscle": (0.5, 5.0),
            "w_sat": (0.5, 5.0),
            "w_vat": (0.5, 5.0),
            "data_ratio": (0.0, 3.0),
            "log10_lr": (-3.5, -2.0),
        }
    )
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    workers: int = 0
    """Evaluate trials in parallel on this many Dask workers (a LocalCluster; batches of this size
    proposed by the constant-liar strategy); 0 = one after another in this process."""
    scheduler: str | None = None
    """Address of an existing Dask scheduler (``tcp://host:8786``) for the trials instead."""
    include_baseline: bool = True
    """Make trial 0 the baseline setting (train.class_weights, data_ratio, lr) under the same
    budget, so the trace shows what the search gains over it."""
    compare: bool = True
    """Retrain baseline and optimised settings at equal compute and compare on test patients."""
    compare_seeds: int = 1
    """Seeds each setting is retrained with for the comparison (params.seed, +1, ...). The first
    seed's baseline is the cross-validation's model (not trained again); each further seed costs
    two more trainings."""


CUTOFF_SET_NAMES = ("martin2013", "fearon2011")
"""The cut-off sets of :data:`l3seg_lib.measurement.composition.CUTOFF_SETS` (a test checks they
agree), named here so that a params file is checked when it is loaded, not when first measured."""

DEVICES = ("auto", "cpu", "cuda")
"""Where networks run: ``auto`` (CUDA when present), ``cpu`` or ``cuda`` (``device`` of the params,
``--device`` of every command, :class:`~l3seg_lib.measurement.options.MeasureOptions`)."""


@dataclass
class CompositionConfig:
    """HU ranges and the named cut-off set used for body-composition measurement."""
    hu_ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_HU_RANGES))
    """HU ranges (low, high, inclusive) for threshold refinement and IMAT; tissues not given keep
    the Alberta protocol defaults of :data:`l3seg_lib.tissues.DEFAULT_HU_RANGES`."""
    cutoffs: str = "martin2013"
    """Named cut-off set: one of :data:`CUTOFF_SET_NAMES` (``l3seg_lib.measurement.composition.CUTOFF_SETS``)."""

    def __post_init__(self) -> None:
        """Complete partial ``hu_ranges`` with the default ranges; a config error when a range is invalid."""
        try:  # partial ranges ({muscle: [-30, 150]}) keep the other tissues' defaults, IMAT included
            self.hu_ranges = complete_hu_ranges(self.hu_ranges)
        except ValueError as exc:
            raise L3SegConfigError(f"composition.hu_ranges: {exc}") from None


@dataclass
class LocalizeConfig:
    """Finding L3 in whole CT volumes (:mod:`l3seg_lib.localize.l3`)."""

    slice: str = "middle"
    """Which slice of the L3 body to measure: ``middle`` or ``transverse_processes``."""
    average_slices: int = 0
    """Also measure this many slices either side of it (within the L3 body)."""
    bone_hu: float = 120.0
    """Bone threshold (HU) for tracing the spine; cancellous bone of older patients is ~120-200 HU."""
    disc_margin_mm: float = 4.0
    """Half a disc: the vertebral body starts this far from a disc's centre."""


@dataclass
class EvaluateConfig:
    """Evaluation of the trained model on the held-out test set."""
    model: str = "auto"
    """Which model the evaluation uses: ``baseline``, ``optimised`` or ``auto`` (optimised
    when the optimisation step produced one)."""
    postprocess: bool = True
    """Clean predicted labels anatomically (nothing outside the body or inside bone; no specks)."""


@dataclass
class VisualizeConfig:
    """Overlay figures of test slices."""
    n_cases: int = 6
    """Test slices shown as overlays."""


@dataclass
class Params:
    """All parameters of a run (read from a YAML parameter file by :func:`load_params`)."""
    name: str = "default"
    seed: int = 42
    runs_dir: str = "runs"
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    num_threads: int = 2
    """CPU threads for torch, set at the start of every training stage and in every worker process. The
    thread count changes the order of torch's float reductions and so the trained weights: a fixed
    number makes runs on machines with other core counts (and Dask workers) give the same numbers;
    0 = torch's default (the machine's cores: not reproducible across machines)."""
    deterministic: bool = True
    """torch's deterministic algorithms (``torch.use_deterministic_algorithms``, cuDNN deterministic, no
    cuDNN benchmarking): no cost and no change on the CPU; on a GPU slower, and without it GPU runs
    differ from run to run."""
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    composition: CompositionConfig = field(default_factory=CompositionConfig)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    visualize: VisualizeConfig = field(default_factory=VisualizeConfig)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain nested dict (for YAML)."""
        return _to_plain(dataclasses.asdict(self))


def _to_plain(obj: Any) -> Any:
    """Dataclass dict to plain YAML-serialisable values (tuples become lists)."""
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` or raise a clear error."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except L3SegConfigError as exc:
                errors.append(str(exc))
        raise L3SegConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise L3SegConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise L3SegConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise L3SegConfigError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise L3SegConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise L3SegConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise L3SegConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise L3SegConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise L3SegConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise L3SegConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise L3SegConfigError(f"{where}: unsupported type {tp}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instance of dataclass ``cls`` from ``values`` (keys checked, values coerced to the field types, then
    validated)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise L3SegConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    obj = cls(**kwargs)
    _validate(obj, where)
    return obj


def _validate(obj: Any, where: str) -> None:
    """Checks that a type alone cannot express."""
    def bad(msg: str) -> L3SegConfigError:
        """Config error prefixed with the section being validated."""
        return L3SegConfigError(f"{where}: {msg}")

    if isinstance(obj, DataConfig):
        if obj.source not in ("phantom", "manifest"):
            raise bad(f"data.source must be 'phantom' or 'manifest', got {obj.source!r}")
        if obj.source == "manifest" and not obj.manifest:
            raise bad("data.source is 'manifest' but data.manifest is not set")
        if obj.label_map is None:
            return
        missing = [c for c in CLASS_NAMES if c not in obj.label_map]
        extra = [c for c in obj.label_map if c not in CLASS_NAMES]
        if missing or extra:
            raise bad(f"data.label_map needs exactly the keys {list(CLASS_NAMES)} "
                      f"(missing {missing}, unknown {extra})")
        seen: dict[int, str] = {}
        for cls_name, values in obj.label_map.items():
            for v in values:
                if v in seen:
                    raise bad(f"data.label_map: value {v} listed under both {seen[v]} and {cls_name}")
                seen[v] = cls_name
    elif isinstance(obj, PreprocessConfig):
        lo, hi = obj.window_hu
        if not lo < hi:
            raise bad(f"preprocess.window_hu must be [low, high] with low < high, got {list(obj.window_hu)}")
        if obj.pixel_mm is not None and not 0.2 <= obj.pixel_mm <= 10.0:
            raise bad(f"preprocess.pixel_mm must be 0.2-10 mm (or null), got {obj.pixel_mm}")
        if obj.image_size < 16 or obj.image_size % 16:
            raise bad(f"preprocess.image_size must be a multiple of 16 and >= 16, got {obj.image_size}")
    elif isinstance(obj, SplitConfig):
        if not 0.0 <= obj.test_fraction < 1.0:
            raise bad(f"split.test_fraction must be in [0, 1), got {obj.test_fraction}")
        if obj.n_folds < 2:
            raise bad(f"split.n_folds must be >= 2, got {obj.n_folds}")
    elif isinstance(obj, ModelConfig):
        if obj.norm not in ("batch", "instance", "group", "none"):
            raise bad(f"model.norm must be batch, instance, group or none, got {obj.norm!r}")
        if obj.depth < 1 or obj.base_width < 1:
            raise bad("model.depth and model.base_width must be >= 1")
    elif isinstance(obj, TrainConfig):
        if any(w < 0 for w in obj.class_weights):
            raise bad(f"train.class_weights must be >= 0, got {list(obj.class_weights)}")
        if obj.lr_schedule not in ("cosine", "none"):
            raise bad(f"train.lr_schedule must be cosine or none, got {obj.lr_schedule!r}")
        if obj.select_epoch not in ("best", "last"):
            raise bad(f"train.select_epoch must be best or last, got {obj.select_epoch!r}")
        if obj.steps_per_epoch is not None and obj.steps_per_epoch < 1:
            raise bad(f"train.steps_per_epoch must be >= 1 (or null), got {obj.steps_per_epoch}")
        if obj.data_ratio < 0:
            raise bad(f"train.data_ratio must be >= 0, got {obj.data_ratio}")
    elif isinstance(obj, OptimizeConfig):
        allowed = {"w_muscle", "w_sat", "w_vat", "data_ratio", "log10_lr"}
        unknown = set(obj.bounds) - allowed
        if unknown:
            raise bad(f"optimize.bounds: unknown parameter(s) {sorted(unknown)}; allowed {sorted(allowed)}")
        for k, (lo, hi) in obj.bounds.items():
            if not lo < hi:
                raise bad(f"optimize.bounds.{k} must be [low, high] with low < high")
        if obj.acquisition not in ("ei", "ucb"):
            raise bad(f"optimize.acquisition must be ei or ucb, got {obj.acquisition!r}")
    elif isinstance(obj, CompositionConfig):
        if obj.cutoffs not in CUTOFF_SET_NAMES:
            raise bad(f"composition.cutoffs must be one of {list(CUTOFF_SET_NAMES)}, got {obj.cutoffs!r}")
    elif isinstance(obj, LocalizeConfig):
        if obj.slice not in ("middle", "transverse_processes"):
            raise bad(f"localize.slice must be middle or transverse_processes, got {obj.slice!r}")
        if obj.average_slices < 0:
            raise bad(f"localize.average_slices must be >= 0, got {obj.average_slices}")
    elif isinstance(obj, Params):
        if obj.device not in DEVICES:
            raise bad(f"device must be auto, cpu or cuda, got {obj.device!r}")
        if obj.num_threads < 0:
            raise bad(f"num_threads must be >= 0 (0 = torch's default), got {obj.num_threads}")


def params_from_dict(values: dict[str, Any], source: str = "params") -> Params:
    """Build :class:`Params` from a plain mapping; ``source`` names it in error messages."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise L3SegConfigError(f"{source}: expected a mapping at the top level")
    try:
        return _build(Params, values, "")
    except L3SegConfigError as exc:
        raise L3SegConfigError(f"{source}: {str(exc).lstrip(': ')}") from None


def load_params(path: str | Path, overrides: dict[str, Any] | None = None) -> Params:
    """Load a YAML params file, apply dotted ``overrides`` (``{"train.epochs": 3}``), validate."""
    path = Path(path)
    if not path.is_file():
        raise L3SegConfigError(f"{path}: params file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise L3SegConfigError(f"{path}: not valid YAML ({exc})") from None
    for key, value in (overrides or {}).items():
        set_dotted(values, key, value)
    return params_from_dict(values, str(path))


def set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    """Set ``values["a"]["b"] = value`` for ``key="a.b"``, creating sections as needed."""
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise L3SegConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (``3``, ``[1, 2]``)."""
    if "=" not in text:
        raise L3SegConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def save_params(params: Params, path: str | Path) -> Path:
    """Write ``params`` as YAML to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
    return path
