"""`ghostbox demo`: stream the synthetic world through the bundled model and filter, and score it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="stream the synthetic street world through the bundled model and filter",
        description="Runs the streaming pipeline on the synthetic world's video, writes OUT/annotated/street.mp4, "
                    "OUT/detections.jsonl, OUT/flagged/ and OUT/summary.json, and prints how many hallucinations "
                    "the filter caught and how many ID objects it wrongly flagged, against the ground truth.",
    )
    parser.add_argument("--out", "-o", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--frames", type=int, default=300, help="frames of the world's stream (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed")
    parser.add_argument("--workers", "-w", type=int, default=1)
    parser.add_argument("--mode", choices=("lossless", "live"), default="lossless")
    parser.add_argument("--model", "-m", help="detector (default: the bundled street-world model)")
    parser.add_argument("--filter", dest="filter_path", help="filter file (default: the bundled filter)")
    parser.add_argument("--imgsz", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--no-video", dest="video", action="store_false")
    parser.add_argument("--metrics-port", type=int)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.cli.run_cmd import log_level, print_summary, run_graph
    from pipeline.stream.config import graph_from_dict
    from pipeline.stream.demo import demo_config, describe, score_against_truth

    data = demo_config(args.out, frames=args.frames, seed=args.seed, workers=args.workers, mode=args.mode,
                       model=args.model, filter_path=args.filter_path, imgsz=args.imgsz,
                       metrics_port=args.metrics_port, video=args.video, batch=args.batch)
    graph = graph_from_dict(data, "demo")
    code, summaries = run_graph(graph, log_level())
    if not summaries:
        return code or 1
    print_summary(summaries[0], args.out)
    counts = score_against_truth(Path(args.out) / "detections.jsonl", graph.sources[0].uri)
    summary_path = Path(args.out) / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["demo"] = counts
    summary_path.write_text(json.dumps(summary, indent=2))
    if not graph.filter.path:
        print("no filter: nothing was flagged (pass --filter FILE)")
    print(describe(counts))
    return code
