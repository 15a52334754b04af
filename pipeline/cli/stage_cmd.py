"""`ghostbox stage NAME --config C`: run one stage of a graph, e.g. on another machine."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.errors import GhostboxError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "stage", help="run one stage of a streaming graph (for graphs spread over machines)",
        description="Stage names: broker, filter, sink:<name>, worker:<i>, source:<id> (--list prints them). "
                    "Every stage of a graph reads the same config; tcp endpoints join machines. A stage ends by "
                    "itself once every source's end-of-stream went through it; SIGTERM / Ctrl-C end it cleanly.",
    )
    parser.add_argument("name", nargs="?", help="the stage to run")
    parser.add_argument("--config", "-c", required=True, help="graph YAML (see configs/pipeline.yaml; "
                        "`ghostbox config stage` prints the defaults)")
    parser.add_argument("--list", action="store_true", help="print the graph's stages and their metrics ports")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # zmq loads with the stream package: only when a stage runs, not for every command's --help
    from pipeline.stream.config import default_run_dir, load_graph, resolve
    from pipeline.stream.stage_main import run_stage, setup_logging

    graph = resolve(load_graph(args.config), default_run_dir(args.config))
    if args.list or not args.name:
        for name in graph.stage_names():
            port = graph.metrics_port(name)
            print(f"{name}" + (f"  metrics http://{graph.metrics.host}:{port}/metrics" if port else ""))
        return 0
    if args.name not in graph.stage_names():
        raise GhostboxError(f"no stage '{args.name}' in {args.config}; stages: {', '.join(graph.stage_names())}")
    setup_logging(args.name, logging.getLevelName(logging.getLogger().getEffectiveLevel()))
    Path(graph.run_dir or ".").mkdir(mode=0o700, parents=True, exist_ok=True)  # ipc sockets: this user only
    return run_stage(graph, args.name)
