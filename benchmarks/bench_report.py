"""How fast the cohort index of a large batch opens and filters in headless Chromium.

    .venv/bin/python benchmarks/bench_report.py [--patients 500] [--repeats 5] [--width 1400]

Writes a measured batch of ``--patients`` synthetic patients (``tests/report_helpers.py``: the real
writers, some patients with two slices, review reasons of every severity, three refused inputs) to a
temporary folder, then opens its ``index.html`` ``--repeats`` times in a fresh headless Chromium
(``file://``, no server) and prints the medians of: the page's own load time (navigation start to
the end of the load event), one filter (review: high severity), one search, one sort by SMI, and
the whole browser process (start, load, filter, quit). The index must open and filter in under
2 s (the ``open + filter`` line).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

PROBE = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var nav = performance.getEntriesByType('navigation')[0];
  var out = {load_ms: nav.loadEventEnd || performance.now()};
  var rows = document.getElementById('cohort').tBodies[0].rows;
  var t0 = performance.now();
  var sev = document.getElementById('f-sev'); sev.value = 'high'; sev.dispatchEvent(new Event('change'));
  document.body.offsetHeight;  // layout included
  out.filter_ms = performance.now() - t0;
  out.shown = document.getElementById('shown').textContent;
  sev.value = ''; sev.dispatchEvent(new Event('change'));
  t0 = performance.now();
  var q = document.getElementById('q'); q.value = 'syn01'; q.dispatchEvent(new Event('input'));
  document.body.offsetHeight;
  out.search_ms = performance.now() - t0;
  q.value = ''; q.dispatchEvent(new Event('input'));
  var heads = [].slice.call(document.getElementById('cohort').tHead.rows[0].cells);
  t0 = performance.now();
  heads.find(function (h) { return h.textContent.indexOf('SMI') === 0; }).click();
  document.body.offsetHeight;
  out.sort_ms = performance.now() - t0;
  out.rows = rows.length;
  var pre = document.createElement('pre'); pre.id = 'bench'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 0); });
</script>"""


def main() -> None:
    """Build the batch, time the index in Chromium, print the medians."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=1400)
    args = ap.parse_args()
    browser = next((b for b in ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome")
                    if shutil.which(b)), None)
    if browser is None:
        sys.exit("no headless Chromium found (apt-get install chromium)")
    from report_helpers import synthetic_batch

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = synthetic_batch(Path(tmp) / "out", n=args.patients)
        build = time.perf_counter() - t0
        index = out / "index.html"
        size = index.stat().st_size
        probe = out / "_bench.html"
        probe.write_text(index.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                  f"--window-size={args.width},1000", "--dump-dom", probe.as_uri()],
                                 capture_output=True, text=True, timeout=300).stdout
            wall = time.perf_counter() - t0
            found = re.search(r'<pre id="bench">(.*?)</pre>', dom, re.S)
            if not found:
                sys.exit("the probe did not run: " + dom[-500:])
            runs.append({**json.loads(html.unescape(found.group(1))), "wall_s": wall})
    med = {k: statistics.median(r[k] for r in runs) for k in ("load_ms", "filter_ms", "search_ms", "sort_ms", "wall_s")}
    print(f"cohort index: {args.patients} patients, {runs[0]['rows']} rows, index.html {size / 1e6:.2f} MB "
          f"(batch written in {build:.1f} s); {args.repeats} runs in headless Chromium at {args.width} px, medians:")
    print(f"  page load (navigation start to load event end)  {med['load_ms']:8.0f} ms")
    print(f"  filter (review: high severity; {runs[0]['shown']})  {med['filter_ms']:8.1f} ms")
    print(f"  search (patient id)                              {med['search_ms']:8.1f} ms")
    print(f"  sort (SMI)                                       {med['sort_ms']:8.1f} ms")
    print(f"  open + filter                                    {(med['load_ms'] + med['filter_ms']) / 1000:8.2f} s"
          f"  (limit 2 s)")
    print(f"  whole browser process (start, load, filter, quit) {med['wall_s']:7.2f} s")


if __name__ == "__main__":
    main()
