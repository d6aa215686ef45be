"""Run folders: one folder per run holding the params it used and every artifact it made.

A run lives in ``<runs root>/<YYYYmmdd-HHMMSS>-<name>/``. The runs root is ``params.runs_dir``
unless a caller passes another; a relative root is taken relative to the current working
directory, for creating and opening runs alike.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l3seg_lib.config import Params, load_params, save_params

PARAMS_FILE = "params.yaml"
SMOKE_TEST_NAMES = ("quick", "smoke")
"""Params names (or their beginnings) of smoke-test settings: tiny data, a few epochs."""
SMOKE_TEST_BANNER = "smoke-test settings — numbers are not results"


def smoke_test_banner(params: Params) -> str | None:
    """The banner every report of a smoke-test run carries (params named ``quick*`` or
    ``smoke*``, like ``params/quick.yaml``), or None for a real run."""
    name = str(params.name or "").lower()
    if not name.startswith(SMOKE_TEST_NAMES):
        return None
    return (f"{SMOKE_TEST_BANNER} (params '{params.name}': tiny synthetic data and a few epochs, to check that "
            "the pipeline runs; Dice, areas, verdicts and statistics below are meaningless by design)")


def n_test_patients(run_dir: str | Path) -> int | None:
    """The number of held-out test patients of a run (from ``processed/split.csv``), or None."""
    import pandas as pd

    path = Path(run_dir) / "processed" / "split.csv"
    try:
        split = pd.read_csv(path, dtype={"patient_id": str})
    except (OSError, ValueError):
        return None
    if "set" not in split or "patient_id" not in split:
        return None
    return int(split.loc[split["set"] == "test", "patient_id"].nunique())


@dataclass
class Run:
    """An open run folder: its parameters and the standard places for each step's artifacts."""

    dir: Path
    params: Params

    @property
    def id(self) -> str:
        """The run's id: the name of its folder."""
        return self.dir.name

    def path(self, *parts: str, mkdir: bool = True) -> Path:
        """A path inside the run; its parent folder is created unless ``mkdir`` is false."""
        p = self.dir.joinpath(*parts)
        if mkdir:
            (p if not p.suffix else p.parent).mkdir(parents=True, exist_ok=True)
        return p

    @property
    def raw_dir(self) -> Path:
        """Folder of the raw (or generated) input data."""
        return self.path("raw")

    @property
    def processed_dir(self) -> Path:
        """Folder of the preprocessed slices and splits."""
        return self.path("processed")

    @property
    def train_dir(self) -> Path:
        """Folder of the baseline training artifacts."""
        return self.path("train")

    @property
    def optimize_dir(self) -> Path:
        """Folder of the hyperparameter optimisation artifacts."""
        return self.path("optimize")

    @property
    def evaluate_dir(self) -> Path:
        """Folder of the test-set evaluation artifacts."""
        return self.path("evaluate")

    @property
    def figures_dir(self) -> Path:
        """Folder of the figures."""
        return self.path("figures")

    @property
    def baseline_model(self) -> Path:
        """The baseline fold ensemble as an ONNX model file (``model.pt`` beside it: the weights)."""
        return self.train_dir / "model.onnx"

    @property
    def optimised_model(self) -> Path:
        """The optimised model as an ONNX model file (written by the optimisation step)."""
        return self.optimize_dir / "optimised" / "model.onnx"

    def rel(self, path: str | Path) -> str:
        """``path`` as the pages show it: relative to the run folder when inside it, else its name
        (no machine path in a report)."""
        p = Path(path)
        try:
            return str(p.resolve().relative_to(self.dir.resolve()))
        except ValueError:
            return p.name

    def optimised_found_worse(self) -> str:
        """Why ``auto`` does not take the optimised model: the tissues on which 03_optimize's
        comparison (``optimize/comparison.csv``) found it worse than the baseline (Holm-adjusted
        p < 0.05, median paired difference < 0) while better on none, in words; empty otherwise."""
        import pandas as pd

        path = self.optimize_dir / "comparison.csv"
        try:
            table = pd.read_csv(path, index_col=0)
        except (OSError, ValueError):
            return ""
        names = {"muscle": "muscle", "sat": "SAT", "vat": "VAT"}
        rows = table.loc[[t for t in names if t in table.index]]
        if not {"holm p", "median difference", "difference"} <= set(rows.columns):
            return ""
        significant = rows["holm p"] < 0.05
        worse, better = rows[significant & (rows["median difference"] < 0)], rows[significant & (rows["median difference"] > 0)]
        if worse.empty or not better.empty:
            return ""
        return ("03_optimize found the optimised setting worse than the baseline on " + ", ".join(
            f"{names[t]} Dice (mean difference {r['difference']:+.3f}, Holm-adjusted p {r['holm p']:.2g})"
            for t, r in worse.iterrows()) + ", so the baseline model is evaluated")

    def choose_model(self, which: str = "auto") -> tuple[Path, str]:
        """(model file, label): ``baseline``, ``optimised``, or ``auto`` (the optimised model if it
        exists, unless 03_optimize found it worse: :meth:`optimised_found_worse`)."""
        if which not in ("auto", "baseline", "optimised"):
            raise ValueError(f"evaluate.model must be auto, baseline or optimised, got {which!r}")
        if which == "optimised" or (which == "auto" and self.optimised_model.is_file()
                                    and not self.optimised_found_worse()):
            if not self.optimised_model.is_file():
                raise FileNotFoundError(f"{self.optimised_model}: no optimised model; run 03_optimize first")
            return self.optimised_model, "optimised"
        if not self.baseline_model.is_file():
            raise FileNotFoundError(f"{self.baseline_model}: no trained model; run 02_train first")
        return self.baseline_model, "baseline"

    def save_figure(self, fig: Any, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png``."""
        path = self.figures_dir / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        return path

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        """Write ``data`` as indented JSON to ``name`` inside the run; returns the path."""
        path = self.path(name)
        path.write_text(json.dumps(data, indent=2, default=str))
        return path


def runs_root(params: Params, runs_dir: str | Path | None = None) -> Path:
    """The folder that holds the runs: ``runs_dir`` when given, else ``params.runs_dir``."""
    return Path(runs_dir if runs_dir is not None else params.runs_dir).resolve()


def create_run(params: Params, runs_dir: str | Path | None = None, run_dir: str | Path | None = None) -> Run:
    """Make a new run folder (``run_dir``, or a new timestamped one under the runs root) and
    write the params it uses into it."""
    if run_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = runs_root(params, runs_dir)
        run_dir = base / f"{stamp}-{params.name}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = base / f"{stamp}-{params.name}-{n}"
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_params(params, run_dir / PARAMS_FILE)
    return Run(run_dir.resolve(), params)


def latest_run(runs_dir: str | Path, name: str) -> Path | None:
    """The newest run folder named ``*-<name>`` under ``runs_dir``, or None."""
    runs = sorted(p for p in Path(runs_dir).glob(f"*-{name}") if (p / PARAMS_FILE).is_file())
    return runs[-1] if runs else None


def open_run(run_dir: str | Path = "", params_file: str | Path = "", create: bool = False,
             runs_dir: str | Path | None = None) -> Run:
    """The run a notebook works in.

    With ``run_dir`` (as the pipeline passes it): that folder and its ``params.yaml``. Without
    it (interactive use): the newest run made from ``params_file`` under the runs root, or a
    new one when ``create`` is true or there is none yet.
    """
    if run_dir:
        d = Path(run_dir)
        if not (d / PARAMS_FILE).is_file():
            raise FileNotFoundError(f"{d}: not a run folder (no {PARAMS_FILE})")
        return Run(d.resolve(), load_params(d / PARAMS_FILE))
    if not params_file:
        raise ValueError("give run_dir or params_file")
    params = load_params(params_file)
    root = runs_root(params, runs_dir)
    if not create:
        found = latest_run(root, params.name)
        if found is not None:
            return open_run(found)
    return create_run(params, root)
