"""The one setup call at the top of every pipeline notebook."""

from __future__ import annotations

import warnings
from pathlib import Path

from l3seg_lib.config import Params
from l3seg_lib.pipeline.runs import Run, open_run


def setup(run_dir: str = "", params_file: str = "", runs_dir: str | Path | None = None,
          create: bool = False) -> tuple[Run, Params]:
    """Open the notebook's run (see :func:`l3seg_lib.pipeline.runs.open_run`), set table display
    and quiet pydicom's per-file notes; print and return (run, params)."""
    import pandas as pd

    pd.set_option("display.precision", 3)
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
    run = open_run(run_dir, params_file, create=create, runs_dir=runs_dir)
    print(f"run folder: {run.id} (under the runs folder)")
    return run, run.params
