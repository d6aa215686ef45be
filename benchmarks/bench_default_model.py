"""The shipped default model against another model file, side by side in one run (issue 26's
inference budget: at most 0.3 s per slice on 2 CPU cores).

    .venv/bin/python benchmarks/bench_default_model.py [--other MODEL.onnx] [--repeats 15]

Per model, the median of ``--repeats`` runs of :meth:`Predictor.predict_hu` on one 512x512 phantom
slice (0.78 mm pixels): preprocessing, the network (all ensemble members) and post-processing,
one slice at a time; and the same per slice for a batch of 8 slices (``predict_many``). Without
``--other`` the comparison is the previous default model as git holds it (``HEAD~N`` with
``--git-rev``), so a new default is measured against the one it replaces.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from bench_inference import median_time  # benchmarks/, beside this file

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", help="ONNX model to compare with (default: the previous default model from git)")
    ap.add_argument("--git-rev", default="HEAD~1", help="git revision holding the previous default (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()

    from l3seg_lib import phantom
    from l3seg_lib.inference.predictor import Predictor
    from l3seg_lib.models import default_model_path

    other = a.other
    if other is None:
        other = Path(tempfile.mkdtemp()) / "previous_default.onnx"
        blob = subprocess.run(["git", "show", f"{a.git_rev}:l3seg_lib/models/default.onnx"], cwd=REPO,
                              capture_output=True, check=True).stdout
        other.write_bytes(blob)
    hu, _, info = phantom.render_slice(phantom.make_patient(0, seed=1, matrix=512, slices=(1, 1)), 0, 512)
    spacing = (info["spacing_mm"],) * 2
    print(f"machine: {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}; one 512x512 slice, "
          f"median of {a.repeats}")
    rows = []
    for name, path in (("shipped default", default_model_path()), ("other", Path(other))):
        pred = Predictor(path, device="cpu")
        one = median_time(lambda: pred.predict_hu(hu, spacing), a.repeats)
        batch = median_time(lambda: pred.predict_many([hu] * 8, [spacing] * 8), max(3, a.repeats // 3)) / 8
        rows.append((name, path, pred.info.members if hasattr(pred.info, "members") else "?", one, batch))
        print(f"{name:>16}: {one:.3f} s per slice alone, {batch:.3f} s per slice in batches of 8 "
              f"({Path(path).stat().st_size / 1e6:.1f} MB, {path})")
    print(f"ratio shipped / other: {rows[0][3] / rows[1][3]:.2f} (alone), {rows[0][4] / rows[1][4]:.2f} (batches)")


if __name__ == "__main__":
    main()
