"""Hard requirements are permissively licensed (the package is Apache-2.0): no GPL-family licence
in the installed metadata of any base or training dependency."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
COPYLEFT = re.compile(r"\b(A|L)?GPL|GNU (Affero |Lesser )?General Public", re.IGNORECASE)


def _requirements() -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["train"]
    return sorted({re.split(r"[ ;<>=\[!~]", r)[0] for r in reqs})


def test_hard_requirements_are_permissively_licensed():
    checked = 0
    for name in _requirements():
        meta = md.metadata(name)
        texts = [meta.get("License-Expression") or "", (meta.get("License") or "")[:300],
                 *[c for c in meta.get_all("Classifier") or [] if c.startswith("License")]]
        assert not any(COPYLEFT.search(t) for t in texts), f"{name}: {texts}"
        checked += 1
    assert checked >= 20 and "nvidia-ml-py" in _requirements() and "onnxruntime" in _requirements()
