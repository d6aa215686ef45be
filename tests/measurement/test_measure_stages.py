"""The measurement pipeline's structure: typed image metadata, each source file read once, the
stages' typed result (SliceResult = the CSV columns), no import cycle."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import subprocess
import sys
import typing
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers import body_phantom, write_dicom

from l3seg_lib.imageio.ct import Acquisition, CTImage, CTVolume, ImageMeta, slice_as_volume
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.orchestration import measure_folder
from l3seg_lib.measurement.composition import Answer
from l3seg_lib.measurement.result import (
    CODED,
    COLUMNS,
    OPTIONAL,
    InputResult,
    InputStatus,
    LevelSource,
    MeasureResult,
    SliceResult,
)

SMALL = {"min_matrix": 8, "min_fov_mm": 10.0}
"""MeasureOptions lowered to the floor for the small test phantoms (64 px of 0.7-0.8 mm), below the
64 px / 150 mm a real CT slice at L3 needs (what ``measure`` applies by default)."""


def test_spacing_comes_from_the_affine_and_must_agree_with_it():
    affine = np.diag([-0.7, -0.8, 2.5, 1.0])
    vol = CTVolume(np.zeros((2, 4, 4), np.float32), patient_id="p", source="s", affine=affine,
                   slice_ids=["a", "b"], slice_locations_mm=[0.0, 2.5])
    assert vol.spacing_mm == pytest.approx((2.5, 0.8, 0.7))
    assert vol.slice(1).spacing_mm == pytest.approx((0.8, 0.7))
    assert CTVolume(vol.hu, (2.5, 0.8, 0.7), "p", "s", affine, ["a", "b"], [0.0, 2.5]).spacing_mm == vol.spacing_mm
    with pytest.raises(ValueError, match="disagrees with the affine"):
        CTVolume(vol.hu, (3.0, 0.8, 0.7), "p", "s", affine, ["a", "b"], [0.0, 2.5])
    img = CTImage(np.zeros((4, 4), np.float32), spacing_mm=(0.9, 0.6), source="x")  # no affine: built from the spacing
    assert img.spacing_mm == pytest.approx((0.9, 0.6)) and img.pixel_area_cm2 == pytest.approx(0.0054)


def test_calibration_and_metadata_survive_slicing():
    img = CTImage(np.zeros((4, 4), np.float32), spacing_mm=(1.0, 1.0), source="x.png", hu_calibrated=False,
                  meta=ImageMeta(png_window_hu=[-200.0, 800.0], acquisition=Acquisition(patient_sex="F")))
    vol = slice_as_volume(img)
    assert vol.meta.hu_calibrated is False and vol.slice(0).hu_calibrated is False  # no patching after slice()
    assert vol.meta.png_window_hu == [-200.0, 800.0] and vol.meta.acquisition.patient_sex == "F"
    assert vol.meta.acquisition.kvp is None
    with pytest.raises(TypeError, match="must be an ImageMeta"):  # one kind of metadata: no mapping
        CTImage(img.hu, spacing_mm=(1.0, 1.0), source="x.png", meta={"PatientSex": "F"})
    meta = ImageMeta(source_files=["a.dcm", "b.dcm"], datasets=[None, None])
    assert meta.copy(1).source_files == ["b.dcm"] and meta.file_of(1) == "b.dcm" and meta.file_of(5) == ""


def _series(folder, n=3, patient_id="S1"):
    hu, _ = body_phantom(64, 64)
    return [write_dicom(folder / f"IM{k}.dcm", hu, patient_id=patient_id, series_uid="1.2.826.0.1.3680043.10.2.99",
                        position=(-100.0, -120.0, 50.0 + 3 * k), InstanceNumber=k + 1, SliceThickness="3")
            for k in range(n)]


def test_each_source_file_is_read_once_and_seg_sr_come_from_memory(tmp_path, tiny_model, monkeypatch):
    files = _series(tmp_path / "in" / "S1")
    opened: Counter = Counter()
    real = pydicom.dcmread

    def counting(path, *args, **kwargs):
        opened[str(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    monkeypatch.setattr(pydicom.misc, "is_dicom", lambda p: pytest.fail(f"is_dicom({p}) opens the file again"))
    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out", MeasureOptions(progress=False, **SMALL, dicom=True))
    assert len(res.measurements) == 3 and res.measurements["dicom_seg"].str.endswith("_seg.dcm").all()
    assert {str(f): 1 for f in files} == {k: v for k, v in opened.items() if k.startswith(str(tmp_path / "in"))}
    assert not any(k.startswith(str(tmp_path / "out")) for k in opened)  # its own SEG is not read back


def test_slice_result_fields_are_the_csv_columns_in_order(tmp_path, tiny_model):
    from l3seg_lib.measurement import dicom_out, remeasure
    from l3seg_lib.reporting import html

    _series(tmp_path / "in" / "S1", n=2)
    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out", MeasureOptions(progress=False, **SMALL))
    written = list(pd.read_csv(tmp_path / "out" / "measurements.csv").columns)
    assert written == [c for c in COLUMNS if c not in OPTIONAL]
    for names in (dicom_out.MEASURES, dicom_out.VERDICTS, remeasure.COMPARED):  # what the writers read by name
        assert set(names) <= set(COLUMNS)
    page = inspect.getsource(html.write_patient_html) + inspect.getsource(html._level)
    read = set(re.findall(r"""(?:r|first)(?:\[|\.get\()["']([a-z0-9_]+)["']""", page))
    assert len(read) > 20 and read <= set(COLUMNS), read - set(COLUMNS)
    row = res.measurements.iloc[0].to_dict()
    sr = SliceResult.from_row(row)
    assert sr.to_row().keys() == row.keys()
    with pytest.raises(KeyError, match="not columns"):
        sr.update({"no_such_column": 1})
    back = InputResult.from_dict(json.loads(json.dumps(InputResult("x", rows=[sr]).to_dict())))  # as the ledger keeps it
    assert isinstance(back.rows[0], SliceResult) and back.rows[0].slice_index == sr.slice_index
    assert back.status is InputStatus.MEASURED and back.rows[0].level_source is LevelSource.AS_GIVEN
    assert isinstance(back.rows[0].sarcopenia, Answer) and str(back.rows[0].sarcopenia) == row["sarcopenia"]
    assert res.inputs_measured == 1 and res.inputs_not_measured == 0  # declared fields, filled by write_outputs


def test_what_travels_between_stages_is_typed():
    """No column is typed Any; coded values are enums whose text is the table's; the image metadata
    is read by attribute only."""
    hints = typing.get_type_hints(SliceResult)
    assert not [n for n, t in hints.items() if t is typing.Any], "SliceResult fields typed Any"
    for name, code in CODED.items():
        assert code in typing.get_args(hints[name]), name
    assert str(LevelSource.AS_GIVEN) == f"{LevelSource.AS_GIVEN}" == "as given (level not checked)"
    assert Answer.of(None) == "not computable" and Answer.of(True) is Answer.YES
    assert not isinstance(ImageMeta(), Mapping)
    assert {f.name for f in dataclasses.fields(MeasureResult)} >= {"inputs_measured", "inputs_not_measured"}


@pytest.mark.heavy
def test_no_import_cycle_in_the_measurement_modules():
    """Each module imports on its own, first, in a fresh interpreter; no private name is used across them."""
    for module in ("ledger", "cluster", "stages", "writers", "orchestration", "result", "options", "serial"):
        code = f"import l3seg_lib.measurement.{module}"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    from pathlib import Path

    import l3seg_lib.measurement as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        assert "_Context" not in path.read_text(), path
