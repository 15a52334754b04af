"""Fit every OOD score on the street world, compare them, and bundle the best as the default filter.

    .venv/bin/python tools/fit_default_filter.py [--world DIR] [--out runs/filters]

1. Generates the synthetic world (seed 0) if missing.
2. Collects ID boxes: the bundled model's true positives on id/train, once with the head
   features and once with head+roi features for the scores that learn from outliers (`oe`),
   whose outliers are the model's detections on the world's ood/pool (pool kinds only, never
   the test kinds).
3. Fits one filter per registered method (`--methods` to choose) and calibrates it (95% ID
   TPR per class and confidence bin) on held-out id/train images, or on `--calibration-id`:
   a labelled set or an unlabelled clip (hallucinated tracks trimmed, as `ghostbox calibrate`).
4. Evaluates them on id/val, ood/near_test, ood/far_test: one pass per feature kind.
5. Picks the method with the lowest near-OoD FPR95, re-evaluates with it as the applied
   filter (hallucinations after filtering, ID true positives lost), copies it to
   pipeline/assets/filters/, and writes the table (Markdown and JSON) to --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUSIONS = (("knn", "mahalanobis"),)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=ROOT / ".ghostbox" / "worlds" / "seed0")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "filters")
    parser.add_argument("--bundle", action="store_true", help="copy the best filter into pipeline/assets/filters")
    parser.add_argument("--methods", help="comma-separated methods (default: every registered one and a "
                        "knn+mahalanobis fusion)")
    parser.add_argument("--calibration-id", help="ID data that only sets the thresholds (SPEC, DIR or VIDEO)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from pipeline.bundled import ASSETS, default_model
    from pipeline.detect.detector import Detector
    from pipeline.evaluate.evaluation import EvalSettings, load_sets, run_evaluation
    from pipeline.filter.filter_file import save_filter
    from pipeline.filter.hallucination_filter import HallucinationFilter
    from pipeline.filter.id_collection import collect_id_boxes
    from pipeline.filter.registry import create, names
    from pipeline.synth import WorldConfig, generate_world

    started = time.perf_counter()
    if not (args.world / "world.json").is_file():
        print(f"generating the world into {args.world}")
        generate_world(WorldConfig(seed=0), args.world)
    model = args.model or default_model()
    detectors = {kind: Detector(model=str(model), device="cpu", batch=16, box_features=kind)
                 for kind in ("head", "head+roi")}
    args.out.mkdir(parents=True, exist_ok=True)
    from pipeline.filter.outlier_collection import collect_outlier_boxes

    id_boxes = {kind: collect_id_boxes(d, str(args.world / "id" / "train")) for kind, d in detectors.items()}
    calibration = {}
    if args.calibration_id:
        calibration = {kind: collect_id_boxes(d, args.calibration_id) for kind, d in detectors.items()}
        print(f"calibration set: {calibration['head'].description}")
    outliers, outlier_text = collect_outlier_boxes(detectors["head+roi"], [str(args.world / "ood" / "pool")])
    print(f"ID boxes: {id_boxes['head'].description}; {outlier_text}")

    filters = []  # (method, feature kind, path, filter)
    fit_seconds = {}
    chosen = args.methods.split(",") if args.methods else [m for m in names() if m != "fusion"] + \
        ["+".join(f) for f in FUSIONS]
    plan = [(m, "head+roi" if "+" not in m and create(m).needs_outliers else "head") for m in chosen]
    for method, kind in plan:
        name, params = method, {}
        if "+" in method:
            name, params = "fusion", {"members": method.split("+")}
        detector = detectors[kind]
        t0 = time.perf_counter()
        flt = HallucinationFilter.fit(name, id_boxes[kind], detector.class_names, detector.fingerprint(),
                                      params=params, outliers=outliers if kind == "head+roi" else None,
                                      calibration=calibration.get(kind),
                                      metadata={"id_data": "street world seed 0 id/train",
                                                "detector_conf": detector.config.conf, "imgsz": detector.imgsz,
                                                **({"calibration_data": args.calibration_id}
                                                   if args.calibration_id else {}),
                                                **({"outlier_data": "street world seed 0 ood/pool"}
                                                   if kind == "head+roi" else {})})
        fit_seconds[method] = round(time.perf_counter() - t0, 2)
        path = save_filter(flt, args.out / f"{method.replace('+', '_')}.filter.safetensors")
        filters.append((method, kind, path, flt))
        print(f"fitted {method} ({kind} features) in {fit_seconds[method]} s")

    specs = [str(args.world / "ood" / "near_test"), str(args.world / "ood" / "far_test")]
    table = {}
    report = None
    for kind, detector in detectors.items():
        id_set, ood_sets = load_sets(detector, str(args.world / "id" / "val"), specs, None)
        mine = [(m, f) for m, k, _, f in filters if k == kind]
        # one pass for every score of this feature kind; the report keys scores by method name
        rep = run_evaluation(detector, id_set, ood_sets, args.out / f"all-{kind.replace('+', '_')}",
                             EvalSettings(scores=()), filters=[(f"{m}.x", f) for m, f in mine])
        report = report or rep
        for m, _ in mine:
            table[m] = {s: rep["ood"][s]["scores"].get("fusion" if "+" in m else m, {})
                        for s in ("near_test", "far_test")}
    kind_of = {m: k for m, k, _, _ in filters}
    path_of = {m: p for m, _, p, _ in filters}
    best = min(table, key=lambda m: table[m]["near_test"].get("fpr95") or 1.0)
    best_path = path_of[best]
    results = {}
    for method in dict.fromkeys(m for m in ("energy", best) if m in path_of):
        path = path_of[method]
        from pipeline.filter.filter_file import load_filter

        detector = detectors[kind_of[method]]
        id_set, ood_sets = load_sets(detector, str(args.world / "id" / "val"), specs, None)
        rep = run_evaluation(detector, id_set, ood_sets, args.out / method.replace("+", "_"), EvalSettings(),
                             filters=[(str(path), load_filter(path))])
        results[method] = {
            "near_after": rep["ood"]["near_test"]["after_filter"], "far_after": rep["ood"]["far_test"]["after_filter"],
            "near_before": rep["ood"]["near_test"]["hallucinations"],
            "far_before": rep["ood"]["far_test"]["hallucinations"],
            "id_tp_lost_fraction": rep["id"]["tp_lost_fraction"], "map50": rep["id"]["map50"],
            "map50_95": rep["id"]["map50_95"],
        }
    summary = {"model": str(model), "best": best, "table": table, "applied": results, "fit_seconds": fit_seconds,
               "features": kind_of, "id_boxes": id_boxes["head"].description, "outliers": outlier_text,
               "seconds": round(time.perf_counter() - started, 1),
               "map50": report["id"]["map50"], "map50_95": report["id"]["map50_95"],
               "hallucinations": {s: report["ood"][s]["per_image"] for s in ("near_test", "far_test")}}
    (args.out / "filters.json").write_text(json.dumps(summary, indent=2))
    lines = ["| score | box features | near-OoD FPR95 | near AUROC | far-OoD FPR95 | far AUROC |",
             "|---|---|---|---|---|---|"]
    for m in sorted(table, key=lambda m: table[m]["near_test"].get("fpr95") or 1.0):
        near, far = table[m]["near_test"], table[m]["far_test"]
        lines.append(f"| {m} | {kind_of[m]} | {_pct(near.get('fpr95'))} | {_num(near.get('auroc'))} | "
                     f"{_pct(far.get('fpr95'))} | {_num(far.get('auroc'))} |")
    lines += ["", "| filter applied | near-OoD hallucinations removed | far-OoD removed | ID true positives lost |",
              "|---|---|---|---|"]
    for m, r in results.items():
        lines.append(f"| {m} | {_pct(r['near_after']['reduction'])}"
                     f" ({r['near_before']} -> {r['near_after']['hallucinations']})"
                     f" | {_pct(r['far_after']['reduction'])} | {_pct(r['id_tp_lost_fraction'])} |")
    (args.out / "filters.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"best: {best}; {summary['seconds']} s")
    if args.bundle:
        target = ASSETS / "filters" / f"{Path(model).stem}.filter.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best_path, target)
        print(f"bundled {best} filter -> {target}")
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
