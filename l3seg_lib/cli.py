"""Command line: ``l3seg run | generate | predict | locate | measure | serve | remeasure | finetune | train-default``.

Each command imports only what it needs: ``predict`` and ``measure`` load the inference stack,
never the training or notebook stacks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from l3seg_lib.errors import L3SegError

if TYPE_CHECKING:  # imported when a command runs (keeps the parser free of image libraries)
    from l3seg_lib.measurement.options import MeasureOptions


def _model(path: str | None) -> Path:
    """The model file given, a shipped model's name (``default``, ``fast``, ``real``), or the default model."""
    from l3seg_lib.models import resolve_model

    return resolve_model(path)


def _training_extra_missing(command: str, *also: str) -> bool:
    """Say (on stderr) that a command needs the training extra, when it is not installed."""
    import importlib

    for module in ("torch", "onnx", "albumentations", *also):
        try:
            importlib.import_module(module)
        except ImportError:
            print(f"error: l3seg {command} trains models and needs the training extra ({module} is missing): "
                  f"pip install 'l3seg[train]'", file=sys.stderr)
            return True
    return False


def _cmd_run(args: argparse.Namespace) -> int:
    """``l3seg run``: run the notebook pipeline; exit status 1 when a notebook fails, 2 without the training extra."""
    from l3seg_lib.config import parse_override
    from l3seg_lib.errors import PipelineError
    from l3seg_lib.pipeline.runner import run_pipeline

    if _training_extra_missing("run", "papermill"):
        return 2

    overrides = dict(parse_override(s) for s in args.set)
    try:
        run_pipeline(args.params, overrides, args.run_dir, args.reports, args.notebooks, only=args.only,
                     runs_dir=args.runs_dir)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    """``l3seg generate``: write a synthetic phantom data set."""
    from l3seg_lib.phantom import generate

    df = generate(args.out, n_patients=args.patients, seed=args.seed, matrix=args.matrix,
                  slices_per_patient=(args.min_slices, args.max_slices), realism=args.realism)
    print(f"wrote {len(df)} patients to {args.out} (manifest.csv, clinical.csv, labels.txt, dicom/, masks/)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    """``l3seg predict``: segment an image and print the areas (cm²) and muscle HU per slice."""
    from l3seg_lib.measurement.segment import predict_path

    df = predict_path(args.input, _model(args.model), args.out, slices=args.slices, vertebra_labels=args.vertebra_labels,
                      vertebra_label=args.vertebra_label, margin=args.margin, device=args.device,
                      check_hu=not args.no_hu_check, png_spacing=tuple(args.spacing) if args.spacing else None,
                      png_window=tuple(args.png_window) if args.png_window else None,
                      postprocess=not args.no_postprocess, **_image_minimum(args))
    cols = ["patient_id", "slice_index", "sma_cm2", "sat_cm2", "vat_cm2", "muscle_hu_mean", "inference_s"]
    print(df[cols].to_string(index=False))
    print(f"outputs in {args.out}")
    return 0


def _refusal_lines(errors) -> list[str]:
    """One line per refused input of a batch: ``error: <file>: <problem>`` (control characters and
    line breaks of the message removed; never a table padded with spaces)."""
    from l3seg_lib.names import clean_text

    lines = []
    for source, message in zip(errors.get("source", []), errors.get("error", [])):
        source, message = clean_text(str(source)), clean_text(str(message)).strip()
        lines.append(f"error: {message}" if message.startswith(source) else f"error: {source}: {message}")
    return lines


def _add_image_minimum(p: argparse.ArgumentParser) -> None:
    """The options of the smallest image measured (``predict`` and ``measure``; their defaults,
    :data:`l3seg_lib.imageio.ct.DEFAULT_LIMITS`, are filled in by :func:`_image_minimum`, so that
    building the parser imports no image library)."""
    p.add_argument("--min-matrix", type=int, metavar="PIXELS",
                   help="refuse slices with fewer rows or columns (default: 64; 8 whatever is set)")
    p.add_argument("--min-fov-mm", type=float, metavar="MM",
                   help="refuse slices whose field of view is smaller (default: 150 mm; 10 whatever is set); "
                        "lower only for small synthetic test images")


def _image_minimum(args: argparse.Namespace) -> dict[str, float]:
    """``min_matrix`` and ``min_fov_mm`` as given, else the defaults (64 pixels, 150 mm)."""
    from l3seg_lib.imageio.ct import DEFAULT_LIMITS

    return {"min_matrix": DEFAULT_LIMITS.min_matrix if args.min_matrix is None else args.min_matrix,
            "min_fov_mm": DEFAULT_LIMITS.min_fov_mm if args.min_fov_mm is None else args.min_fov_mm}


MODEL_HELP = ("ONNX model file, or a shipped model: default (8 networks), fast (2 networks, about twice the measure "
              "throughput, lower real-CT muscle accuracy) or real (4 networks fine-tuned on real CT references, "
              "better on held-out real patients; docs/realct_training.md); default: %(default)s")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """The options of how images are segmented (``predict``, ``measure`` and ``serve``): ``--model``,
    ``--no-postprocess``, ``--device``, ``--no-hu-check``."""
    from l3seg_lib.config import DEVICES, Params

    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--no-postprocess", action="store_true", help="keep the raw labels (no anatomical clean-up)")
    p.add_argument("--device", default=Params.device, choices=DEVICES, help="(default: %(default)s)")
    p.add_argument("--no-hu-check", action="store_true", help="accept images without air near -1000 HU")


def _add_measure_options(p: argparse.ArgumentParser) -> None:
    """The options ``measure`` and ``serve`` share (read by :func:`_measure_options`): those of
    :func:`_add_model_options`, and ``--clinical``, ``--params``, ``--cutoffs``, ``--max-slices``,
    ``--read-threads``."""
    _add_model_options(p)
    p.add_argument("--clinical", help="CSV: patient_id, sex, height_m or height_cm, weight_kg[, age]")
    p.add_argument("--params", help="params file whose composition (HU ranges, cut-offs) and localize sections are used")
    p.add_argument("--cutoffs", help="cut-off set: martin2013 (default) or fearon2011")
    p.add_argument("--max-slices", type=int, default=5,
                   help="inputs with more slices are whole series: L3 is found by the localiser")
    p.add_argument("--read-threads", type=int, default=2, help="threads reading the next inputs while the network runs")


def _measure_options(args: argparse.Namespace, **settings) -> MeasureOptions:
    """The :class:`~l3seg_lib.measurement.options.MeasureOptions` of the options of
    :func:`_add_measure_options`, with the command's own ``settings``: the params file's composition
    and localize sections (else the defaults), ``--cutoffs`` replacing the cut-off set in a new
    CompositionConfig (nothing loaded or shared is changed). MeasureOptions checks the values."""
    from dataclasses import replace

    from l3seg_lib.config import CompositionConfig, LocalizeConfig, load_params
    from l3seg_lib.measurement.options import MeasureOptions

    params = load_params(args.params) if args.params else None
    composition = params.composition if params else CompositionConfig()
    if args.cutoffs:
        composition = replace(composition, cutoffs=args.cutoffs)
    return MeasureOptions(composition, localize=params.localize if params else LocalizeConfig(),
                          clinical_csv=args.clinical, device=args.device, check_hu=not args.no_hu_check,
                          max_slices=args.max_slices, read_threads=args.read_threads,
                          postprocess=not args.no_postprocess, **settings)


def _cmd_measure(args: argparse.Namespace) -> int:
    """``l3seg measure``: measure every image in a folder (L3 located, segmented, measured, reported).
    Exit status 0 when every input was measured, 1 when some were refused (or listed for review),
    2 when none was measured or on a fatal error (output not writable, output folder in use)."""
    from l3seg_lib.measurement.inputs import load_label_map
    from l3seg_lib.measurement.orchestration import measure_folder

    options = _measure_options(args, reference_dir=args.reference, reference_labels=load_label_map(args.reference_labels),
                               force=args.force, dicom=args.dicom, workers=args.workers, scheduler=args.scheduler,
                               **_image_minimum(args))
    res = measure_folder(args.folder, _model(args.model), args.out, options)
    print(f"{len(res.measurements)} slice(s) measured, {len(res.errors)} input(s) refused (errors.csv), "
          f"{len(res.skipped)} file(s) left out (skipped.csv); "
          f"see {Path(args.out) / 'index.html'} and measurements.csv")
    for line in _refusal_lines(res.errors):
        print(line, file=sys.stderr)
    measured = getattr(res, "inputs_measured", None)
    if measured is None:
        measured = res.measurements["source"].nunique() if len(res.measurements) else 0
    not_measured = getattr(res, "inputs_not_measured", 0)
    if measured == 0:
        print(f"error: {args.folder}: no input measured", file=sys.stderr)
        return 2
    return 1 if not_measured else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """``l3seg serve``: a DICOM node (Storage SCP) measuring each complete CT series it receives and
    sending its SEG and SR to the PACS; runs until SIGTERM or Ctrl-C (exit status 0), 2 when it
    cannot start (port in use, output folder in use, bad option)."""
    import signal
    import threading

    from l3seg_lib.node.events import close_logging, setup_logging
    from l3seg_lib.node.scp import TLSFiles
    from l3seg_lib.node.sender import parse_destination
    from l3seg_lib.node.service import Node, NodeConfig

    tls, send_tls = (args.tls_cert, args.tls_key, args.tls_ca), (args.send_tls_cert, args.send_tls_key, args.send_tls_ca)
    cfg = NodeConfig(Path(args.out), _model(args.model), _measure_options(args, dicom=True, progress=False),
                     ae_title=args.ae_title, host=args.host, port=args.port,
                     send_to=parse_destination(args.send_to) if args.send_to else None, allow=args.allow,
                     series_timeout=args.series_timeout, tls=TLSFiles(*tls) if any(tls) else None,
                     send_tls=TLSFiles(*send_tls) if any(send_tls) else None, max_series_mb=args.max_series_mb,
                     refusal_sr=args.refusal_sr)  # checks every value: L3SegConfigError, exit status 2
    handlers = setup_logging(cfg.out, verbose=args.verbose)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        node = Node(cfg)
        node.run(stop)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        close_logging(handlers)
    return 0


def _cmd_locate(args: argparse.Namespace) -> int:
    """``l3seg locate``: locate L3 in a CT volume and print the vertebrae found; exit status 1 when L3 is not found."""
    from l3seg_lib.config import LocalizeConfig, load_params
    from l3seg_lib.imageio.reader import read_image
    from l3seg_lib.localize.l3 import locate_l3
    from l3seg_lib.reporting.review import save_localizer_png

    cfg = load_params(args.params).localize if args.params else LocalizeConfig()
    volume = read_image(args.input, check_hu=not args.no_hu_check)
    loc = locate_l3(volume, cfg)
    print(f"{args.input}: {loc.summary()}")
    if loc.anchors:
        print(f"  anchors that agreed: {', '.join(loc.anchors)}")
    if loc.crest_slice is not None:
        print(f"  iliac crests' tops: slice {loc.crest_slice:.0f}")
    for title, vertebrae in (loc.counts.items() if loc.counts else [("", loc.vertebrae)]):
        if title:
            print(f"  counted from the {title}:")
        for vt in reversed(vertebrae):
            print(f"  {vt.name:>4}: slices {vt.z_lo}-{vt.z_hi}" + (" (partly in view)" if vt.partial else "")
                  + (f", {vt.rib_text()}" if vt.rib_text() else ""))
    for note in loc.notes:
        print(f"  note: {note}")
    print(f"  ({volume.n_slices} slices of {volume.spacing_mm[0]:.2f} mm; {loc.seconds:.2f} s)")
    if args.picture:
        print(f"review picture: {save_localizer_png(args.picture, volume, loc)}")
    return 0 if loc.found else 1


def _cmd_remeasure(args: argparse.Namespace) -> int:
    """``l3seg remeasure``: remeasure slices whose masks were edited and print what changed."""
    from l3seg_lib.config import CompositionConfig, load_params
    from l3seg_lib.measurement.remeasure import remeasure

    comp = load_params(args.params).composition if args.params else CompositionConfig()
    res = remeasure(args.out, args.masks, comp)
    print(f"{len(res.audit)} slice(s) changed by edited masks; see {res.html}, remeasured.csv and audit.csv")
    if len(res.audit):
        print(res.audit[["patient_id", "slice_index", "changes"]].to_string(index=False))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    """``l3seg finetune``: fine-tune a model on labelled cases and print the held-out Dice before and after."""
    from l3seg_lib.config import DataConfig
    from l3seg_lib.measurement.inputs import load_label_map

    if _training_extra_missing("finetune"):
        return 2
    from l3seg_lib.training.finetune import finetune_on_cases

    checkpoint = _model(args.model).with_suffix(".pt")
    data = DataConfig(source="manifest", manifest=str(args.manifest), label_map=load_label_map(args.label_map))
    res = finetune_on_cases(checkpoint, args.manifest, args.out, data, epochs=args.epochs,
                            test_fraction=args.test_fraction, seed=args.seed)
    for name, df in (("before", res.before), ("after", res.after)):
        print(f"{name:>6}: Dice muscle {df['dice_muscle'].mean():.3f}, SAT {df['dice_sat'].mean():.3f}, "
              f"VAT {df['dice_vat'].mean():.3f} on {len(df)} held-out slice(s)")
    print(f"fine-tuned model: {res.model_path}; report: {res.report}")
    return 0


def _cmd_train_default(args: argparse.Namespace) -> int:
    """``l3seg train-default``: train the default model on the built-in data and print its cross-validated Dice."""
    if _training_extra_missing("train-default"):
        return 2
    from l3seg_lib.training.default_model import (
        default_model_params,
        train_default_model,
    )

    res = train_default_model(args.out, default_model_params(members=args.members), seeds=args.seeds,
                              weights_dtype=args.weights_dtype)
    per_seed = ", ".join(f"seed {s} {r.mean_fg_dice:.3f}" for s, r in res.runs.items())
    print(f"cross-validated Dice on the built-in data: {per_seed}; model ({len(res.runs) * args.members} networks): "
          f"{res.model_path} (weights: {res.checkpoint_path})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``l3seg`` argument parser with one subcommand per command."""
    ap = argparse.ArgumentParser(prog="l3seg", description="CT body composition at L3: segmentation of skeletal "
                                 "muscle, SAT and VAT, areas, SMI, muscle density and cut-off verdicts.")
    sub = ap.add_subparsers(dest="command", required=True)
    # defaults come from the params dataclasses (config imports neither torch nor an image library)
    from l3seg_lib.config import Params

    defaults = Params()
    phantom = defaults.data.phantom

    from l3seg_lib.pipeline.runner import (
        NOTEBOOKS,  # a constant; papermill is imported only when running
    )

    p = sub.add_parser("run", help="run the notebook pipeline 01-05 with papermill and render HTML reports")
    p.add_argument("--params", required=True, help="YAML params file, e.g. params/default.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--run-dir", help="run folder (default: <runs root>/<timestamp>-<name>)")
    p.add_argument("--runs-dir", help="runs root (default: runs_dir of the params, relative to this folder)")
    p.add_argument("--reports", default="reports", help="folder for the HTML reports (default: reports)")
    p.add_argument("--notebooks", default="notebooks", help="folder with 01_preprocess.ipynb ... (default: notebooks)")
    p.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run only these notebooks (in an existing run folder)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("generate", help="write the synthetic L3 data set (DICOM + NIfTI labels)")
    p.add_argument("out")
    p.add_argument("--patients", type=int, default=phantom.n_patients, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=phantom.seed, help="(default: %(default)s)")
    p.add_argument("--matrix", type=int, default=phantom.matrix, help="(default: %(default)s)")
    p.add_argument("--min-slices", type=int, default=phantom.slices_per_patient[0], help="(default: %(default)s)")
    p.add_argument("--max-slices", type=int, default=phantom.slices_per_patient[1], help="(default: %(default)s)")
    p.add_argument("--realism", action="store_true", help="add ribs, arms, organs, contrast, kernels, metal, ...")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("predict", help="segment a DICOM file or series folder, NIfTI or PNG")
    p.add_argument("input", help="DICOM file, DICOM series folder, NIfTI or PNG")
    _add_model_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--slices", type=int, nargs="+", help="slice indices of a volume (inferior to superior)")
    p.add_argument("--vertebra-labels", help="vertebra label volume aligned with the input (e.g. TotalSegmentator)")
    p.add_argument("--vertebra-label", type=int, default=29, help="label value of L3 (default 29: TotalSegmentator)")
    p.add_argument("--margin", type=int, default=0, help="slices either side of the vertebra's middle")
    p.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"), help="PNG pixel spacing")
    p.add_argument("--png-window", type=float, nargs=2, metavar=("LO_HU", "HI_HU"), help="PNG export window")
    _add_image_minimum(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("locate", help="find L3 in a CT series or volume (exit 1 when it cannot tell)")
    p.add_argument("input", help="DICOM series folder, enhanced CT file or NIfTI volume")
    p.add_argument("--picture", help="write the review picture (sagittal and coronal, PNG) here")
    p.add_argument("--params", help="params file whose localize section is used")
    p.add_argument("--no-hu-check", action="store_true")
    p.set_defaults(func=_cmd_locate)

    p = sub.add_parser("remeasure", help="recompute a measure output from edited masks (ITK-SNAP NIfTI or .tag)")
    p.add_argument("out", help="the output folder of l3seg measure")
    p.add_argument("--masks", help="folder of edited masks (default: <out>/masks, edited in place)")
    p.add_argument("--params", help="params file whose composition section is used")
    p.set_defaults(func=_cmd_remeasure)

    p = sub.add_parser("finetune", help="fine-tune the default model on your labelled cases (patient-wise)")
    p.add_argument("manifest", help="manifest CSV: image, mask, patient_id (see docs/inputs.md)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="model to start from (an .onnx with its .pt beside it; default: the shipped model)")
    p.add_argument("--label-map", help="YAML/JSON label map of the masks (default: 0-3 as the classes)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of patients held out for before/after")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("train-default", help="train the default model from the built-in data "
                       "(~12 min per seed on 2 cores, 4 seeds)")
    p.add_argument("--out", required=True)
    p.add_argument("--members", type=int, default=2, help="cross-validation folds per seed kept as ensemble members")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4],
                   help="training seeds; every seed's networks join the ensemble (default: %(default)s)")
    p.add_argument("--weights-dtype", choices=["float16", "float32"], default="float16",
                   help="precision the weights are stored in (computation is float32; default: %(default)s)")
    p.set_defaults(func=_cmd_train_default)

    p = sub.add_parser("measure", help="batch body composition over a folder -> CSV + HTML")
    p.add_argument("folder")
    p.add_argument("--out", required=True)
    _add_measure_options(p)
    p.add_argument("--reference", help="folder of reference masks (NIfTI, PNG, Slice-O-Matic .tag) to validate against")
    p.add_argument("--reference-labels", help="YAML/JSON label map of the reference masks "
                   "(default: 0-3 as classes; Slice-O-Matic tags for .tag)")
    p.add_argument("--force", action="store_true", help="measure again the inputs the ledger lists as finished")
    p.add_argument("--dicom", action="store_true", help="also write DICOM SEG and SR (TID 1500) per slice to <out>/dicom/")
    p.add_argument("--workers", type=int, default=0, help="measure on N Dask workers (a LocalCluster here)")
    p.add_argument("--scheduler", help="measure on an existing Dask cluster: tcp://host:8786")
    _add_image_minimum(p)
    p.set_defaults(func=_cmd_measure)

    p = sub.add_parser("serve", help="DICOM node: receive CT series (C-STORE), measure each, send SEG and SR to the PACS")
    p.add_argument("--out", required=True, help="output folder: received series, measure's outputs, sent.csv, serve.log")
    p.add_argument("--ae-title", default="L3SEG", help="this node's AE title (default: %(default)s)")
    p.add_argument("--port", type=int, default=11112, help="port to listen on (default: %(default)s; 0: a free one, logged)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0: all)")
    p.add_argument("--send-to", metavar="AE@HOST:PORT", help="the PACS that receives the SEG and SR (C-STORE)")
    p.add_argument("--allow", nargs="+", metavar="AE", help="calling AE titles accepted (default: any)")
    p.add_argument("--series-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a series is complete when no instance of it arrived for this long (default: %(default)s)")
    p.add_argument("--tls-cert", help="TLS: this node's certificate (PEM)")
    p.add_argument("--tls-key", help="TLS: this node's private key (PEM)")
    p.add_argument("--tls-ca", help="TLS: accept only peers with a certificate signed by this CA (PEM)")
    p.add_argument("--send-tls-ca", help="send SEG/SR over TLS, verifying the PACS's certificate against this CA (PEM)")
    p.add_argument("--send-tls-cert", help="send over TLS presenting this certificate (PEM; with --send-tls-key)")
    p.add_argument("--send-tls-key", help="the private key of --send-tls-cert (PEM)")
    p.add_argument("--max-series-mb", type=float, help="refuse instances of a series past this size (MB)")
    p.add_argument("--refusal-sr", action="store_true",
                   help="for a series that cannot be measured, send the PACS an SR saying why (default: send nothing)")
    p.add_argument("--verbose", action="store_true", help="log every instance stored and pynetdicom's messages")
    _add_measure_options(p)  # as for l3seg measure; every series is measured with --dicom
    p.set_defaults(func=_cmd_serve)

    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on an input, configuration, value or file
    system error; ``measure``: 0 all inputs measured, 1 some refused, 2 none measured)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (L3SegError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad model file, bad option values
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output or input the file system refuses
        where = exc.filename if exc.filename is not None else ""
        print(f"error: {where}: {exc.strerror or exc}" if where else f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
