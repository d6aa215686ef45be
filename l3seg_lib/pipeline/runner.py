"""The notebook pipeline: papermill executes ``01_preprocess ... 05_visualize`` in a run folder,
then the executed notebooks are rendered to clinician HTML (code hidden) with an index page.

Run it with ``l3seg run --params params/default.yaml``. The notebooks' own output (progress
bars with time left, messages) streams to the terminal while they run.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from l3seg_lib.config import load_params
from l3seg_lib.errors import PipelineError
from l3seg_lib.pipeline.runs import Run, create_run, n_test_patients, open_run, smoke_test_banner

NOTEBOOKS = ("01_preprocess", "02_train", "03_optimize", "04_evaluate", "05_visualize")
TITLES = {
    "01_preprocess": "1. Data and preprocessing",
    "02_train": "2. U-Net training with patient-wise cross-validation",
    "03_optimize": "3. Bayesian optimisation of class weights and data ratio",
    "04_evaluate": "4. Evaluation on held-out test patients",
    "05_visualize": "5. Pictures: overlays, Dice, areas, Bland-Altman",
}


def _failing_cell(notebook: Path) -> str:
    """The first cell of an executed notebook with an error output, numbered as in the user's notebook
    (papermill's added cells left out), with its first line; ``unknown cell`` when none is found."""
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


def _kernel_config(socket_dir: str) -> Any:
    """Talk to the notebook kernel over local IPC sockets, not unencrypted TCP."""
    from traitlets.config import Config

    cfg = Config()
    cfg.KernelManager.transport = "ipc"
    cfg.KernelManager.ip = str(Path(socket_dir) / "kernel")
    return cfg


def execute_notebook(src: Path, dst: Path, parameters: dict[str, Any], cwd: Path, kernel_name: str | None = None,
                     stream: bool = True) -> None:
    """Execute one notebook with papermill; with ``stream`` its stdout/stderr (progress bars)
    go to this process's terminal as they come."""
    import papermill as pm

    with tempfile.TemporaryDirectory(prefix="l3seg-kernel-") as sockets:
        pm.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name=kernel_name, cwd=str(cwd),
                            progress_bar=False, log_output=False,
                            stdout_file=sys.stdout if stream else None, stderr_file=sys.stderr if stream else None,
                            config=_kernel_config(sockets))


def run_pipeline(params_file: str | Path, overrides: dict[str, Any] | None = None, run_dir: str | Path | None = None,
                 reports_dir: str | Path | None = "reports", notebooks_dir: str | Path = "notebooks",
                 kernel_name: str | None = None, only: list[str] | None = None, runs_dir: str | Path | None = None,
                 log: Callable[[str], Any] = print, stream: bool = True) -> Run:
    """Execute the notebooks in order with papermill, then render the HTML reports.

    ``notebooks_dir``, ``reports_dir`` and ``runs_dir`` (default: ``params.runs_dir``) are taken
    relative to the current working directory. A failing notebook stops the run with a
    :class:`PipelineError` naming it and its failing cell; what was produced so far (including
    the executed notebook up to the error) stays.
    """
    import papermill as pm

    params = load_params(params_file, overrides)
    if run_dir is not None and (Path(run_dir) / "params.yaml").is_file():
        run = open_run(run_dir)
    else:
        run = create_run(params, runs_dir=runs_dir, run_dir=run_dir)
    nb_src = Path(notebooks_dir).resolve()
    if not nb_src.is_dir():
        raise PipelineError(f"{nb_src}: notebooks folder not found (run from the repository root or pass --notebooks)")
    names = [n for n in NOTEBOOKS if only is None or n in only]
    if not params.optimize.enabled and "03_optimize" in names:
        names.remove("03_optimize")
        log("[03_optimize] skipped (optimize.enabled: false)")
    log(f"run folder: {run.dir}")
    for step, name in enumerate(names, start=1):
        src = nb_src / f"{name}.ipynb"
        dst = run.path("notebooks", f"{name}.ipynb")
        t0 = time.perf_counter()
        log(f"[{name}] running (step {step} of {len(names)}) ...")
        try:
            execute_notebook(src, dst, {"run_dir": str(run.dir)}, nb_src, kernel_name, stream)
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
    from l3seg_lib.reporting.html import write_run_index_html

    out = reports_dir / run.id
    out.mkdir(parents=True, exist_ok=True)
    links = []
    banner = smoke_test_banner(run.params)
    n_test = n_test_patients(run.dir)
    for nb in notebooks:
        html_path = export_notebook_html(nb, out / f"{nb.stem}.html", hide_code=True, banner=banner,
                                         n=n_test if nb.stem >= "03" else None)
        links.append((TITLES.get(nb.stem, nb.stem), html_path.name))
    return write_run_index_html(out / "index.html", run.id, run.dir / "params.yaml", run.dir / "notebooks",
                                run.params.data.source, run.params.seed, links, smoke_test=banner)


_TAGS = re.compile(r"(<script\b.*?</script\s*>|<style\b.*?</style\s*>|<!--.*?-->|<[^>]*>)", re.S | re.I)
_NAN = re.compile(r"(?<![\w.])[-+]?nan(?![\w])", re.I)


def clinician_html(html: str, banner: str | None = None, n: int | None = None) -> str:
    """A rendered report made fit for clinicians: every ``nan``/``NaN`` in its text (tables,
    printed statistics; never in scripts, styles or attributes such as embedded pictures) becomes
    :func:`~l3seg_lib.reporting.html.not_computable`, and ``banner`` (:func:`~l3seg_lib.pipeline.runs.smoke_test_banner`)
    heads the page."""
    from l3seg_lib.reporting.html import not_computable

    parts = _TAGS.split(html)
    for i in range(0, len(parts), 2):  # text between tags; odd items are the tags themselves
        parts[i] = _NAN.sub(not_computable(n), parts[i])
    html = "".join(parts)
    if banner:
        div = ('<div class="l3seg-banner" role="alert" style="background:#b00020;color:#fff;font-weight:600;'
               f'padding:.6em 1em;margin:0 0 1em;font-family:system-ui,sans-serif">{_html_escape(banner)}</div>')
        html, k = re.subn(r"(<body\b[^>]*>)", lambda m: m.group(1) + div, html, count=1, flags=re.I)
        if not k:
            html = div + html
    return html


def _html_escape(text: str) -> str:
    """``text`` escaped for HTML."""
    from markupsafe import escape

    return str(escape(text))


def export_notebook_html(notebook: str | Path, html_path: str | Path, hide_code: bool = True,
                         banner: str | None = None, n: int | None = None) -> Path:
    """Render an executed notebook to a self-contained HTML file.

    The clinician version (``hide_code=True``) hides code cells and prompts and drops stderr
    streams (progress bars, warnings); text, tables and figures stay, with no NaN left in them
    and ``banner`` on top (:func:`clinician_html`; ``n``: the patients the statistics rest on).
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    if hide_code:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    exporter = HTMLExporter(exclude_input=hide_code, exclude_input_prompt=hide_code, exclude_output_prompt=hide_code)
    body, _ = exporter.from_notebook_node(nb)
    if hide_code:
        body = clinician_html(body, banner, n)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(body)
    return html_path
