"""The reference tool (experiments/reference/): the method on a tiny generated slice with a YAML
of seeds, clear errors for bad hand-input files, and (skipped with a message when ../shared/data
is absent) that the converted ACRIN z051 hand inputs reproduce the shared reference."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytest.importorskip("skimage", reason="the reference tool needs scikit-image")

from experiments.reference import tool  # noqa: E402
from experiments.reference.inputs import load_inputs  # noqa: E402
from l3seg_lib.errors import L3SegInputError  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def _phantom(tmp_path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Display image 120x120, 1 mm pixels: fat disc (r 50) around a muscle ring (r 30..37) around a
    fat cavity holding an organ disc (40 HU) that touches the ring at the right."""
    yy, xx = np.mgrid[:120, :120]
    r = np.hypot(yy - 60, xx - 60)
    d = np.full((120, 120), -1000, np.int16)
    d[r <= 50] = -100
    ring = (r >= 30) & (r <= 37)
    d[ring] = 40
    organ = np.hypot(yy - 60, xx - 78) <= 13  # reaches r = 31, into the ring
    d[organ & (r < 30)] = 45
    img = nib.Nifti1Image(d.T[:, :, None].copy(), np.diag([-1.0, -1.0, 1.0, 1.0]))  # L,P,S: display = arr.T
    nib.save(img, tmp_path / "phantom.nii.gz")
    masks = dict(ring=ring & (r >= 31) & (r <= 36), sat=(r >= 39) & (r <= 48), cavity=(r <= 28) & ~organ,
                 organ=organ & (r < 29))
    return d, masks


YAML = """patient: phantom
level: L3
source: {kind: nifti, path: phantom.nii.gz, index: 0}
options: {vert_close_mm: 3.0}
muscle_seeds: [[60, 26], [26, 60], [60, 94], [94, 60], [36, 36], [84, 84]]
organ_seeds: [[80, 60]]
"""


def test_synthetic_slice_gives_the_right_classes(tmp_path):
    _, m = _phantom(tmp_path)
    inputs = tmp_path / "inputs" / "phantom"
    inputs.mkdir(parents=True)
    (inputs / "z000.yaml").write_text(YAML)
    out = tmp_path / "out"
    rc = tool.main(["--data", str(tmp_path), "--out", str(out), "--inputs", str(tmp_path / "inputs"), "--no-pictures"])
    assert rc == 0
    lab = np.asanyarray(nib.load(out / "phantom" / "phantom_L3_z000_ref.nii.gz").dataobj)[:, :, 0].T
    assert (lab[m["ring"]] == 1).mean() > 0.97
    assert (lab[m["sat"]] == 2).mean() > 0.97
    assert (lab[m["cavity"]] == 3).mean() > 0.9
    # the seeded organ that touches the ring is not muscle, and not fat either
    assert (lab[m["organ"]] == 0).mean() > 0.95
    assert (out / "phantom" / "areas.csv").read_text().count("z000") == 1


def test_yaml_problems_name_the_file(tmp_path):
    p = tmp_path / "z001.yaml"
    p.write_text(YAML.replace("muscle_seeds:", "musle_seeds:"))
    with pytest.raises(L3SegInputError, match="z001.yaml.*musle_seeds"):
        load_inputs(p)
    p.write_text(YAML.replace("[60, 26]", "[60]"))
    with pytest.raises(L3SegInputError, match="z001.yaml.*muscle_seeds"):
        load_inputs(p)
    p.write_text("patient: [unclosed")
    with pytest.raises(L3SegInputError, match="not valid YAML"):
        load_inputs(p)


def test_point_outside_image_and_missing_data(tmp_path):
    _phantom(tmp_path)
    inputs = tmp_path / "inputs" / "phantom"
    inputs.mkdir(parents=True)
    (inputs / "z000.yaml").write_text(YAML.replace("[80, 60]", "[500, 60]"))
    rc = tool.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--inputs", str(tmp_path / "inputs"),
                    "--no-pictures"])
    assert rc == 2
    assert tool.main(["--data", str(tmp_path / "nope"), "--inputs", str(tmp_path / "inputs")]) == 2


@pytest.mark.skipif(not (DATA / "acrin_example").is_dir(), reason=f"shared real CT not found at {DATA}")
def test_acrin_z051_reproduces_the_shared_reference(tmp_path):
    rc = tool.main(["--data", str(DATA), "--out", str(tmp_path), "--patient", "acrin", "--slice", "z051",
                    "--no-pictures"])
    assert rc == 0
    mine = nib.load(tmp_path / "acrin" / "acrin_L3_z051_ref.nii.gz")
    ref = nib.load(DATA / "acrin_example" / "l3_reference" / "acrin001_z051_ref.nii.gz")
    assert np.allclose(mine.affine, ref.affine, atol=1e-4)
    d = tool.dice_per_class(np.asanyarray(mine.dataobj), np.asanyarray(ref.dataobj))
    assert min(d.values()) >= 0.99, d
