"""The layout keeps its promises: inference apart from training, no library file tied to the
repository, and the README's layout matching the package tree."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from helpers import body_phantom, write_dicom

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "l3seg_lib"
TRAINING_STACK = ("torch", "albumentations", "sklearn", "bayes_opt", "papermill", "nbformat", "nbconvert", "seaborn",
                  "matplotlib")

_PROBE = """
import json, sys
from l3seg_lib.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _imported_by(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_predict_and_measure_import_neither_torch_nor_the_training_stack(tmp_path, tiny_model):
    hu, _ = body_phantom(64, 64)
    dcm = write_dicom(tmp_path / "in" / "a.dcm", hu)
    for args in (["predict", str(dcm), "--model", str(tiny_model), "--out", str(tmp_path / "p")],
                 ["measure", str(tmp_path / "in"), "--model", str(tiny_model), "--out", str(tmp_path / "m")]):
        result = _imported_by(args)
        assert result["code"] == 0
        loaded = {m.split(".")[0] for m in result["modules"]}
        assert "l3seg_lib" in loaded and "onnxruntime" in loaded
        assert not loaded & set(TRAINING_STACK), f"{args[0]} imported {sorted(loaded & set(TRAINING_STACK))}"
        # nor what only whole series need (scipy.signal: ~50 MB of peak memory for single slices)
        assert "scipy.signal" not in result["modules"], f"{args[0]} imported scipy.signal"
    assert (tmp_path / "p" / "areas.csv").is_file() and (tmp_path / "m" / "measurements.csv").is_file()


def test_inference_never_imports_training():
    for path in (LIB / "inference").glob("*.py"):
        text = path.read_text()
        assert "l3seg_lib.training" not in text and "l3seg_lib.pipeline" not in text, path
        assert "import torch" not in text, path


def test_no_library_file_knows_the_repository_layout():
    for path in LIB.rglob("*.py"):
        text = path.read_text()
        assert "shared/" not in text and "../shared" not in text, f"{path} mentions shared/"
        assert "REPO_ROOT" not in text and "parents[1]" not in text and "parents[2]" not in text, \
            f"{path} resolves paths against the repository"


def test_readme_layout_matches_the_tree():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Repository layout", 1)[1].split("```", 2)[1]
    listed = set()
    folder = ""
    lines = block.strip("\n").splitlines()
    assert lines[0].startswith("l3seg_lib/")
    for line in lines[1:]:
        if not line.startswith(" "):
            break  # the next top-level folder
        m = re.match(r"^  (\w+)/\s", line)
        if m:
            folder = m.group(1)
            continue
        m = re.match(r"^ {2,4}(\w+\.py)\s", line)
        if m:
            listed.add(f"{folder}/{m.group(1)}" if line.startswith("    ") else m.group(1))
    actual = {str(p.relative_to(LIB)) for p in LIB.rglob("*.py") if p.name != "__init__.py"}
    assert listed == actual, f"missing in README: {sorted(actual - listed)}; not in the tree: {sorted(listed - actual)}"


def test_base_install_has_no_training_dependencies():
    """`pip install l3seg` gives inference, measurement and reports; training is the `train` extra."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["dependencies"]}
    train = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["optional-dependencies"]["train"]}
    assert "onnxruntime" in base and not base & {"torch", "scikit-learn", "albumentations", "bayesian-optimization",
                                                 "papermill", "nbformat", "seaborn", "matplotlib"}
    assert {"torch", "onnx", "papermill", "albumentations", "bayesian-optimization"} <= train
