"""Area maths against hand-computed masks, refinement, IMAT, density, and every published cut-off
on both sides of its threshold for both sexes."""

from __future__ import annotations

import numpy as np
import pytest

from l3seg_lib.measurement.composition import (
    CUTOFF_SETS,
    assess,
    measure_slice,
    myosteatosis_martin2013,
    sarcopenia_fearon2011,
    sarcopenia_martin2013,
    sarcopenic_obesity_prado2008,
    visceral_obesity_100,
)


@pytest.fixture
def hand_slice():
    """10 x 20 pixels of 0.8 x 0.5 mm (0.004 cm2 each) with known tissue pixels."""
    labels = np.zeros((10, 20), dtype=np.uint8)
    hu = np.full((10, 20), -1000.0)
    labels[0:4, 0:10] = 1  # 40 muscle pixels: 30 at 50 HU, 6 at -100 HU (IMAT), 4 at 200 HU (outside)
    hu[0:4, 0:10] = 50.0
    hu[0, 0:6] = -100.0
    hu[1, 0:4] = 200.0
    labels[5:10, 0:10] = 2  # 50 SAT pixels, 45 at -100 HU, 5 at 0 HU (septa)
    hu[5:10, 0:10] = -100.0
    hu[5, 0:5] = 0.0
    labels[5:10, 10:20] = 3  # 50 VAT pixels, 40 at -90 HU, 10 at -180 HU (outside VAT range)
    hu[5:10, 10:20] = -90.0
    hu[5, 10:20] = -180.0
    return hu, labels


def test_areas_anisotropic_spacing(hand_slice):
    hu, labels = hand_slice
    m = measure_slice(hu, labels, (0.8, 0.5))
    px = 0.8 * 0.5 / 100
    assert m["sma_cm2"] == pytest.approx(40 * px)
    assert m["sat_cm2"] == pytest.approx(50 * px)
    assert m["vat_cm2"] == pytest.approx(50 * px)
    assert m["tat_cm2"] == pytest.approx(100 * px)
    assert m["sma_refined_cm2"] == pytest.approx(30 * px)
    assert m["imat_cm2"] == pytest.approx(6 * px)
    assert m["sat_refined_cm2"] == pytest.approx(45 * px)
    assert m["vat_refined_cm2"] == pytest.approx(40 * px)
    assert m["vat_sat_ratio"] == pytest.approx(1.0)
    assert m["vat_sat_ratio_refined"] == pytest.approx(40 / 45)
    # swapping the spacing order must not change areas
    assert measure_slice(hu, labels, (0.5, 0.8))["sma_cm2"] == pytest.approx(m["sma_cm2"])


def test_muscle_density(hand_slice):
    hu, labels = hand_slice
    m = measure_slice(hu, labels, (1.0, 1.0))
    comp = np.array([50.0] * 30 + [-100.0] * 6 + [200.0] * 4)
    assert m["muscle_hu_mean"] == pytest.approx(comp.mean(), abs=1e-3)
    assert m["muscle_hu_median"] == pytest.approx(50.0)
    assert m["muscle_hu_sd"] == pytest.approx(comp.std(ddof=1), abs=1e-3)
    assert m["muscle_refined_hu_mean"] == pytest.approx(50.0) and m["muscle_refined_hu_sd"] == pytest.approx(0.0)
    assert m["hu_range_muscle"] == "-29..150"


def test_custom_ranges_and_png_density_rule(hand_slice):
    hu, labels = hand_slice
    m = measure_slice(hu, labels, (1.0, 1.0), {"muscle": (-30.0, 250.0)})
    assert m["sma_refined_cm2"] == pytest.approx(34 / 100)
    assert m["hu_range_muscle"] == "-30..250"
    ok = measure_slice(hu, labels, (1, 1), hu_calibrated=False, png_window_hu=(-200, 800))
    assert ok["muscle_refined_hu_mean"] == pytest.approx(50.0) and ok["hu_calibrated"] is False
    narrow = measure_slice(hu, labels, (1, 1), hu_calibrated=False, png_window_hu=(-100, 100))
    assert np.isnan(narrow["muscle_refined_hu_mean"])  # clipped values would bias the density
    with pytest.raises(ValueError, match="differ in shape"):
        measure_slice(hu, labels[:5], (1, 1))


def test_partial_ranges_keep_the_other_defaults_and_imat(hand_slice):
    """{muscle: [-30, 150]} changes the muscle range only: SAT, VAT and IMAT keep the defaults."""
    hu, labels = hand_slice
    full = measure_slice(hu, labels, (1.0, 1.0))
    part = measure_slice(hu, labels, (1.0, 1.0), {"muscle": (-30.0, 150.0)})
    assert part["imat_cm2"] == full["imat_cm2"] > 0
    assert {k: part[f"hu_range_{k}"] for k in ("sat", "vat", "imat")} == \
        {k: full[f"hu_range_{k}"] for k in ("sat", "vat", "imat")} == {"sat": "-190..-30", "vat": "-150..-50", "imat": "-190..-30"}
    assert part["hu_range_muscle"] == "-30..150"
    with pytest.raises(ValueError, match="unknown tissue"):
        measure_slice(hu, labels, (1.0, 1.0), {"fat": (-190.0, -30.0)})


@pytest.mark.parametrize("sex, bmi, cut", [("M", 24.9, 43.0), ("M", 25.0, 53.0), ("F", 22.0, 41.0), ("F", 31.0, 41.0)])
def test_sarcopenia_martin2013_both_sides(sex, bmi, cut):
    assert sarcopenia_martin2013(cut - 0.1, sex, bmi).value is True
    assert sarcopenia_martin2013(cut, sex, bmi).value is False
    assert sarcopenia_martin2013(cut + 0.1, sex, bmi).value is False


def test_sarcopenia_martin2013_missing_inputs():
    assert sarcopenia_martin2013(40.0, None, 22.0).value is None
    assert sarcopenia_martin2013(48.0, "M", None).value is None  # men need BMI between 43 and 53
    assert sarcopenia_martin2013(40.0, "M", None).value is True  # below both men's cut-offs: BMI not needed
    assert sarcopenia_martin2013(53.0, "M", None).value is False  # at or above both
    assert sarcopenia_martin2013(40.0, "F", None).value is True  # women do not
    assert "SMI missing" in sarcopenia_martin2013(None, "F", 20.0).reason


@pytest.mark.parametrize("sex, cut", [("M", 55.0), ("F", 39.0)])
def test_sarcopenia_fearon2011_both_sides(sex, cut):
    assert sarcopenia_fearon2011(cut - 0.01, sex).value is True
    assert sarcopenia_fearon2011(cut, sex).value is False


@pytest.mark.parametrize("sex, cut", [("M", 52.4), ("F", 38.5)])
def test_sarcopenic_obesity_prado2008_both_sides_and_sexes(sex, cut):
    assert sarcopenic_obesity_prado2008(cut - 0.1, sex, 30.0).value is True
    assert sarcopenic_obesity_prado2008(cut, sex, 30.0).value is False
    assert sarcopenic_obesity_prado2008(cut - 0.1, sex, 29.9).value is False  # not obese
    assert sarcopenic_obesity_prado2008(cut - 0.1, sex, None).value is None


def test_prado2008_sexes_are_not_swapped():
    # a woman with SMI 45 is above her cut-off (38.5); a man with SMI 45 is below his (52.4)
    assert sarcopenic_obesity_prado2008(45.0, "F", 33.0).value is False
    assert sarcopenic_obesity_prado2008(45.0, "M", 33.0).value is True
    assert sarcopenic_obesity_prado2008(40.0, "F", 33.0).value is False
    assert sarcopenic_obesity_prado2008(38.0, "F", 33.0).value is True


@pytest.mark.parametrize("bmi, cut", [(24.9, 41.0), (25.0, 33.0)])
def test_myosteatosis_martin2013_both_sides(bmi, cut):
    assert myosteatosis_martin2013(cut - 0.1, bmi).value is True
    assert myosteatosis_martin2013(cut, bmi).value is False
    assert myosteatosis_martin2013(np.nan, bmi).value is None


def test_visceral_obesity_both_sides():
    assert visceral_obesity_100(99.9).value is False
    assert visceral_obesity_100(100.0).value is True
    assert visceral_obesity_100(None).value is None


def test_assess_combines_and_cites(hand_slice):
    measures = {"sma_refined_cm2": 120.0, "vat_refined_cm2": 150.0, "muscle_refined_hu_mean": 30.0}
    out = assess(measures, {"sex": "F", "height_m": 1.6, "weight_kg": 80.0})
    assert out["smi_cm2_m2"] == pytest.approx(120 / 1.6**2, abs=0.01)
    assert out["bmi_kg_m2"] == pytest.approx(80 / 1.6**2, abs=0.01)
    assert out["sarcopenia"] == "no"  # 46.9 >= 41
    assert out["sarcopenic_obesity"] == "no"  # BMI 31.25, SMI 46.9 >= 38.5
    assert out["myosteatosis"] == "yes"  # 30 < 33 HU at BMI >= 25
    assert out["visceral_obesity"] == "yes"
    assert out["cutoff_set"] == "martin2013" and "martin2013" in out["cutoff_references"]
    missing = assess(measures, {"sex": None, "height_m": None})
    assert missing["smi_cm2_m2"] is None
    assert missing["sarcopenia"] == "not computable"
    assert missing["myosteatosis"] == "yes"  # 30 HU < 33 and < 41: every BMI group's cut-off agrees
    assert "BMI not needed" in missing["myosteatosis_reason"]
    between = assess({**measures, "muscle_refined_hu_mean": 36.0}, {"sex": None, "height_m": None})
    assert between["myosteatosis"] == "not computable" and "between" in between["myosteatosis_reason"]
    assert assess({**measures, "muscle_refined_hu_mean": 41.0}, {})["myosteatosis"] == "no"
    assert missing["visceral_obesity"] == "yes"  # needs no clinical variables
    assert all(cs.citation_text().startswith("[1]") for cs in CUTOFF_SETS.values())
    with pytest.raises(ValueError, match="unknown cut-off set"):
        assess(measures, {}, "nope")
