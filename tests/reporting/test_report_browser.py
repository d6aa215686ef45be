"""The report pages in a real browser (headless Chromium), at desktop (1,400 px) and phone
(390 px) width: the index, a patient page and the refusals page. Checks what a clinician needs: no
horizontal overflow, review reasons visible, every link resolves, sorting and filtering work, no
machine path in the text. Skips, saying so, where no Chromium is installed
(``apt-get install chromium``)."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

from l3seg_lib.names import safe_name
from report_helpers import synthetic_batch

BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "google-chrome-stable")
BROWSER = next((b for b in BROWSERS if shutil.which(b)), None)
pytestmark = [pytest.mark.heavy, pytest.mark.skipif(BROWSER is None, reason=(  # a browser per page: out of test-fast
    "no headless Chromium on this machine (looked for " + ", ".join(BROWSERS) + "): install it with "
    "'apt-get install chromium' to run the browser checks of the report pages"))]

SOURCE_DIR = "/data/hospital/incoming"
WIDTHS = (1400, 390)
MACHINE_PATH = re.compile(r"(?:^|[\s(\"'])(?:/(?:data|tmp|home|work|root|Users|var|mnt|srv)/|[A-Za-z]:\\)")
RAW_COLUMN = re.compile(r"\b\w+_(?:cm2|cm2_m2|hu_mean|refined)\b|\breview_reasons\b")

PROBE = """<script>
window.addEventListener('load', function () {
  var all = function (sel) { return [].slice.call(document.querySelectorAll(sel)); };
  var shown = function (el) { var r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none'; };
  var out = {inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
    wide: all('body *').filter(function (e) { return shown(e) && e.getBoundingClientRect().right > window.innerWidth + 1; })
      .slice(0, 5).map(function (e) { return e.tagName + '.' + e.className; }),
    reasons: all('ul.reasons li').filter(shown).length,
    steps: all('p.next, td[data-label="What to do"]').filter(shown).length,
    links: all('a[href]').map(function (e) { return e.getAttribute('href'); })
      .concat(all('img[src]').map(function (e) { return e.getAttribute('src'); })),
    text: document.body.innerText};
  var t = document.getElementById('cohort');
  if (t) {
    var heads = [].slice.call(t.tHead.rows[0].cells);
    var col = heads.findIndex(function (h) { return h.textContent.indexOf('SMI') === 0; });
    var visible = function () { return [].slice.call(t.tBodies[0].rows).filter(function (r) { return !r.hidden; }); };
    var values = function () { return visible().map(function (r) { return r.cells[col].dataset.v; }); };
    heads[col].click(); out.asc = values();
    heads[col].click(); out.desc = values();
    var sev = document.getElementById('f-sev');
    var t0 = performance.now();
    sev.value = 'high'; sev.dispatchEvent(new Event('change'));
    out.filter_ms = performance.now() - t0;
    out.high = visible().map(function (r) { return r.dataset.sev; });
    out.shown_text = document.getElementById('shown').textContent;
    sev.value = ''; sev.dispatchEvent(new Event('change'));
    var q = document.getElementById('q'); q.value = 'syn0003'; q.dispatchEvent(new Event('input'));
    out.search = visible().map(function (r) { return r.dataset.q.split(' ')[0]; });
    q.value = ''; q.dispatchEvent(new Event('input'));
    var find = document.getElementById('f-find'); find.value = 'sarcopenia'; find.dispatchEvent(new Event('change'));
    out.sarcopenia = visible().map(function (r) { return r.dataset.sarcopenia; });
    out.total = t.tBodies[0].rows.length;
  }
  parent.postMessage(JSON.stringify(out), '*');
});
</script>"""
FRAME = """<!doctype html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe src="{src}" style="width:{w}px;height:{h}px;border:0;display:block"></iframe>
<script>window.addEventListener('message', function (e) {{
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = e.data; document.body.appendChild(pre); }});
</script></body></html>"""
"""The page is opened in an iframe of the width under test: a headless window is never narrower
than 500 px, an iframe is as narrow as asked, and its media queries follow its own width."""


def probe(page: Path, width: int, height: int = 900) -> dict:
    """Open ``page`` (a copy with :data:`PROBE` added, beside it) at ``width`` px in headless
    Chromium and return what the probe found."""
    copy = page.with_name(f"_probe_{width}_{page.name}")
    frame = page.with_name(f"_frame_{width}_{page.name}")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    frame.write_text(FRAME.format(src=copy.name, w=width, h=height), encoding="utf-8")
    try:
        args = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                f"--window-size={max(width, 800)},{height}", "--virtual-time-budget=10000", "--dump-dom", frame.as_uri()]
        dom = subprocess.run(args, capture_output=True, text=True, timeout=180).stdout
    finally:
        copy.unlink()
        frame.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run in {page.name} at {width} px"
    return json.loads(html_lib.unescape(found.group(1)))


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    return synthetic_batch(tmp_path_factory.mktemp("browser") / "out", n=40, source_dir=SOURCE_DIR)


def _pages(batch: Path) -> dict[str, Path]:
    table = pd.read_csv(batch / "measurements.csv", keep_default_na=False)
    provisional = table[table["review_severity"] == "high"]["patient_id"].iloc[0]
    no_height = table[table["height_m"] == ""]["patient_id"].iloc[0]
    return {"index": batch / "index.html", "patient": batch / "patients" / f"{safe_name(provisional)}.html",
            "no height": batch / "patients" / f"{safe_name(no_height)}.html", "refusal": batch / "not_measured.html"}


def _common_checks(name: str, page: Path, width: int, found: dict, batch: Path) -> None:
    assert found["inner"] == width, (name, found["inner"])
    assert found["scroll"] <= width and not found["wide"], (name, width, found["scroll"], found["wide"])
    for link in found["links"]:
        if link.startswith(("#", "data:image/png;base64,")):  # within the page; pictures embedded
            continue
        assert not re.match(r"^[a-z]+:", link), (name, link)  # relative: the folder works zipped and mailed
        assert (page.parent / unquote(link.split("#")[0])).exists(), (name, link)
    text = found["text"]
    assert not MACHINE_PATH.search(text) and str(batch) not in text, (name, MACHINE_PATH.search(text))
    assert not RAW_COLUMN.search(text), (name, RAW_COLUMN.search(text))


@pytest.mark.parametrize("width", WIDTHS)
def test_index_in_chromium(batch, width):
    page = _pages(batch)["index"]
    found = probe(page, width)
    _common_checks("index", page, width, found, batch)
    assert found["reasons"] > 5  # the reasons themselves are on screen, not in a tooltip
    assert found["total"] == 40
    asc = [float(v) for v in found["asc"] if v]
    desc = [float(v) for v in found["desc"] if v]
    assert len(asc) > 30 and asc == sorted(asc) and desc == sorted(desc, reverse=True)
    assert found["asc"][-1] == ""  # patients without SMI sort last
    assert found["high"] and set(found["high"]) == {"high"} and found["shown_text"] == f"{len(found['high'])} of 40 shown"
    assert found["search"] == ["syn0003"]
    assert found["sarcopenia"] and set(found["sarcopenia"]) == {"yes"}


@pytest.mark.parametrize("width", WIDTHS)
def test_patient_page_in_chromium(batch, width):
    page = _pages(batch)["patient"]
    found = probe(page, width, 1600)
    _common_checks("patient", page, width, found, batch)
    assert found["reasons"] >= 1 and "provisional" in found["text"]
    assert "../index.html" in found["links"]


@pytest.mark.parametrize("width", WIDTHS)
def test_patient_page_without_height_in_chromium(batch, width):
    page = _pages(batch)["no height"]
    found = probe(page, width, 1600)
    _common_checks("no height", page, width, found, batch)  # the long "how to supply height" fits too
    assert "add height_m" in found["text"]


@pytest.mark.parametrize("width", WIDTHS)
def test_refusal_page_in_chromium(batch, width):
    page = _pages(batch)["refusal"]
    found = probe(page, width)
    _common_checks("refusal", page, width, found, batch)
    assert found["steps"] == 3 and "What to do" in found["text"] and "index.html" in found["links"]
    assert "force=True" not in found["text"] and "check_hu" not in found["text"]
