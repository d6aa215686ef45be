"""The layout keeps its promises: layers that only import downwards (checked on the source, every
import statement, in functions too), inference apart from training, no library file tied to the
repository, the research harness (l3seg_lab/) neither imported by the library nor packaged, and the
layout page (docs/layout.md, linked from the README) matching the package tree."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from helpers import body_phantom, write_dicom

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "l3seg_lib"
LAB = REPO / "l3seg_lab"
TRAINING_STACK = ("torch", "albumentations", "sklearn", "bayes_opt", "papermill", "nbformat", "nbconvert", "seaborn",
                  "matplotlib")

LAYERS = ("core", "imageio", "phantom", "data", "preprocessing", "localize", "inference", "models", "reporting",
          "measurement", "node", "evaluation", "training", "pipeline", "cli")
"""The layer order, bottom first; docs/layout.md ("Repository layout") lists the packages in this order.
A module imports only from its own package or a package below it, never one above.

- ``core``: the modules at the top of ``l3seg_lib/`` (errors, names, tissues, config,
  dask_client): what every stage shares; no image library, no model runtime.
- ``imageio`` -> ``phantom`` -> ``data``: reading and writing images; the synthetic data (it
  needs only imageio, and ``data`` knows its label map for ``source: phantom``); what the inputs are.
- ``preprocessing`` -> ``localize`` -> ``inference`` (-> ``models``, the shipped model files):
  model input, which slices, running an ONNX model. Nothing here imports torch or training.
- ``reporting`` -> ``measurement``: pictures and pages are drawn from plain arrays and tables;
  measurement (predict, measure, remeasure) is built on inference and writes its reports with them.
- ``node``: ``l3seg serve``, the DICOM node (pynetdicom): it receives series and measures them with
  measurement's ``measure_folder``; nothing below imports it.
- ``evaluation`` -> ``training``: how good a model is reuses measurement's composition and
  reporting's pictures; training (PyTorch) scores its networks with evaluation's metrics, and its
  studies that retrain (cross-validation, baseline vs optimised, fine-tuning) sit on top.
- ``pipeline`` -> ``cli``: the notebooks and the command line use everything.
"""

LAZY_IMPORTS = {
    # (importing file, imported module): why it is imported inside a function (all are downward)
    ("data/cases.py", "l3seg_lib.phantom.labels"): "only for source: phantom; real manifests never load the generator",
    ("preprocessing/processed.py", "l3seg_lib.phantom"): "the generator, only when the built-in data is made",
    ("pipeline/runner.py", "l3seg_lib.reporting.html"): "Jinja only when the run's index page is written",
    ("training/finetune.py", "l3seg_lib.data.cases"): "the fine-tuning command's stack, loaded when it runs",
    ("training/finetune.py", "l3seg_lib.data.manifest"): "the fine-tuning command's stack, loaded when it runs",
    ("training/finetune.py", "l3seg_lib.evaluation.evaluate"): "the fine-tuning command's stack, loaded when it runs",
    ("training/finetune.py", "l3seg_lib.preprocessing.processed"): "the fine-tuning command's stack, loaded when it runs",
    ("training/finetune.py", "l3seg_lib.reporting.html"): "the fine-tuning command's stack, loaded when it runs",
}
"""Deliberate in-function imports of another package. ``cli.py`` is not listed: each command
imports its own stack when it runs, which keeps torch, the training extra, papermill and
scipy.signal out of ``predict`` and ``measure`` (checked by running them, below)."""


def _layer_of(module: str) -> str | None:
    """The layer of an ``l3seg_lib`` module name (None for other libraries)."""
    parts = module.split(".")
    if parts[0] != "l3seg_lib":
        return None
    if len(parts) == 1 or not (LIB / parts[1]).is_dir():
        return "cli" if parts[1:2] == ["cli"] else "core"
    return parts[1]


def _imports(path: Path):
    """(line, imported module, inside a function) of every l3seg_lib import in ``path``;
    ``from l3seg_lib import phantom`` counts as importing ``l3seg_lib.phantom``."""
    rel = path.relative_to(LIB)
    package = ["l3seg_lib", *rel.parts[:-1]]

    def visit(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child.lineno, alias.name, in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the importing file's package
                    up = package[: len(package) - (child.level - 1)]
                    base = ".".join(up + ([child.module] if child.module else []))
                if base == "l3seg_lib":
                    for alias in child.names:
                        yield child.lineno, f"l3seg_lib.{alias.name}", in_function
                else:
                    yield child.lineno, base, in_function
            yield from visit(child, inner)

    for line, module, lazy in visit(ast.parse(path.read_text(), str(path)), False):
        if _layer_of(module) is not None:
            yield line, module, lazy


def _file_layer(path: Path) -> str:
    rel = path.relative_to(LIB)
    if len(rel.parts) > 1:
        return rel.parts[0]
    return "cli" if rel.stem == "cli" else "core"


def test_every_package_has_a_layer():
    packages = {p.parent.name for p in LIB.glob("*/__init__.py")}
    assert packages <= set(LAYERS), f"packages without a layer in LAYERS: {sorted(packages - set(LAYERS))}"


def test_no_module_imports_a_layer_above_its_own():
    """Every import statement of every library file (module level and inside functions)."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for path in sorted(LIB.rglob("*.py")):
        own = _file_layer(path)
        for line, module, lazy in _imports(path):
            target = _layer_of(module)
            if rank[target] > rank[own]:
                upward.append(f"{path.relative_to(REPO)}:{line} ({own} imports {module}, {target} is above"
                              f"{', inside a function' if lazy else ''})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_lazy_imports_of_other_packages_are_the_documented_ones():
    found = set()
    for path in sorted(LIB.rglob("*.py")):
        rel = str(path.relative_to(LIB))
        if rel == "cli.py":
            continue
        for line, module, lazy in _imports(path):
            if lazy and _layer_of(module) != _file_layer(path):
                found.add((rel, module))
    assert found == set(LAZY_IMPORTS), (f"undocumented lazy imports: {sorted(found - set(LAZY_IMPORTS))}; "
                                        f"listed but gone: {sorted(set(LAZY_IMPORTS) - found)}")


def _layout_section() -> str:
    """docs/layout.md after its "Repository layout" title; the README must link the page."""
    assert "](docs/layout.md)" in (REPO / "README.md").read_text(), "the README does not link docs/layout.md"
    text = (REPO / "docs" / "layout.md").read_text()
    assert text.startswith("# Repository layout\n"), "docs/layout.md must start with its title"
    return text.split("# Repository layout", 1)[1]


def test_layout_page_lists_the_packages_in_layer_order():
    section = _layout_section()
    block = section.split("```", 2)[1]
    folders = re.findall(r"^  (\w+)/", block, flags=re.MULTILINE)
    assert ["core", *folders, "cli"] == list(LAYERS), folders
    assert re.search(r"^  cli\.py", block, flags=re.MULTILINE)
    for name in LAYERS:
        assert f"`{name}`" in section, f"docs/layout.md does not explain the layer {name}"


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
    small = ["--min-matrix", "8", "--min-fov-mm", "10"]  # a 64 px phantom of 0.8 mm: below a real CT slice
    for args in (["predict", str(dcm), "--model", str(tiny_model), "--out", str(tmp_path / "p"), *small],
                 ["measure", str(tmp_path / "in"), "--model", str(tiny_model), "--out", str(tmp_path / "m"), *small]):
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


def _listed_modules(top: str) -> set[str]:
    """The modules docs/layout.md lists under the top-level folder ``top`` (e.g. ``l3seg_lib/``),
    relative to it."""
    block = _layout_section().split("```", 2)[1]
    lines = block.strip("\n").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(top)), None)
    assert start is not None, f"docs/layout.md does not list {top}"
    listed = set()
    folder = ""
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break  # the next top-level folder
        m = re.match(r"^  (\w+)/\s", line)
        if m:
            folder = m.group(1)
            continue
        m = re.match(r"^ {2,4}(\w+\.py)\s", line)
        if m:
            listed.add(f"{folder}/{m.group(1)}" if line.startswith("    ") else m.group(1))
    return listed


def test_layout_page_matches_the_tree():
    block = _layout_section().split("```", 2)[1]
    assert block.strip("\n").splitlines()[0].startswith("l3seg_lib/")
    for root in (LIB, LAB):
        listed = _listed_modules(f"{root.name}/")
        actual = {str(p.relative_to(root)) for p in root.rglob("*.py") if p.name != "__init__.py"}
        assert listed == actual, (f"{root.name}: missing in docs/layout.md: {sorted(actual - listed)}; "
                                  f"not in the tree: {sorted(listed - actual)}")


def test_the_library_never_imports_the_research_harness():
    """l3seg_lab imports l3seg_lib, never the other way round: every import statement of every library
    file (in functions too), and module names given to importlib as strings."""
    found = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if not node.level else []
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if re.fullmatch(r"l3seg_lab(\.\w+)*", node.value) else []
            else:
                continue
            found += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "l3seg_lab"]
    assert not found, "the library imports the research harness:\n" + "\n".join(found)


def test_the_research_harness_is_not_packaged():
    """The wheel holds l3seg_lib only: pyproject's package search, run on the tree, leaves l3seg_lab out."""
    import tomllib

    from setuptools import find_packages

    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(REPO), include=find["include"], exclude=find.get("exclude", ()))
    assert "l3seg_lib" in packages and "l3seg_lib.evaluation" in packages
    assert not [p for p in packages if not p.startswith("l3seg_lib")], packages
    assert (LAB / "__init__.py").is_file()


def test_base_install_has_no_training_dependencies():
    """`pip install l3seg` gives inference, measurement and reports; training is the `train` extra."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["dependencies"]}
    train = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["optional-dependencies"]["train"]}
    assert "onnxruntime" in base and not base & {"torch", "scikit-learn", "albumentations", "bayesian-optimization",
                                                 "papermill", "nbformat", "seaborn", "matplotlib"}
    assert {"torch", "onnx", "papermill", "albumentations", "bayesian-optimization"} <= train
