import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from l3seg_lib import phantom
from l3seg_lib.config import DataConfig, Params, PreprocessConfig
from l3seg_lib.data.cases import iter_manifest
from l3seg_lib.data.clinical import read_clinical
from l3seg_lib.data.manifest import read_manifest
from l3seg_lib.preprocessing.processed import export_processed

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the research harness l3seg_lab (not installed)
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "totalsegmentator_example"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real example CT in ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real CT example data not found at {SHARED_DATA} (../shared/data is optional)")
    return SHARED_DATA


def tiny_params(**train) -> Params:
    """Params for a model small enough to train in seconds (32 px, width 4, depth 2)."""
    p = Params()
    p.model.base_width, p.model.depth = 4, 2
    p.preprocess.image_size = 32
    p.train.epochs, p.train.batch_size, p.train.lr = 2, 4, 0.01
    p.split.n_folds, p.split.test_fraction = 2, 0.25
    p.num_threads = 1
    for k, v in train.items():
        setattr(p.train, k, v)
    return p


@pytest.fixture(scope="session")
def tiny_processed(tmp_path_factory):
    """4 phantom patients at 128 px written as DICOM, preprocessed to 32 px."""
    root = tmp_path_factory.mktemp("tiny")
    phantom.generate(root / "raw", n_patients=4, seed=5, matrix=128, slices_per_patient=(1, 2), progress=False)
    data = DataConfig(label_map=phantom.PHANTOM_LABEL_MAP)
    cases = list(iter_manifest(read_manifest(root / "raw" / "manifest.csv"), data))
    export_processed(cases, root / "proc", PreprocessConfig(image_size=32), read_clinical(root / "raw" / "clinical.csv"))
    return root


@pytest.fixture(scope="session")
def tiny_model(tiny_processed):
    """A 2-fold ensemble trained for 2 epochs on the tiny data (a model file path)."""
    from l3seg_lib.preprocessing.processed import read_processed_manifest
    from l3seg_lib.training.crossval import cross_validate
    from l3seg_lib.training.splits import make_splits

    proc = tiny_processed / "proc"
    man = read_processed_manifest(proc)
    p = tiny_params()
    res = cross_validate(proc, man, make_splits(man, p.split, p.seed), p, out_dir=tiny_processed / "cv", progress=False)
    return res.model_path


QUICK = REPO / "params" / "quick.yaml"
QUICK_OVERRIDES = {"name": "quick-t"}
"""The shared quick run's overrides (a smoke-test name, so its reports carry the banner)."""


@dataclass(frozen=True)
class QuickRun:
    """A finished quick run: its run folder, its reports folder and the runner's log lines."""

    dir: Path
    reports: Path
    logs: tuple[str, ...]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> QuickRun:
    """``params/quick.yaml`` (named ``quick-t``) run once through the papermill runner, reports
    included, for the end-to-end tests that only read it (tests must not write into it)."""
    from l3seg_lib.pipeline.runner import run_pipeline  # the notebook stack, only when asked for

    root = tmp_path_factory.mktemp("quick")
    logs: list[str] = []
    run = run_pipeline(QUICK, QUICK_OVERRIDES, run_dir=root / "run", reports_dir=root / "reports",
                       notebooks_dir=REPO / "notebooks", log=logs.append, stream=False)
    return QuickRun(run.dir, root / "reports" / run.dir.name, tuple(logs))
