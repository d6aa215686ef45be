"""Command line: ``l3seg run | generate | predict | measure | realct``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .errors import L3SegError


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run_from_args

    return run_from_args(args)


def _cmd_generate(args: argparse.Namespace) -> int:
    from .phantom import generate

    df = generate(args.out, n_patients=args.patients, seed=args.seed, matrix=args.matrix,
                  slices_per_patient=(args.min_slices, args.max_slices))
    print(f"wrote {len(df)} patients to {args.out} (manifest.csv, clinical.csv, labels.txt, dicom/, masks/)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_path

    df = predict_path(args.input, args.model, args.out, slices=args.slices, vertebra_labels=args.vertebra_labels,
                      vertebra_label=args.vertebra_label, margin=args.margin, device=args.device,
                      check_hu=not args.no_hu_check, png_spacing=tuple(args.spacing) if args.spacing else None,
                      png_window=tuple(args.png_window) if args.png_window else None)
    cols = ["patient_id", "slice_index", "muscle_area_cm2", "sat_area_cm2", "vat_area_cm2", "muscle_mean_hu", "seconds"]
    print(df[cols].to_string(index=False))
    print(f"outputs in {args.out}")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    from .config import CompositionConfig, load_params
    from .measure import load_label_map, measure_folder

    comp = load_params(args.params).composition if args.params else CompositionConfig()
    if args.cutoffs:
        comp.cutoffs = args.cutoffs
    res = measure_folder(args.folder, args.model, args.out, comp, clinical_csv=args.clinical,
                         reference_dir=args.reference, reference_labels=load_label_map(args.reference_labels),
                         device=args.device, check_hu=not args.no_hu_check, max_slices=args.max_slices)
    print(f"{len(res.measurements)} slice(s) measured, {len(res.errors)} problem(s); "
          f"see {Path(args.out) / 'index.html'} and measurements.csv")
    if len(res.errors):
        print(res.errors[["source", "error"]].to_string(index=False), file=sys.stderr)
    return 0


def _cmd_realct(args: argparse.Namespace) -> int:
    from .realct import run_realct

    summary = run_realct(args.data, args.model, args.out, finetune_epochs=args.finetune_epochs, device=args.device,
                         docs_dir=args.docs)
    print(pd.DataFrame(summary["transfer"]).T.round(3).to_string())
    print(pd.DataFrame(summary["l3"]).T.round(1).to_string())
    print(f"figures and tables in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="l3seg", description="CT body composition at L3: segmentation of skeletal "
                                 "muscle, SAT and VAT, areas, SMI, muscle density and cut-off verdicts.")
    sub = ap.add_subparsers(dest="command", required=True)

    from .pipeline import add_run_arguments
    p = sub.add_parser("run", help="run the notebook pipeline 01-05 with papermill and render HTML reports")
    add_run_arguments(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("generate", help="write the synthetic L3 data set (DICOM + NIfTI labels)")
    p.add_argument("out")
    p.add_argument("--patients", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matrix", type=int, default=512)
    p.add_argument("--min-slices", type=int, default=1)
    p.add_argument("--max-slices", type=int, default=3)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("predict", help="segment a DICOM file or series folder, NIfTI or PNG")
    p.add_argument("input", help="DICOM file, DICOM series folder, NIfTI or PNG")
    p.add_argument("--model", required=True, help="model file (model.pt of a run)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--slices", type=int, nargs="+", help="slice indices of a volume (inferior to superior)")
    p.add_argument("--vertebra-labels", help="vertebra label volume aligned with the input (e.g. TotalSegmentator)")
    p.add_argument("--vertebra-label", type=int, default=29, help="label value of L3 (TotalSegmentator: 29)")
    p.add_argument("--margin", type=int, default=0, help="slices either side of the vertebra's middle")
    p.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"), help="PNG pixel spacing")
    p.add_argument("--png-window", type=float, nargs=2, metavar=("LO_HU", "HI_HU"), help="PNG export window")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-hu-check", action="store_true", help="accept images without air near -1000 HU")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("measure", help="batch body composition over a folder -> CSV + HTML")
    p.add_argument("folder")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--clinical", help="CSV: patient_id, sex, height_m or height_cm, weight_kg[, age]")
    p.add_argument("--reference", help="folder of reference masks (NIfTI, PNG, Slice-O-Matic .tag) to validate against")
    p.add_argument("--reference-labels", help="YAML/JSON label map of the reference masks "
                   "(default: 0-3 as classes; Slice-O-Matic tags for .tag)")
    p.add_argument("--params", help="params file whose composition section (HU ranges, cut-offs) is used")
    p.add_argument("--cutoffs", help="cut-off set: martin2013 (default) or fearon2011")
    p.add_argument("--max-slices", type=int, default=5, help="volumes with more slices need slice_index in a manifest")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-hu-check", action="store_true")
    p.set_defaults(func=_cmd_measure)

    p = sub.add_parser("realct", help="check a model on the real example CT (../shared/data/totalsegmentator_example)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "totalsegmentator_example"))
    p.add_argument("--model", required=True, help="model trained on the default data (runs/<run>/train/model.pt)")
    p.add_argument("--out", default="runs/realct")
    p.add_argument("--finetune-epochs", type=int, default=30)
    p.add_argument("--docs", help="also write the L3 overlay picture into this folder (e.g. docs)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_realct)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (L3SegError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad model file, bad option values
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
