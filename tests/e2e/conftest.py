"""One quick pipeline run (notebooks 01-05 with HTML reports) shared by the end-to-end tests that
only read what it wrote: the run folder, the reports, reproducibility against a second run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "params" / "quick.yaml"
QUICK_OVERRIDES = {"name": "quick-t"}


@dataclass(frozen=True)
class QuickRun:
    """A finished quick run: its run folder, its reports folder and the runner's log lines."""

    dir: Path
    reports: Path
    logs: tuple[str, ...]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> QuickRun:
    """``params/quick.yaml`` (named ``quick-t``, a smoke-test name) run once through the papermill runner, reports included.
    Tests must not write into it."""
    from l3seg_lib.pipeline.runner import run_pipeline

    root = tmp_path_factory.mktemp("quick")
    logs: list[str] = []
    run = run_pipeline(QUICK, QUICK_OVERRIDES, run_dir=root / "run", reports_dir=root / "reports",
                       notebooks_dir=REPO / "notebooks", log=logs.append, stream=False)
    return QuickRun(run.dir, root / "reports" / run.dir.name, tuple(logs))
