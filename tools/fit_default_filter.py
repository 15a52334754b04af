"""Fit every OOD score on the street world, compare them, and bundle the best as the default filter.

    .venv/bin/python tools/fit_default_filter.py [--world DIR] [--out runs/filters]

1. Generates the synthetic world (seed 0) if missing.
2. Collects ID boxes once: the bundled model's true positives on id/train.
3. Fits and calibrates (95% ID TPR per class) one filter per method.
4. Evaluates all of them in one `ghostbox eval` pass on id/val, ood/near_test, ood/far_test.
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
METHODS = ("msp", "maxlogit", "energy", "mahalanobis", "knn", "vim", "bam", "abet")
FUSIONS = (("knn", "mahalanobis"),)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=ROOT / ".ghostbox" / "worlds" / "seed0")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "filters")
    parser.add_argument("--bundle", action="store_true", help="copy the best filter into pipeline/assets/filters")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from pipeline.bundled import ASSETS, default_model
    from pipeline.detect.detector import Detector
    from pipeline.evaluate.evaluation import EvalSettings, load_sets, run_evaluation
    from pipeline.filter.filter_file import save_filter
    from pipeline.filter.hallucination_filter import HallucinationFilter
    from pipeline.filter.id_collection import collect_id_boxes
    from pipeline.synth import WorldConfig, generate_world

    started = time.perf_counter()
    if not (args.world / "world.json").is_file():
        print(f"generating the world into {args.world}")
        generate_world(WorldConfig(seed=0), args.world)
    model = args.model or default_model()
    detector = Detector(model=str(model), device="cpu", batch=16)
    args.out.mkdir(parents=True, exist_ok=True)
    id_boxes = collect_id_boxes(detector, str(args.world / "id" / "train"))
    print(f"ID boxes: {id_boxes.description}")

    filters = []
    fit_seconds = {}
    for method in [*METHODS, *("+".join(f) for f in FUSIONS)]:
        name, params = method, {}
        if "+" in method:
            name, params = "fusion", {"members": method.split("+")}
        t0 = time.perf_counter()
        flt = HallucinationFilter.fit(name, id_boxes.boxes, detector.class_names, detector.fingerprint(),
                                      params=params, metadata={"id_data": "street world seed 0 id/train"})
        fit_seconds[method] = round(time.perf_counter() - t0, 2)
        path = save_filter(flt, args.out / f"{method.replace('+', '_')}.filter.safetensors")
        filters.append((method, path, flt))
        print(f"fitted {method} in {fit_seconds[method]} s")

    id_set, ood_sets = load_sets(detector, str(args.world / "id" / "val"),
                                 [str(args.world / "ood" / "near_test"), str(args.world / "ood" / "far_test")], None)
    # One pass for every score's FPR95/AUROC; scores are keyed by method name.
    report = run_evaluation(detector, id_set, ood_sets, args.out / "all", EvalSettings(scores=()),
                            filters=[(f"{m}.x", f) for m, _, f in filters])
    # the report keys each filter's score by its method name ("fusion" for the fused one)
    table = {m: {s: report["ood"][s]["scores"].get("fusion" if "+" in m else m, {}) for s in ("near_test", "far_test")}
             for m, _, _ in filters}
    best = min((m for m, _, _ in filters), key=lambda m: table[m]["near_test"].get("fpr95") or 1.0)
    energy_path = next(p for m, p, _ in filters if m == "energy")
    best_path = next(p for m, p, _ in filters if m == best)
    results = {}
    for method, path in (("energy", energy_path), (best, best_path)):
        from pipeline.filter.filter_file import load_filter

        rep = run_evaluation(detector, id_set, ood_sets, args.out / method.replace("+", "_"), EvalSettings(),
                             filters=[(str(path), load_filter(path))])
        results[method] = {
            "near_after": rep["ood"]["near_test"]["after_filter"], "far_after": rep["ood"]["far_test"]["after_filter"],
            "near_before": rep["ood"]["near_test"]["hallucinations"], "far_before": rep["ood"]["far_test"]["hallucinations"],
            "id_tp_lost_fraction": rep["id"]["tp_lost_fraction"], "map50": rep["id"]["map50"],
            "map50_95": rep["id"]["map50_95"],
        }
    summary = {"model": str(model), "best": best, "table": table, "applied": results, "fit_seconds": fit_seconds,
               "id_boxes": id_boxes.description, "seconds": round(time.perf_counter() - started, 1),
               "map50": report["id"]["map50"], "map50_95": report["id"]["map50_95"],
               "hallucinations": {s: report["ood"][s]["per_image"] for s in ("near_test", "far_test")}}
    (args.out / "filters.json").write_text(json.dumps(summary, indent=2))
    lines = ["| score | near-OoD FPR95 | near AUROC | far-OoD FPR95 | far AUROC |", "|---|---|---|---|---|"]
    for m in table:
        near, far = table[m]["near_test"], table[m]["far_test"]
        lines.append(f"| {m} | {_pct(near.get('fpr95'))} | {_num(near.get('auroc'))} | {_pct(far.get('fpr95'))} | "
                     f"{_num(far.get('auroc'))} |")
    lines += ["", "| filter applied | near-OoD hallucinations removed | far-OoD removed | ID true positives lost |",
              "|---|---|---|---|"]
    for m, r in results.items():
        lines.append(f"| {m} | {_pct(r['near_after']['reduction'])} ({r['near_before']} -> {r['near_after']['hallucinations']})"
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
