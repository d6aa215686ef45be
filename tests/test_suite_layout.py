"""The tests mirror the library: one folder per package of ``l3seg_lib`` (and ``e2e/`` for the command
line, the notebooks and whole runs), the tests of the whole at the top. The folders are no packages
(pytest's default import mode puts each test file's folder on ``sys.path``), so every test file
name is unique, and ``tests/conftest.py`` is the only conftest (``from conftest import ...``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent
LIB = TESTS.parent / "l3seg_lib"


def _folders() -> list[Path]:
    return sorted(p for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def test_each_test_folder_is_a_package_of_the_library_or_e2e():
    packages = {p.parent.name for p in LIB.glob("*/__init__.py")}
    strays = [p.name for p in _folders() if p.name not in packages | {"e2e"}]
    assert not strays, f"tests/ folders that are no package of l3seg_lib: {strays}"


def test_test_file_names_are_unique_and_there_is_one_conftest():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, k in names.items() if k > 1], f"test files sharing a name: {names.most_common(3)}"
    assert [p.relative_to(TESTS) for p in TESTS.rglob("conftest.py")] == [Path("conftest.py")]
    assert not list(TESTS.rglob("__init__.py")), "test folders are no packages (pytest's prepend import mode)"
    assert all(list(p.glob("test_*.py")) for p in _folders()), "an empty test folder"
