"""How much the shipped ensemble's networks disagree on the measured areas (an error estimate of the
method besides repeat scans): each of the 8 members' labels (argmax of its own softmax, read from
the ONNX graph's stacked member output; no post-processing, as for the members alike) gives a
refined muscle, SAT and VAT area; per slice the members' SD (relative) and the SD of their mean
(SD / sqrt(8), what the averaged ensemble would vary by if its members erred independently).

    python experiments/serial_members.py runs/serial_retest/data/dicom ../shared/data/*/l3_reference
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd

from l3seg_lib.imageio.reader import read_image
from l3seg_lib.inference.postprocess import body_mask
from l3seg_lib.models import default_model_path
from l3seg_lib.preprocessing.geometry import image_to_model, make_geometry, probs_to_original
from l3seg_lib.tissues import MUSCLE, SAT, VAT, complete_hu_ranges, in_range

MEMBERS_OUTPUT = "/Concat_output_0"
"""The members' softmax stacked before the ReduceMean that makes ``probs`` (default.onnx)."""


def member_session(path: Path) -> ort.InferenceSession:
    """The model with its stacked member probabilities as a second output."""
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(MEMBERS_OUTPUT, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def slices(paths: list[str]) -> list[tuple[str, np.ndarray, tuple[float, float]]]:
    """(name, HU slice, spacing) of each DICOM series folder's middle slice and each ``*_ct.nii.gz``."""
    out = []
    for p in map(Path, paths):
        items = sorted(p.glob("*_ct.nii.gz")) if p.is_dir() and list(p.glob("*_ct.nii.gz")) else \
            sorted(q for q in p.iterdir() if q.is_dir()) if p.is_dir() else [p]
        for item in items:
            vol = read_image(item)
            i = vol.n_slices // 2
            out.append((item.name, vol.hu[i], (vol.spacing_mm[1], vol.spacing_mm[2])))
    return out


def main() -> None:
    """Print and write the members' spread per tissue."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", default="runs/serial_members.csv")
    args = ap.parse_args()
    path = default_model_path()
    sess = member_session(path)
    from l3seg_lib.inference.predictor import Predictor

    pred = Predictor(path, "cpu")
    ranges = complete_hu_ranges(None)
    rows = []
    for name, hu, spacing in slices(args.inputs):
        body = body_mask(hu)
        g = make_geometry(hu.shape, spacing, pred.image_size, pred.pad_to_square, pred.info.pixel_mm, hu, body)
        x = image_to_model(hu, g, pred.window_hu)[None, None].astype(np.float32)
        members = sess.run([MEMBERS_OUTPUT], {sess.get_inputs()[0].name: x})[0]  # (8, 1, C, H, W)
        px = spacing[0] * spacing[1] / 100.0
        areas = {t.key: [] for t in (MUSCLE, SAT, VAT)}
        for m in range(members.shape[0]):
            labels = probs_to_original(members[m, 0], g).argmax(0)
            for t in (MUSCLE, SAT, VAT):
                areas[t.key].append(float(((labels == t.label) & in_range(hu, ranges[t.key])).sum() * px))
        row = {"slice": name, "members": members.shape[0]}
        for k, v in areas.items():
            v = np.asarray(v)
            row[f"{k}_mean_cm2"] = v.mean()
            row[f"{k}_member_sd_pct"] = v.std(ddof=1) / v.mean() * 100 if v.mean() > 0 else np.nan
            row[f"{k}_mean_sd_pct"] = row[f"{k}_member_sd_pct"] / math.sqrt(len(v))
        rows.append(row)
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    print(df.round(2).to_string(index=False))
    print("median over slices:")
    print(df.filter(like="_pct").median().round(2).to_string())


if __name__ == "__main__":
    main()
