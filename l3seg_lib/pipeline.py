"""Run folders and the notebook pipeline (papermill), with HTML reports (nbconvert).

A run lives in ``runs/<YYYYmmdd-HHMMSS>-<name>/`` and holds ``params.yaml`` (the parameters it
used), the artifacts of each step, and ``notebooks/`` (the executed notebooks). The clinician
reports (code hidden) go to ``reports/<run id>/``.

Run it with ``l3seg run --params params/default.yaml`` or ``python -m l3seg_lib.pipeline``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from .config import Params, load_params, parse_override, save_params

NOTEBOOKS = ("01_preprocess", "02_train", "03_optimize", "04_evaluate", "05_visualize")
TITLES = {
    "01_preprocess": "1. Data and preprocessing",
    "02_train": "2. U-Net training with patient-wise cross-validation",
    "03_optimize": "3. Bayesian optimisation of class weights and data ratio",
    "04_evaluate": "4. Evaluation on held-out test patients",
    "05_visualize": "5. Pictures: overlays, Dice, areas, Bland-Altman",
}
REPO_ROOT = Path(__file__).resolve().parents[1]


class PipelineError(RuntimeError):
    """A notebook failed; the message names the notebook and the cell."""


@dataclass
class Run:
    """An open run folder: its parameters and the standard places for each step's artifacts."""

    dir: Path
    params: Params

    @property
    def id(self) -> str:
        return self.dir.name

    def path(self, *parts: str, mkdir: bool = True) -> Path:
        p = self.dir.joinpath(*parts)
        if mkdir:
            (p if not p.suffix else p.parent).mkdir(parents=True, exist_ok=True)
        return p

    @property
    def raw_dir(self) -> Path:
        return self.path("raw")

    @property
    def processed_dir(self) -> Path:
        return self.path("processed")

    @property
    def train_dir(self) -> Path:
        return self.path("train")

    @property
    def optimize_dir(self) -> Path:
        return self.path("optimize")

    @property
    def evaluate_dir(self) -> Path:
        return self.path("evaluate")

    @property
    def figures_dir(self) -> Path:
        return self.path("figures")

    @property
    def baseline_model(self) -> Path:
        return self.train_dir / "model.pt"

    @property
    def optimised_model(self) -> Path:
        return self.optimize_dir / "optimised" / "model.pt"

    def choose_model(self, which: str = "auto") -> tuple[Path, str]:
        """(model file, label): ``baseline``, ``optimised``, or ``auto`` (optimised if it exists)."""
        if which not in ("auto", "baseline", "optimised"):
            raise ValueError(f"evaluate.model must be auto, baseline or optimised, got {which!r}")
        if which == "optimised" or (which == "auto" and self.optimised_model.is_file()):
            if not self.optimised_model.is_file():
                raise FileNotFoundError(f"{self.optimised_model}: no optimised model; run 03_optimize first")
            return self.optimised_model, "optimised"
        if not self.baseline_model.is_file():
            raise FileNotFoundError(f"{self.baseline_model}: no trained model; run 02_train first")
        return self.baseline_model, "baseline"

    def save_figure(self, fig: plt.Figure, name: str, dpi: int = 110) -> Path:
        path = self.figures_dir / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        return path

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        path = self.path(name)
        path.write_text(json.dumps(data, indent=2, default=str))
        return path


def create_run(params: Params, runs_dir: str | Path | None = None, run_dir: str | Path | None = None) -> Run:
    """Make a new run folder and write the params it uses into it."""
    if run_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(runs_dir or params.runs_dir)
        run_dir = base / f"{stamp}-{params.name}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = base / f"{stamp}-{params.name}-{n}"
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_params(params, run_dir / "params.yaml")
    return Run(run_dir.resolve(), params)


def latest_run(runs_dir: str | Path, name: str) -> Path | None:
    runs = sorted(Path(runs_dir).glob(f"*-{name}"))
    return runs[-1] if runs else None


def open_run(run_dir: str = "", params_file: str = "", create: bool = False) -> Run:
    """The run a notebook works in.

    With ``run_dir`` (as the pipeline passes it) that folder and its ``params.yaml``. Without
    it (interactive use): the newest run made from ``params_file``, or a new one when
    ``create`` is true (the first notebook).
    """
    if run_dir:
        d = Path(run_dir)
        if not (d / "params.yaml").is_file():
            raise FileNotFoundError(f"{d}: not a run folder (no params.yaml)")
        return Run(d.resolve(), load_params(d / "params.yaml"))
    if not params_file:
        raise ValueError("give run_dir or params_file")
    params = load_params(params_file)
    runs_dir = Path(params.runs_dir)
    if not runs_dir.is_absolute():  # relative to the repository, as from the command line
        runs_dir = REPO_ROOT / runs_dir
    if not create:
        found = latest_run(runs_dir, params.name)
        if found is not None:
            return open_run(str(found))
    return create_run(params, runs_dir)


def _failing_cell(notebook: Path) -> str:
    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception:  # pragma: no cover - the notebook could not even be written
        return "unknown cell"
    added = {"injected-parameters", "papermill-error-cell-tag"}
    source_cells = [c for c in nb.cells if not added & set(c.metadata.get("tags", []))]
    for i, cell in enumerate(source_cells):  # numbered as in the notebook the user edits
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return f"cell {i + 1} (`{first[:80]}`)"
    return "unknown cell"


def run_pipeline(params_file: str | Path, overrides: dict[str, Any] | None = None, run_dir: str | Path | None = None,
                 reports_dir: str | Path | None = "reports", notebooks_dir: str | Path | None = None,
                 kernel_name: str | None = None, only: list[str] | None = None, log=print) -> Run:
    """Execute the notebooks in order with papermill, then render the HTML reports.

    A failing notebook stops the run with a :class:`PipelineError` naming it and its failing
    cell; what was produced so far (including the executed notebook up to the error) stays.
    """
    import papermill as pm

    params = load_params(params_file, overrides)
    run = create_run(params, run_dir=run_dir) if run_dir is None or not (Path(run_dir) / "params.yaml").is_file() \
        else open_run(str(run_dir))
    nb_src = Path(notebooks_dir) if notebooks_dir else REPO_ROOT / "notebooks"
    if not nb_src.is_dir():
        raise PipelineError(f"{nb_src}: notebooks folder not found (pass --notebooks)")
    names = [n for n in NOTEBOOKS if only is None or n in only]
    if not params.optimize.enabled and "03_optimize" in names:
        names.remove("03_optimize")
        log("[03_optimize] skipped (optimize.enabled: false)")
    log(f"run folder: {run.dir}")
    for name in names:
        src = nb_src / f"{name}.ipynb"
        dst = run.path("notebooks", f"{name}.ipynb")
        t0 = time.perf_counter()
        log(f"[{name}] running ...")
        try:
            pm.execute_notebook(str(src), str(dst), parameters={"run_dir": str(run.dir)}, kernel_name=kernel_name,
                                cwd=str(nb_src), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as exc:
            raise PipelineError(
                f"notebook {name} failed in {_failing_cell(dst)}: {exc.ename}: {exc.evalue}\n"
                f"executed notebook with the error: {dst}\nrun folder (partial outputs kept): {run.dir}"
            ) from None
        log(f"[{name}] done in {time.perf_counter() - t0:.0f} s")
    if reports_dir is not None:
        # a partial rerun (--only) re-renders the run's other executed notebooks too, so the index stays whole
        done = [run.path("notebooks", f"{n}.ipynb", mkdir=False) for n in NOTEBOOKS]
        out = render_reports(run, [nb for nb in done if nb.is_file()], Path(reports_dir))
        log(f"report: {out}")
    return run


def render_reports(run: Run, notebooks: list[Path], reports_dir: Path) -> Path:
    """Clinician HTML (code hidden) for each executed notebook, plus an index page."""
    from .report import export_notebook_html

    out = reports_dir / run.id
    out.mkdir(parents=True, exist_ok=True)
    links = []
    for nb in notebooks:
        html_path = export_notebook_html(nb, out / f"{nb.stem}.html", hide_code=True)
        links.append((nb.stem, html_path.name))
    items = "\n".join(f'<li><a href="{h}">{html.escape(TITLES.get(n, n))}</a></li>' for n, h in links)
    (out / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>l3seg run {html.escape(run.id)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:800px;margin:2em auto;line-height:1.5}</style>"
        f"</head><body><h1>L3 body composition &mdash; run {html.escape(run.id)}</h1>"
        f"<p>Parameters: <code>{html.escape(str(run.dir / 'params.yaml'))}</code> (data: "
        f"{html.escape(run.params.data.source)}, seed {run.params.seed}).</p><ol>{items}</ol>"
        "<p style='color:#666;font-size:.9em'>Research software, not a medical device. Code and full "
        f"executed notebooks: <code>{html.escape(str(run.dir / 'notebooks'))}</code>.</p></body></html>")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m l3seg_lib.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    args = ap.parse_args(argv)
    return run_from_args(args)


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--params", required=True, help="YAML params file, e.g. params/default.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter, e.g. --set train.epochs=5 (repeatable)")
    ap.add_argument("--run-dir", help="run folder (default: runs/<timestamp>-<name>)")
    ap.add_argument("--reports", default="reports", help="folder for the HTML reports (default: reports)")
    ap.add_argument("--notebooks", help="folder with 01_preprocess.ipynb ... (default: the repository's)")
    ap.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run only these notebooks (in an existing run folder)")


def run_from_args(args: argparse.Namespace) -> int:
    overrides = dict(parse_override(s) for s in args.set)
    try:
        run_pipeline(args.params, overrides, args.run_dir, args.reports, args.notebooks, only=args.only)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
