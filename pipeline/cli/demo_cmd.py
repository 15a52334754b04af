"""`ghostbox demo`: stream the synthetic world through the bundled model and filter, and score it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.run_cmd import log_level, print_summary, run_graph
from pipeline.cli.settings_args import SettingsHelpFormatter, add_setting
from pipeline.json_files import write_json
from pipeline.synth.config import WorldConfig

GRAPH = "pipeline.stream.config"  # the graph's defaults, read when help is printed (importing it loads zmq)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="stream the synthetic street world through the bundled model and filter",
        description="Runs the streaming pipeline on the synthetic world's video, writes OUT/annotated/street.mp4, "
                    "OUT/detections.jsonl, OUT/flagged/ and OUT/summary.json, and prints how many hallucinations "
                    "the filter caught and how many ID objects it wrongly flagged, against the ground truth.",
        formatter_class=SettingsHelpFormatter,
    )
    parser.add_argument("--out", "-o", default="runs/demo", help="output folder (default runs/demo)")
    add_setting(parser, "--frames", model=WorldConfig, field="stream_frames", dest="frames", type=int,
                help="frames of the world's stream")
    add_setting(parser, "--seed", model=WorldConfig, field="seed", type=int, help="the world's seed")
    add_setting(parser, "--workers", "-w", model=f"{GRAPH}:WorkersConfig", field="count", dest="workers", type=int,
                help="detector worker processes")
    add_setting(parser, "--mode", model=f"{GRAPH}:GraphConfig", field="mode", choices=("lossless", "live"),
                help="lossless or live")
    parser.add_argument("--model", "-m", help="detector (default: the bundled street-world model)")
    parser.add_argument("--filter", dest="filter_path", help="filter file (default: the bundled filter)")
    parser.add_argument("--imgsz", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--no-video", dest="video", action="store_false", default=None, help="no annotated video")
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--tracks", action=argparse.BooleanOptionalAction, default=None,
                        help="verdicts per track (ByteTrack + hysteresis; the default for the world's stream); "
                             "--no-tracks: per frame")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # zmq loads with the stream package: only when the demo runs, not for every command's --help
    from pipeline.sources.synth_reader import parse_synth_uri
    from pipeline.stream.config import graph_from_dict
    from pipeline.stream.demo import demo_config
    from pipeline.synth import WorldConfig
    from pipeline.synth.truth_judging import describe, score_against_truth

    given = {name: getattr(args, name) for name in ("frames", "seed", "workers", "mode", "video", "tracks")
             if getattr(args, name) is not None}
    data = demo_config(args.out, model=args.model, filter_path=args.filter_path, imgsz=args.imgsz,
                       metrics_port=args.metrics_port, batch=args.batch, **given)
    graph = graph_from_dict(data, "demo")
    code, summaries = run_graph(graph, log_level())
    if not summaries:
        return code or 1
    print_summary(summaries[0], args.out)
    world = WorldConfig(**parse_synth_uri(graph.sources[0].uri))
    counts = score_against_truth(Path(args.out) / "detections.jsonl", world)
    summary_path = Path(args.out) / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["demo"] = counts
    write_json(summary_path, summary, newline=False)
    if not graph.filter.path:
        print("no filter: nothing was flagged (pass --filter FILE)")
    print(describe(counts))
    return code
