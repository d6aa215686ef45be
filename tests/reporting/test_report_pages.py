"""The report pages a clinician reads (issue 34): provisional verdicts, ranked reasons, plain
refusals, the cohort index, the overlay picture; no machine path anywhere a reader looks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import body_phantom
from l3seg_lib.reporting.cohort import patient_rows
from l3seg_lib.reporting.overlays import IMAT_RGB, report_picture_rgb
from l3seg_lib.reporting.reasons import ranked_reasons, split_reasons, verdict_status
from l3seg_lib.reporting.refusals import plain_refusal, strip_paths
from report_helpers import REASONS, synthetic_batch

CUT, NOT_VERIFIED, CONTRAST, THICK, MEDIUM_L3 = REASONS
SOURCE_DIR = "/data/hospital/incoming"


def _text(html: str) -> str:
    """The visible text of a page (scripts, styles and tags dropped)."""
    return re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]*>", " ", html, flags=re.S | re.I)


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    return synthetic_batch(tmp_path_factory.mktemp("report") / "out", n=40, source_dir=SOURCE_DIR)


def test_a_cut_body_makes_the_area_verdicts_provisional_not_the_density_one():
    row = {"sarcopenia": "yes", "sarcopenic_obesity": "no", "myosteatosis": "no", "visceral_obesity": "yes",
           "review_reasons": CUT, "hu_calibrated": True}
    s = verdict_status(row)
    assert s["sarcopenia_status"] == s["visceral_obesity_status"] == s["sarcopenic_obesity_status"] == "provisional"
    assert s["myosteatosis_status"] == "final" and s["review_severity"] == "high"
    assert s["verdicts_provisional_reason"].startswith("body cut by the field of view (sarcopenia")


def test_an_unverified_level_makes_every_verdict_provisional_and_not_computable_stays():
    row = {"sarcopenia": "not computable", "sarcopenic_obesity": "no", "myosteatosis": "yes",
           "visceral_obesity": "no", "review_reasons": NOT_VERIFIED}
    s = verdict_status(row)
    assert s["sarcopenia_status"] == "not computable"
    assert {s[f"{v}_status"] for v in ("sarcopenic_obesity", "myosteatosis", "visceral_obesity")} == {"provisional"}
    clean = verdict_status({**row, "review_reasons": ""})
    assert clean["myosteatosis_status"] == "final" and clean["review_severity"] == "" and not clean["verdicts_provisional_reason"]


def test_reasons_are_ranked_by_severity_and_a_sentence_with_semicolons_stays_whole():
    text = "; ".join([THICK, CONTRAST, MEDIUM_L3, CUT])
    ranked = ranked_reasons(text)
    assert [r.severity for r in ranked] == ["high", "high", "medium", "low"]
    assert ranked[0].text == MEDIUM_L3 and ranked[1].text == CUT  # within a severity: as written
    assert len(split_reasons(text)) == 4  # MEDIUM_L3 holds "; " inside its notes


@pytest.mark.parametrize("src, error, problem, step", [
    ("x.dcm", "not a DICOM file (... the 'DICM' prefix is missing from the header. Use force=True to force reading.)",
     "not a readable DICOM image", "remove it from the folder"),
    ("s", "L3 not located, listed for review: only 2 intervertebral disc(s) found; too few vertebrae to count "
     "(picture: localizer/s.png)", "L3 was not found in this series: only 2 intervertebral disc(s) found",
     "send a longer series"),
    ("e.png", "no air found. Set data.check_hu: false (--no-hu-check) only if the field of view truly contains no air.",
     "do not look like CT Hounsfield units", "--no-hu-check"),
    ("m.dcm", "wrong modality 'MR'", "Not a CT image (modality MR)", "send the CT series"),
    ("q.dcm", "something unforeseen in {p}/q.dcm", "Something unforeseen in q.dcm", "errors.csv"),
])
def test_refusals_are_plain_with_a_next_step_and_no_path(src, error, problem, step):
    source = f"{SOURCE_DIR}/{src}"
    r = plain_refusal(source, f"{source}: " + error.format(p=SOURCE_DIR), picture="localizer/s.png")
    assert problem in r.problem and step in r.next_step and r.name == src
    for text in (r.problem, r.next_step):
        assert "/data/" not in text and "force=True" not in text and "check_hu" not in text


def test_strip_paths_keeps_the_file_name():
    assert strip_paths("read /a/b/c.dcm and C:\\x\\y.nii.gz then ./rel/dir/z.png") == "read c.dcm and y.nii.gz then z.png"


def test_index_has_one_row_per_patient_with_the_median_of_its_slices(batch):
    table = pd.read_csv(batch / "measurements.csv")
    patients = patient_rows(table)
    assert len(patients) == table["patient_id"].nunique() == 40 and len(table) > 40
    two = next(p for p in patients if p["n_slices"] == 2)
    rows = table[table["patient_id"] == two["patient_id"]]
    assert two["sma_refined_cm2"] == pytest.approx(rows["sma_refined_cm2"].median())
    html = (batch / "index.html").read_text()
    assert html.count('<tr data-q="') == 40 and "2 slices, median shown" in html


def test_csv_carries_the_verdict_status(batch):
    table = pd.read_csv(batch / "measurements.csv", keep_default_na=False)
    for col in ("sarcopenia_status", "myosteatosis_status", "review_severity", "verdicts_provisional_reason"):
        assert col in table.columns
    cut = table[table["review_reasons"].str.contains("body cut by the field of view")]
    assert len(cut) and set(cut.loc[cut["sarcopenia"].isin(["yes", "no"]), "sarcopenia_status"]) == {"provisional"}
    clean = table[table["review_reasons"] == ""]
    assert set(clean.loc[clean["sarcopenia"].isin(["yes", "no"]), "sarcopenia_status"]) == {"final"}


def test_pages_are_static_self_contained_and_show_no_machine_path(batch):
    pages = [batch / "index.html", batch / "not_measured.html", *sorted((batch / "patients").glob("*.html"))[:5]]
    for page in pages:
        html = page.read_text()
        assert '<meta name="viewport"' in html, page.name
        assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html), page.name  # nothing from the network
        assert SOURCE_DIR not in html and str(batch) not in html, page.name
        for link in re.findall(r'(?:src|href)="([^"#:]+)"', html):  # every relative link resolves
            assert (page.parent / link).exists(), (page.name, link)
    index = (batch / "index.html").read_text()
    assert "overlays/thumbs/" in index and 'href="measurements.csv"' in index and 'href="not_measured.html"' in index
    refusals = _text((batch / "not_measured.html").read_text())
    assert "What to do" in refusals and "force=True" not in refusals and "check_hu" not in refusals


def test_patient_page_marks_provisional_verdicts_and_links_back(batch):
    table = pd.read_csv(batch / "measurements.csv", keep_default_na=False)
    row = table[(table["sarcopenia_status"] == "provisional")].iloc[0]
    from l3seg_lib.names import safe_name

    html = (batch / "patients" / f"{safe_name(row['patient_id'])}.html").read_text()
    assert 'href="../index.html"' in html and "provisional" in _text(html)
    assert 'class="sev-high"' in html


def test_missing_height_has_one_wording_with_how_to_supply_it(batch):
    table = pd.read_csv(batch / "measurements.csv", keep_default_na=False)
    pid = table[table["height_m"] == ""]["patient_id"].iloc[0]
    text = _text((batch / "patients" / f"{pid}.html").read_text())
    assert text.count("add height_m") >= 2 and "--clinical" in text and "SMI missing" not in text


def test_report_picture_is_cropped_with_the_plain_ct_beside_it_a_scale_bar_and_imat():
    hu, labels = body_phantom(200, 200)
    hu = np.pad(hu, 100, constant_values=-1000.0)
    labels = np.pad(labels, 100)
    hu[150:170, 190:200] = -60.0  # fat inside the muscle ring: IMAT
    rgb = report_picture_rgb(hu, labels, (0.8, 0.8), (-190.0, -30.0))
    assert rgb.shape[0] < 0.6 * hu.shape[0]  # cropped to the body
    half = (rgb.shape[1] - 2) // 2
    plain = rgb[:, : half - 2]
    assert np.all(plain[10:-30, :, 0] == plain[10:-30, :, 1])  # the left panel is plain grey
    assert (np.all(rgb == np.array(IMAT_RGB, np.uint8), axis=-1) | (np.abs(rgb.astype(int) - IMAT_RGB).sum(-1) < 60)).any()
    bottom = rgb[-12:, : half]
    assert (bottom == 255).all(axis=-1).sum() > 20  # the white scale bar


def test_thumbnails_are_small(batch):
    thumbs = sorted((batch / "overlays" / "thumbs").glob("*.png"))
    assert len(thumbs) >= 40
    with Image.open(thumbs[0]) as img:
        assert img.width <= 160


def test_verdict_agreement_gives_cohens_kappa():
    from l3seg_lib.evaluation.evaluate import VERDICTS, verdict_agreement

    df = pd.DataFrame({**{f"{v}_true": ["yes", "no", "yes", "no", "no"] for v in VERDICTS},
                       **{f"{v}_pred": ["yes", "no", "no", "no", "no"] for v in VERDICTS}})
    table = verdict_agreement(df)
    assert table["agreement"].iloc[0] == pytest.approx(0.8)
    assert table["Cohen's kappa"].iloc[0] == pytest.approx((0.8 - 0.56) / 0.44)  # p_e = 0.4*0.2 + 0.6*0.8
    same = verdict_agreement(df.assign(**{f"{v}_pred": "no" for v in VERDICTS}))
    assert np.isnan(same["Cohen's kappa"].iloc[0])  # one verdict throughout: kappa undefined, not 0


def test_auto_evaluates_the_baseline_when_the_comparison_found_the_optimised_model_worse(tmp_path):
    from l3seg_lib.config import Params
    from l3seg_lib.pipeline.runs import Run

    run = Run(tmp_path / "run", Params())
    for model in (run.baseline_model, run.optimised_model):
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(b"onnx")
    assert run.choose_model("auto")[1] == "optimised" and run.optimised_found_worse() == ""
    table = pd.DataFrame({"difference": [-0.013, 0.001, 0.0], "median difference": [-0.012, 0.0, 0.0],
                          "holm p": [0.003, 0.8, 0.9]}, index=["muscle", "sat", "vat"])
    table.to_csv(run.optimize_dir / "comparison.csv")
    assert run.choose_model("auto")[1] == "baseline" and run.choose_model("optimised")[1] == "optimised"
    assert "muscle Dice (mean difference -0.013, Holm-adjusted p 0.003)" in run.optimised_found_worse()
    table.loc["sat", ["holm p", "median difference"]] = [0.01, 0.02]  # better on SAT: a trade-off, not worse
    table.to_csv(run.optimize_dir / "comparison.csv")
    assert run.choose_model("auto")[1] == "optimised"
