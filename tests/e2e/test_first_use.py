"""What a user meets first: measure on one file or a folder, readable pictures on the patient page
(also in headless Chromium), no NaN and a smoke-test banner on clinician pages and reports."""

from __future__ import annotations

import base64
import html as html_lib
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from helpers import body_phantom, write_dicom
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.measurement.inputs import discover_inputs


def _pictures(html: str) -> list[Image.Image]:
    """The embedded PNG pictures of a page, in page order."""
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


# --- measure takes files and folders alike ---------------------------------------------------

def test_discover_inputs_takes_one_file(tmp_path):
    hu, _ = body_phantom(32, 32)
    path = write_dicom(tmp_path / "one slice.dcm", hu)
    write_dicom(tmp_path / "other.dcm", hu)  # a neighbour in the same folder is not measured
    (entry,) = discover_inputs(path)
    assert entry.image == path


def test_discover_inputs_takes_one_nifti_file(tmp_path):
    path = tmp_path / "example_ct.nii.gz"
    path.write_bytes(b"not read here")  # discovery only lists; reading refuses bad files later
    (entry,) = discover_inputs(path)
    assert entry.image == path


def test_discover_inputs_missing_path_says_not_found(tmp_path):
    with pytest.raises(L3SegInputError, match="not found"):
        discover_inputs(tmp_path / "nowhere.nii.gz")


def test_discover_inputs_folder_unchanged(tmp_path):
    hu, _ = body_phantom(32, 32)
    write_dicom(tmp_path / "a.dcm", hu, patient_id="A")
    write_dicom(tmp_path / "b.dcm", hu, patient_id="B")
    assert len(discover_inputs(tmp_path)) == 2


# --- readable pictures ---------------------------------------------------------------------------

def test_measure_one_coarse_file_gives_a_readable_overlay_with_its_pixel_size(tmp_path, tiny_model):
    from l3seg_lib.measurement.options import MeasureOptions
    from l3seg_lib.measurement.orchestration import measure_folder

    hu, _ = body_phantom(101, 122)
    path = write_dicom(tmp_path / "in" / "coarse.dcm", hu, spacing=(3.0, 3.0), patient_id="COARSE")
    write_dicom(tmp_path / "in" / "neighbour.dcm", hu, spacing=(3.0, 3.0), patient_id="OTHER")
    res = measure_folder(path, tiny_model, tmp_path / "out", MeasureOptions(progress=False))
    assert list(res.measurements["patient_id"]) == ["COARSE"]  # the file given, not its folder
    page = (tmp_path / "out" / "patients" / "COARSE.html").read_text()
    (overlay,) = _pictures(page)
    assert min(overlay.size) >= 512
    assert "CT pixel 3.00 mm" in page and "enlarged 6×" in page


# --- smoke-test banner and no NaN on clinician pages ------------------------------------------

def test_quick_params_carry_the_smoke_test_banner():
    from l3seg_lib.config import load_params
    from l3seg_lib.pipeline.runs import SMOKE_TEST_BANNER, smoke_test_banner

    assert SMOKE_TEST_BANNER in smoke_test_banner(load_params("params/quick.yaml"))
    assert smoke_test_banner(load_params("params/default.yaml")) is None


def test_clinician_html_replaces_nan_outside_tags_and_adds_the_banner():
    from l3seg_lib.pipeline.runner import clinician_html

    png = "iVBORw0KGgo+nan/AAAA"  # base64 may hold 'nan' between + and /: attributes are left alone
    html = (f'<html><head><style>.nan{{}}</style><script>if (isNaN(x)) y = NaN;</script></head><body class="b">'
            f'<p>r = nan, p = NaN</p><td>NaN</td><td>0.5</td><img src="data:image/png;base64,{png}"></body></html>')
    out = clinician_html(html, banner="smoke-test settings — numbers are not results", n=2)
    text = re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]*>", " ", out, flags=re.S)
    assert not re.search(r"\bnan\b", text, re.I)
    assert "r = not computable with n = 2" in out and "<td>not computable with n = 2</td>" in out
    assert png in out and "y = NaN" in out and ".nan{}" in out
    assert out.index("smoke-test settings — numbers are not results") > out.index('<body class="b">')


# --- patient page layout, checked in headless Chromium at 1280 px ------------------------------

_CHROMIUM = next((b for b in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
                  if shutil.which(b)), None)

_LAYOUT_PROBE = """<script>
window.addEventListener('load', () => {
  const els = [...document.querySelectorAll('h1, h2, body > table, .warn, p.note, details, .slice, .caption, .legend')];
  const overlaps = [];
  for (let i = 0; i < els.length; i++) for (let j = i + 1; j < els.length; j++) {
    const a = els[i], b = els[j];
    if (a.contains(b) || b.contains(a)) continue;
    const r = a.getBoundingClientRect(), s = b.getBoundingClientRect();
    const w = Math.min(r.right, s.right) - Math.max(r.left, s.left), h = Math.min(r.bottom, s.bottom) - Math.max(r.top, s.top);
    if (w > 1 && h > 1) overlaps.push(a.className + '/' + a.tagName + ' x ' + b.className + '/' + b.tagName);
  }
  const ov = document.querySelector('img.overlay'), lo = document.querySelector('img.localizer');
  const out = {overlaps, overlay_shown: ov.getBoundingClientRect().width, overlay_px: ov.naturalWidth,
               localizer_shown: lo ? lo.getBoundingClientRect().width : 0, localizer_open: !!document.querySelector('details[open]'),
               scroll_width: document.documentElement.scrollWidth,
               // a padded, bordered box inline in a line of text overlaps the lines above and below it
               inline_warnings: [...document.querySelectorAll('.warn')].filter(e => getComputedStyle(e).display === 'inline').length};
  const pre = document.createElement('pre'); pre.id = 'layout'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _sample_patient_page(out):
    """A patient page with everything that can crowd it: clinical notes, review reasons, series
    notes, localiser notes and picture, a coarse 3 mm overlay."""
    import pandas as pd

    from l3seg_lib.imageio.ct import CTVolume
    from l3seg_lib.localize.l3 import L3Location
    from l3seg_lib.reporting.html import write_patient_html
    from l3seg_lib.reporting.overlays import save_overlay_png
    from l3seg_lib.reporting.review import save_localizer_png

    hu, mask = body_phantom(101, 122)
    save_overlay_png(out / "overlays" / "p.png", hu, mask)
    vol = np.full((60, 101, 122), -1000.0, dtype=np.float32)
    vol[:, 20:80, 20:100] = 40.0
    vol[:, 55:70, 52:70] = 600.0
    note = "the count from the last ribs and the count from the sacrum disagree by one vertebra; the sacrum count was kept"
    loc = L3Location(status="found", reason="", slice_index=30, l3_range=(26, 34), confidence="moderate", notes=[note])
    save_localizer_png(out / "localizer" / "p.png", CTVolume(hu=vol, patient_id="P", source="x", spacing_mm=(3.0, 3.0, 3.0)), loc)
    nan = float("nan")
    r = {"overlay": "overlays/p.png", "slice_index": 30, "source": "/data/scans/patient 0042/example_ct.nii.gz",
         "slice_location_mm": 123.4, "pixel_spacing_row_mm": 3.0, "pixel_spacing_col_mm": 3.0, "sex": "F",
         "age_years": 61.0, "height_m": nan, "weight_kg": 70.0, "bmi_kg_m2": nan,
         "height_source": "PatientSize 165 read as centimetres (1.65 m)", "weight_source": "", "age_source": "",
         "bmi_source": "", "hu_calibrated": True, "series_notes": "3 mm slices; 2 files skipped (scout images)",
         "l3_method": "vertebra count from the sacrum and from the last ribs (bone)", "l3_confidence": "moderate",
         "l3_range": "26-34", "l3_notes": note, "localizer_picture": "localizer/p.png", "review_required": True,
         "review_reasons": "field of view cuts the body at the left; 100 kVp (cut-offs assume 120 kVp)"}
    for k in ("sma_cm2", "sma_refined_cm2", "smi_cm2_m2", "muscle_refined_hu_mean", "muscle_refined_hu_sd",
              "muscle_refined_hu_median", "muscle_hu_mean", "imat_cm2", "sat_cm2", "sat_refined_cm2", "vat_cm2",
              "vat_refined_cm2", "tat_refined_cm2", "vat_sat_ratio_refined"):
        r[k] = 12.3
    for k in ("sarcopenia", "sarcopenic_obesity", "myosteatosis", "visceral_obesity"):
        r[k], r[f"{k}_reason"] = "not computable", "height not available"
    meta = {"hu_ranges": {"muscle": (-29, 150)}, "cutoff_set": "martin2013", "cutoff_description": "Martin et al. 2013",
            "citations": "Martin L, et al. J Clin Oncol 2013.", "model": "default.onnx"}
    return write_patient_html(out / "patients" / "P.html", "P", pd.DataFrame([r]), out, meta)


def test_patient_page_pictures_are_readable_without_a_browser(tmp_path):
    page = _sample_patient_page(tmp_path).read_text()
    localizer, overlay = _pictures(page)
    assert localizer.height >= 512 and min(overlay.size) >= 512
    assert "<details class=\"localizer\" open>" in page  # the localiser picture is shown, not folded away
    assert '<span class="warn">' not in page  # warnings are blocks of their own, never inline in a line of text


@pytest.mark.skipif(_CHROMIUM is None, reason="no headless Chromium installed (apt-get install chromium-headless-shell)")
def test_patient_page_layout_in_headless_chromium_at_1280_px(tmp_path):
    page = _sample_patient_page(tmp_path)
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _LAYOUT_PROBE + "</body>"))
    shot = tmp_path / "page.png"
    args = [_CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1800"]
    dom = subprocess.run([*args, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    subprocess.run([*args, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert Image.open(shot).width == 1280
    layout = json.loads(html_lib.unescape(re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S).group(1)))
    assert layout["overlaps"] == [] and layout["inline_warnings"] == 0
    assert layout["overlay_shown"] >= 512 and layout["localizer_shown"] >= 512 and layout["localizer_open"]
    assert layout["scroll_width"] <= 1280  # nothing wider than the window


@pytest.mark.slow
def test_quick_run_reports_carry_the_banner_and_no_nan(quick_run):
    from l3seg_lib.pipeline.runs import SMOKE_TEST_BANNER

    pages = sorted(quick_run.reports.glob("*.html"))
    assert len(pages) >= 5
    for page in pages:
        html = page.read_text()
        assert SMOKE_TEST_BANNER in html, page.name
        text = re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]*>", " ", html, flags=re.S | re.I)
        assert not re.search(r"(?<![\w.])nan(?!\w)", text, re.I), page.name
    optimise = (quick_run.reports / "03_optimize.html").read_text()
    assert "no gain here is a valid finding" not in optimise  # two test patients conclude nothing


def test_discover_lists_what_it_leaves_out_of_a_folder(tmp_path):
    from l3seg_lib.measurement.inputs import discover

    hu, _ = body_phantom(32, 32)
    write_dicom(tmp_path / "a.dcm", hu)
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a.nii.gz").write_bytes(b"mask")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "scan.raw").write_bytes(b"\\0" * 200)
    inputs, left_out = discover(tmp_path)
    assert [e.image.name for e in inputs] == ["a.dcm"]
    why = dict(left_out)
    assert set(why) == {"masks/", "notes.txt", "scan.raw"}
    assert "NIfTI" in why["masks/"] and "--reference-dir" in why["masks/"]


