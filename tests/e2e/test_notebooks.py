"""The notebook pipeline: nbval over the five notebooks with quick parameters, the papermill
runner (run folder, HTML reports), and a failing notebook stopping the run with its cell named."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pandas as pd
import papermill as pm
import pytest

from l3seg_lib.config import load_params
from l3seg_lib.errors import PipelineError
from l3seg_lib.pipeline.runner import NOTEBOOKS, run_pipeline
from l3seg_lib.pipeline.runs import create_run

from conftest import QUICK, REPO

NBVAL_SMALLER = {  # quick.yaml smaller still: nbval checks that the notebooks run, not what they find
    "data.phantom.n_patients": 8, "data.phantom.matrix": 128, "data.phantom.slices_per_patient": [1, 1],
    "preprocess.image_size": 32, "train.epochs": 1, "optimize.compare_seeds": 1,
}
pytestmark = pytest.mark.heavy  # notebooks run in kernels: out of make test-fast


def test_notebooks_are_committed_clean():
    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
        assert "run_dir" in tagged[0].source and "params_file" in tagged[0].source
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name}: commit notebooks without outputs"
        assert nb.cells[0].cell_type == "markdown", f"{name}: should open by saying what it does"


@pytest.mark.slow
def test_nbval_on_the_notebooks(tmp_path):
    """Each notebook, prepared by papermill with a quick run folder, passes nbval (lax)."""
    run = create_run(load_params(QUICK, NBVAL_SMALLER), run_dir=tmp_path / "run")
    prepared = []
    for name in NOTEBOOKS:
        dst = tmp_path / "nb" / f"{name}.ipynb"
        dst.parent.mkdir(exist_ok=True)
        pm.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(dst), parameters={"run_dir": str(run.dir)},
                            prepare_only=True)
        prepared.append(str(dst))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), *prepared], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert (run.dir / "evaluate" / "per_slice.csv").is_file()


@pytest.mark.slow
def test_runner_writes_run_folder_and_report(quick_run):
    d, logs = quick_run.dir, quick_run.logs
    assert load_params(d / "params.yaml").name == "quick-t"
    for name in NOTEBOOKS:
        nb = nbformat.read(d / "notebooks" / f"{name}.ipynb", as_version=4)
        assert nb.metadata["papermill"]["parameters"]["run_dir"] == str(d)
    for f in ("processed/manifest.csv", "processed/split.csv", "train/model.pt", "train/model.onnx", "train/cv_folds.csv",
              "optimize/trials.jsonl", "optimize/best_params.yaml", "optimize/comparison.csv",
              "evaluate/per_slice.csv", "evaluate/predictions.npz", "figures/05_area_agreement.png"):
        assert (d / f).is_file(), f
    summary = json.loads((d / "evaluate" / "summary.json").read_text())
    assert 0.0 <= summary["mean_fg_dice"] <= 1.0
    # the comparison reuses the cross-validation's baseline (its first seed) instead of training it again
    assert not (d / "optimize" / "seed42" / "baseline").exists() and (d / "optimize" / "seed43" / "baseline").is_dir()
    assert len(pd.read_csv(d / "optimize" / "test_baseline.csv")["seed"].unique()) == 2
    report = quick_run.reports
    index = (report / "index.html").read_text()
    assert all(f"{n}.html" in index for n in NOTEBOOKS)
    html = (report / "04_evaluate.html").read_text()
    assert "Segmentation quality per tissue" in html
    assert "skeletal muscle" in html and "Dice mean" in html  # the Dice table
    assert "evaluate_cases(" not in html and "import pandas" not in html  # code hidden
    assert "data:image/png;base64" in (report / "05_visualize.html").read_text()
    assert any("[05_visualize] done" in line for line in logs)


def test_failing_notebook_names_the_cell_and_keeps_outputs(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    nb = nbformat.read(REPO / "notebooks" / "01_preprocess.ipynb", as_version=4)
    nb.cells = nb.cells[:3] + [nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    nbformat.write(nb, src / "01_preprocess.ipynb")
    with pytest.raises(PipelineError) as err:
        run_pipeline(QUICK, run_dir=tmp_path / "run", reports_dir=None, notebooks_dir=src, log=lambda *_: None)
    msg = str(err.value)
    assert "notebook 01_preprocess failed in cell 4" in msg and "broken on purpose" in msg
    executed = tmp_path / "run" / "notebooks" / "01_preprocess.ipynb"
    assert executed.is_file() and str(executed) in msg
    assert (tmp_path / "run" / "params.yaml").is_file()


def _stand_in_notebooks(folder):
    """Trivial notebooks that only mark that they ran: for testing the runner's choices."""
    folder.mkdir()
    for name in NOTEBOOKS:
        book = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell('run_dir = ""')
        cell.metadata["tags"] = ["parameters"]
        book.cells = [cell, nbformat.v4.new_code_cell(f"open(run_dir + '/{name}.done', 'w').close()")]
        book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(book, folder / f"{name}.ipynb")
    return folder


def test_disabled_optimisation_skips_its_notebook(tmp_path):
    logs = []
    src = _stand_in_notebooks(tmp_path / "notebooks")
    run = run_pipeline(QUICK, {"optimize.enabled": False}, run_dir=tmp_path / "run", reports_dir=tmp_path / "rep",
                       notebooks_dir=src, log=logs.append)
    assert not (run.dir / "03_optimize.done").exists() and (run.dir / "04_evaluate.done").exists()
    assert any("skipped" in line for line in logs)


def test_partial_rerun_keeps_the_report_index_whole(tmp_path):
    src = _stand_in_notebooks(tmp_path / "notebooks")
    rep = tmp_path / "rep"
    run = run_pipeline(QUICK, {"optimize.enabled": False}, run_dir=tmp_path / "run", reports_dir=rep,
                       notebooks_dir=src, log=lambda *_: None)
    (run.dir / "05_visualize.done").unlink()
    run_pipeline(QUICK, run_dir=run.dir, reports_dir=rep, notebooks_dir=src, only=["05_visualize"],
                 log=lambda *_: None)
    assert (run.dir / "05_visualize.done").exists() and not (run.dir / "03_optimize.done").exists()
    index = (rep / run.id / "index.html").read_text()
    for name in ("01_preprocess", "02_train", "04_evaluate", "05_visualize"):
        assert f'href="{name}.html"' in index and (rep / run.id / f"{name}.html").is_file()
    assert "03_optimize" not in index
