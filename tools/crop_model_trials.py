"""What a crop model adds to the box-feature filter: every variant tried, under one protocol, over seeds.

    .venv/bin/python tools/crop_model_trials.py [--seeds 0,1,2] [--out docs/benchmarks/crop-model.md]

Protocol (development data only: the seed-0 world and its stream, which `ghostbox demo` shows):
1. Boxes, collected once with the bundled model (head+roi features, conf 0.25) and their crops:
   ID true positives of id/train (fit and thresholds), outlier boxes on ood/pool (pool kinds
   only), ID true positives of id/val, hallucinations on ood/near_test and ood/far_test (test
   kinds, never fitted on), and the demo stream's boxes (`synth:seed=0,frames=300`) judged as
   `ghostbox demo` judges them.
2. Each variant is fitted as `ghostbox calibrate` fits it (held-out id/train images set one
   overall threshold at 95% ID TPR); the crop model's seed varies, the rest is fixed.
3. Figures: ID TPs flagged on id/val, near/far hallucinations removed (per kind too), AUROC;
   on the demo stream, track verdicts (the demo's default): hallucinations caught, per kind and
   per object, ID detections wrongly flagged; and beside each, the confidence cut that flags
   as many ID boxes. Mean and spread (sd) over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: list[tuple[str, str, dict[str, Any], bool]] = [  # label, method, params, seeded
    ("oe (bundled recipe)", "oe", {}, False),
    ("crop alone", "crop", {}, True),
    ("oe + crop, logistic combiner", "fusion", {"members": ["oe", "crop"], "method": "logistic"}, True),
    ("oe + crop, rank mean", "fusion", {"members": ["oe", "crop"], "method": "rank"}, True),
    ("oe + crop (width 16: a quarter of the compute)", "fusion",
     {"members": ["oe", {"name": "crop", "params": {"width": 16}}], "method": "logistic"}, True),
    ("oe + crop (24 epochs)", "fusion", {"members": ["oe", {"name": "crop", "params": {"epochs": 24}}],
                                        "method": "logistic"}, True),
    ("oe + crop (no synthetic outliers)", "fusion", {"members": ["oe", {"name": "crop", "params": {"synth": []}}],
                                                    "method": "logistic"}, True),
]


def seeded(method: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The variant's params with the crop model's seed set."""
    if method == "crop":
        return {**params, "seed": seed}
    members = []
    for m in params["members"]:
        spec = {"name": m, "params": {}} if isinstance(m, str) else {"name": m["name"], "params": dict(m["params"])}
        if spec["name"] == "crop":
            spec["params"]["seed"] = seed
        members.append(spec)
    return {**params, "members": members}


def collect(world: Path, demo_frames: int) -> dict[str, Any]:
    from pipeline import synth
    from pipeline.bundled import default_model
    from pipeline.data import parse_dataset_spec
    from pipeline.detect.detector import Detector
    from pipeline.evaluate.runner import evaluate_id, evaluate_ood
    from pipeline.filter.id_collection import collect_id_boxes
    from pipeline.filter.outlier_collection import collect_outlier_boxes

    detector = Detector(model=str(default_model()), device="cpu", batch=16, box_features="head+roi")
    ids = collect_id_boxes(detector, str(world / "id" / "train"), crops=True)
    outliers, _ = collect_outlier_boxes(detector, [str(world / "ood" / "pool")], crops=True)
    val = evaluate_id(detector, parse_dataset_spec(str(world / "id" / "val"), class_names=list(detector.class_names)),
                      0.25, [], crops=True)
    ood = {}
    for name in ("near_test", "far_test"):
        result = evaluate_ood(detector, parse_dataset_spec(str(world / "ood" / name)), 0.25, [], crops=True)
        ood[name] = result
    stream = synth.WorldConfig(seed=0, stream_frames=demo_frames)
    demo = []
    for i in range(demo_frames):
        image, truth = synth.render_stream_frame(stream, i)
        [dets] = detector.detect([image], crops=True)
        demo.append((dets, truth))
    return {"ids": ids, "outliers": outliers, "val": val.tp, "ood": ood, "demo": demo, "detector": detector}


def demo_figures(filt: Any, demo: list[tuple[Any, list[dict[str, Any]]]]) -> dict[str, Any]:
    from pipeline.filter.track_verdicts import TrackVerdicts
    from pipeline.kind_tally import KindTally, confidence_cut
    from pipeline.synth.truth_judging import judge_against_truth
    from pipeline.tracks import Tracker

    tracker, verdicts, tally = Tracker(), TrackVerdicts(), KindTally()
    on_ood_all, on_id_all, flags, conf = [], [], [], []
    for index, (dets, truth) in enumerate(demo):
        dets = filt.apply(dets)
        ids = tracker.update(dets)
        margin = dets.data["score"].astype(np.float64) - dets.data["threshold"].astype(np.float64)
        _, verdict = verdicts.update(index, ids, margin)
        match, _, on_ood, on_id = judge_against_truth(dets.xyxy.astype(np.float32), truth)
        on = [truth[m] for m in match[on_ood]]
        tally.add([t["kind"] for t in on], [t["track_id"] for t in on], np.asarray(verdict)[on_ood])
        on_ood_all.append(on_ood)
        on_id_all.append(on_id)
        flags.append(np.asarray(verdict, bool))
        conf.append(dets.confidence)
    on_ood, on_id, flag, c = (np.concatenate(a) for a in (on_ood_all, on_id_all, flags, conf))
    cut = confidence_cut(c[on_id], flag[on_id], c[on_ood])
    return {"caught": float(flag[on_ood].mean()), "id_flagged": float(flag[on_id].mean()),
            "confidence_cut_caught": cut["caught"], "per_kind": tally.rows(), **tally.totals()}


def image_figures(filt: Any, data: dict[str, Any]) -> dict[str, Any]:
    from pipeline.filter.ood_metrics import auroc
    from pipeline.kind_tally import confidence_cut

    val = data["val"]
    s_id, _, f_id = filt.judge(val)
    out: dict[str, Any] = {"id_flagged": float(f_id.mean())}
    for name, result in data["ood"].items():
        boxes = result.hallucinations
        s, _, f = filt.judge(boxes)
        out[name] = float(f.mean())
        out[f"{name}_auroc"] = float(auroc(s_id, s))
        out[f"{name}_confidence_cut"] = confidence_cut(val.confidence, f_id, boxes.confidence)["caught"]
        if name == "near_test":
            kinds = result.kind_of_hallucination
            out["near_per_kind"] = {result.kinds[k]: float(f[kinds == k].mean()) for k in np.unique(kinds) if k >= 0}
    return out


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}%"
    return f"{100 * statistics.mean(values):.1f}% +- {100 * statistics.stdev(values):.1f}"


def markdown(rows: list[dict[str, Any]], command: str, made: dict[str, Any]) -> str:
    from pipeline.bench.report import table
    from pipeline.page_stamp import header_line

    lines = ["<!-- written by tools/crop_model_trials.py; re-run the command in the header line -->", "",
             "# The crop model: what was tried", "", header_line({**made, "command": command}), "",
             "Development data only (the seed-0 world's images and the demo's stream); the test kinds were never "
             "fitted on. Mean +- sd over the crop model's seeds (n in the table); thresholds: one overall threshold "
             "at 95% ID TPR on held-out id/train images. The confidence cut flags as many ID boxes as the filter.",
             "", "## The world's images (id/val, ood/near_test, ood/far_test)", ""]
    head = ["variant", "n", "ID TPs flagged", "near removed", "near AUROC", "far removed", "conf. cut: near, far",
            "fit s"]
    body = []
    for row in rows:
        runs = row["runs"]
        body.append([row["label"], len(runs), mean_sd([r["images"]["id_flagged"] for r in runs]),
                     mean_sd([r["images"]["near_test"] for r in runs]),
                     f"{statistics.mean(r['images']['near_test_auroc'] for r in runs):.3f}",
                     mean_sd([r["images"]["far_test"] for r in runs]),
                     f"{mean_sd([r['images']['near_test_confidence_cut'] for r in runs])}, "
                     f"{mean_sd([r['images']['far_test_confidence_cut'] for r in runs])}",
                     f"{statistics.mean(r['fit_s'] for r in runs):.0f}"])
    lines += table(head, body)
    kinds = sorted({k for row in rows for r in row["runs"] for k in r["images"]["near_per_kind"]})
    lines += ["Near-OoD removed per kind (mean over seeds):", ""]
    lines += table(["variant"] + kinds, [[row["label"]] + [
        f"{100 * statistics.mean(r['images']['near_per_kind'].get(k, 0.0) for r in row['runs']):.0f}%" for k in kinds]
        for row in rows])
    lines += ["## The demo stream (`synth:seed=0,frames=300`, track verdicts)", ""]
    head = ["variant", "n", "caught", "ID wrongly flagged", "objects caught", "conf. cut caught", "caught per kind"]
    body = []
    for row in rows:
        runs = row["runs"]
        per_kind = {k: statistics.mean(r["demo"]["per_kind"][k]["caught"] / r["demo"]["per_kind"][k]["boxes"]
                                       for r in runs) for k in runs[0]["demo"]["per_kind"]}
        body.append([row["label"], len(runs), mean_sd([r["demo"]["caught"] for r in runs]),
                     mean_sd([r["demo"]["id_flagged"] for r in runs]),
                     f"{statistics.mean(r['demo']['objects_caught'] for r in runs):.1f} of "
                     f"{runs[0]['demo']['objects']}",
                     mean_sd([r["demo"]["confidence_cut_caught"] for r in runs]),
                     ", ".join(f"{k} {100 * v:.0f}%" for k, v in per_kind.items())])
    lines += table(head, body)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=ROOT / ".ghostbox" / "worlds" / "seed0")
    parser.add_argument("--seeds", default="0,1,2", help="crop model seeds of the first seeded variants")
    parser.add_argument("--more-seeds", type=int, default=2, help="seeded variants after the first two: this many "
                        "of --seeds")
    parser.add_argument("--demo-frames", type=int, default=300)
    parser.add_argument("--variants", help="comma-separated indices into VARIANTS (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "crop-model.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline.filter.hallucination_filter import HallucinationFilter
    from pipeline.page_stamp import made
    from pipeline.synth import WorldConfig, generate_world

    if not (args.world / "world.json").is_file():
        generate_world(WorldConfig(seed=0), args.world)
    seeds = [int(s) for s in args.seeds.split(",")]
    data = collect(args.world, args.demo_frames)
    detector, ids = data["detector"], data["ids"]
    chosen = VARIANTS if not args.variants else [VARIANTS[int(i)] for i in args.variants.split(",")]
    rows = []
    for number, (label, method, params, is_seeded) in enumerate(chosen):
        runs = []
        for seed in (seeds if number < 3 else seeds[:args.more_seeds]) if is_seeded else [0]:
            started = time.perf_counter()
            filt = HallucinationFilter.fit(method, ids, detector.class_names, detector.fingerprint(),
                                           params=seeded(method, params, seed) if is_seeded else params,
                                           outliers=data["outliers"])
            fit_s = time.perf_counter() - started
            run = {"seed": seed, "fit_s": fit_s, "images": image_figures(filt, data),
                   "demo": demo_figures(filt, data["demo"])}
            runs.append(run)
            images, demo = run["images"], run["demo"]
            print(json.dumps({"variant": label, "seed": seed, "fit_s": round(fit_s, 1),
                              "near": round(images["near_test"], 3), "far": round(images["far_test"], 3),
                              "id": round(images["id_flagged"], 3), "demo_caught": round(demo["caught"], 3),
                              "demo_wrong": round(demo["id_flagged"], 3)}), flush=True)
        rows.append({"label": label, "method": method, "params": params, "runs": runs})
    command = "tools/crop_model_trials.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, command.strip(), made(command.strip())))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
