"""Params files: loading, validation errors, overrides, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from l3seg_lib.config import Params, load_params, parse_override, save_params
from l3seg_lib.data.cases import label_map_of
from l3seg_lib.errors import L3SegConfigError
from l3seg_lib.phantom import PHANTOM_LABEL_MAP

PARAMS = Path(__file__).resolve().parents[1] / "params"


@pytest.mark.parametrize("name", ["default.yaml", "quick.yaml", "example_own_dicom.yaml"])
def test_shipped_params_load(name):
    p = load_params(PARAMS / name)
    assert isinstance(p, Params)
    assert p.preprocess.window_hu == (-200.0, 800.0)


def test_default_params_match_the_phantom_labels():
    p = load_params(PARAMS / "default.yaml")
    assert label_map_of(p.data) == PHANTOM_LABEL_MAP
    assert p.split.n_folds == 5 and p.preprocess.image_size == 256


def test_default_yaml_mirrors_the_dataclass_defaults():
    """One source of truth: params/default.yaml spells out exactly the dataclass defaults."""
    import yaml

    written = yaml.safe_load((PARAMS / "default.yaml").read_text())
    assert load_params(PARAMS / "default.yaml") == Params()

    def flat(d, prefix=""):  # dotted keys; mappings that are values (label_map, bounds, hu_ranges) stay whole
        out = set()
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("label_map", "bounds", "hu_ranges"):
                out |= flat(v, f"{prefix}{k}.")
            else:
                out.add(prefix + k)
        return out

    assert flat(written) == flat(Params().to_dict())  # every setting written out, none missing


def test_round_trip(tmp_path):
    p = load_params(PARAMS / "default.yaml", {"train.epochs": 3, "optimize.bounds.w_sat": [1, 2]})
    assert p.train.epochs == 3 and p.optimize.bounds["w_sat"] == (1.0, 2.0)
    again = load_params(save_params(p, tmp_path / "p.yaml"))
    assert again == p


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epochz: 3\n", "unknown key(s) epochz"),
        ("train:\n  epochs: many\n", "train.epochs: expected an integer"),
        ("preprocess:\n  window_hu: [800, -200]\n", "low < high"),
        ("preprocess:\n  image_size: 250\n", "multiple of 16"),
        ("data:\n  label_map: {background: [0], muscle: [1], sat: [1], vat: [3]}\n", "value 1 listed under both"),
        ("data:\n  label_map: {background: [0], muscle: [1]}\n", "missing ['sat', 'vat']"),
        ("data:\n  source: manifest\n", "data.manifest is not set"),
        ("optimize:\n  bounds: {w_bone: [1, 2]}\n", "unknown parameter(s) ['w_bone']"),
        ("train: [1, 2]\n", "train: expected a mapping"),
        ("model:\n  norm: layer\n", "model.norm must be"),
        ("device: tpu\n", "device must be auto, cpu or cuda"),
    ],
)
def test_invalid_params_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(L3SegConfigError) as err:
        load_params(path)
    assert message in str(err.value)
    assert "bad.yaml" in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(L3SegConfigError, match="params file not found"):
        load_params(tmp_path / "none.yaml")
    (tmp_path / "x.yaml").write_text("a: [1\n")
    with pytest.raises(L3SegConfigError, match="not valid YAML"):
        load_params(tmp_path / "x.yaml")


def test_parse_override():
    assert parse_override("train.epochs=4") == ("train.epochs", 4)
    assert parse_override("train.class_weights=[1, 2, 2, 1]") == ("train.class_weights", [1, 2, 2, 1])
    with pytest.raises(L3SegConfigError, match="expected key=value"):
        parse_override("train.epochs")


@pytest.mark.parametrize(
    "text, message",
    [
        ("composition:\n  cutoffs: martin2031\n", "composition.cutoffs must be one of ['martin2013', 'fearon2011'], "
                                                  "got 'martin2031'"),
        ("composition:\n  hu_ranges: {musle: [-29, 150]}\n", "composition.hu_ranges: unknown tissue(s) ['musle']"),
        ("composition:\n  hu_ranges: {muscle: [150, -29]}\n", "HU range of muscle must be [low, high] with low < high"),
    ],
)
def test_composition_params_checked_when_loaded(tmp_path, text, message):
    """A bad cut-off set name or HU range is refused when the params file is loaded, naming the
    file and the key, not after training when the composition is first computed."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(L3SegConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_partial_hu_ranges_are_completed_at_load(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("composition:\n  hu_ranges: {muscle: [-30, 150]}\n")
    ranges = load_params(path).composition.hu_ranges
    assert ranges["muscle"] == (-30.0, 150.0) and set(ranges) == set(Params().composition.hu_ranges)


def test_cutoff_set_names_match_the_cutoff_sets():
    from l3seg_lib.config import CUTOFF_SET_NAMES
    from l3seg_lib.measurement.composition import CUTOFF_SETS

    assert set(CUTOFF_SET_NAMES) == set(CUTOFF_SETS)
