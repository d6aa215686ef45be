"""The measure/verdict table (l3seg_lib.measures) and the pixel geometry helpers (l3seg_lib.units):
consistent with what measure writes, the only place the verdict list is written, and the one way
areas in cm² and a slice's spacing are computed."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from l3seg_lib import measures as M
from l3seg_lib.measurement.composition import CutoffSet, assess, measure_slice
from l3seg_lib.measurement.result import COLUMNS
from l3seg_lib.units import pixel_area_cm2, slice_spacing_mm

PACKAGE = Path(__file__).resolve().parents[1] / "l3seg_lib"


def test_table_names_the_columns_measure_writes():
    for m in M.MEASURES:
        assert m.column in COLUMNS
    for v in M.VERDICTS:
        assert v.column in COLUMNS and v.reason_column in COLUMNS
    for field in ("key", "label", "sr_code"):
        values = [getattr(v, field) for v in M.VERDICTS]
        assert len(set(values)) == len(values), field
    assert len({m.key for m in M.MEASURES}) == len(M.MEASURES)
    assert M.VERDICT_KEYS == ("sarcopenia", "sarcopenic_obesity", "myosteatosis", "visceral_obesity")
    assert M.SMI not in M.IMAGE_MEASURES and len(M.IMAGE_MEASURES) == len(M.MEASURES) - 1
    assert M.SMA.short_with_unit == "SMA (cm²)" and M.SMA.name_with_unit == "muscle area (cm²)"


def test_every_cutoff_set_judges_the_conditions_of_the_table():
    fields = [f.name for f in dataclasses.fields(CutoffSet)]
    assert [v.cutoff_key for v in M.VERDICTS] == [f for f in fields if f in M.VERDICT_KEYS]
    labels = np.zeros((10, 10), np.uint8)
    labels[2:8, 2:8] = 1
    out = assess(measure_slice(np.full((10, 10), 40.0), labels, (0.8, 0.8)), {"sex": "F", "height_m": 1.6, "bmi": 22.0})
    assert [k for k in out if k in M.VERDICT_KEYS] == list(M.VERDICT_KEYS)
    assert all(out[v.key] in ("yes", "no", "not computable") and out[v.reason_column] for v in M.VERDICTS)


def _verdict_lists(source: str) -> list[str]:
    """Literal tuples, lists, sets and dict keys of Python ``source`` naming three or more verdict keys."""
    keys = set(M.VERDICT_KEYS)
    found = []
    for n in ast.walk(ast.parse(source)):
        elts = n.keys if isinstance(n, ast.Dict) else n.elts if isinstance(n, (ast.Tuple, ast.List, ast.Set)) else []
        vals = {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        if len(vals & keys) >= 3:
            found.append(f"{n.lineno}: {sorted(vals & keys)}")
    return found


def test_no_module_but_measures_lists_the_verdicts():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel != "measures.py" and (found := _verdict_lists(path.read_text())):
            offenders[rel] = found
    assert not offenders, offenders
    # the scan sees the lists the modules held before the table
    assert _verdict_lists('VERDICTS = ("sarcopenia", "sarcopenic_obesity", "myosteatosis", "visceral_obesity")')
    assert _verdict_lists('V = {"sarcopenia": "Sarcopenia", "myosteatosis": "M", "visceral_obesity": "V"}')


def test_pixel_area_and_slice_spacing():
    assert pixel_area_cm2((0.8, 0.7)) == 0.8 * 0.7 / 100.0
    assert pixel_area_cm2((np.float64(0.8), 0.5)) == pytest.approx(0.004)
    assert slice_spacing_mm((2.5, 0.8, 0.7)) == (0.8, 0.7) and slice_spacing_mm((0.9, 0.6)) == (0.9, 0.6)
    assert all(type(v) is float for v in slice_spacing_mm(np.array([2.0, 0.8, 0.7])))
    with pytest.raises(ValueError, match="spacing must be"):
        slice_spacing_mm((1.0,))


def test_no_module_computes_a_pixel_area_by_hand():
    """``spacing[0] * spacing[1] / 100`` is written only in l3seg_lib/units.py (metrics.areas_cm2
    keeps its own order of operations, which validation.csv's values depend on to the last bit)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ("units.py", "metrics.py"):  # metrics.areas_cm2: counts*row*col/100 (last-bit different order)
            continue
        for n in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and isinstance(n.right, ast.Constant)
                    and n.right.value == 100 and "spacing" in ast.unparse(n.left)):
                offenders.append(f"{rel}:{n.lineno}")
    assert not offenders, offenders
