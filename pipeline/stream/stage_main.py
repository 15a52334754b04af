"""Run one stage of a graph in this process: `python -m pipeline.stream.stage_main NAME --graph G`.

This is what the supervisor spawns (a light entry point: only the worker imports torch)
and what `ghostbox stage NAME --config C` calls. Exit codes: 0 done, 2 configuration or
input error (one line on stderr), 3 a source whose stream failed but ended with EOS,
1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import GhostboxError
from pipeline.stream.config import GraphConfig, default_run_dir, load_graph, progress_file, read_graph_json, resolve


def run_stage(graph: GraphConfig, name: str, parent_pid: int | None = None) -> int:
    """Build the named stage and run it to its end; returns the exit code."""
    kind, _, arg = name.partition(":")
    if name not in graph.stage_names():
        raise GhostboxError(f"no stage '{name}' in this graph; stages: {', '.join(graph.stage_names())}")
    # a stage process imports its own stage's module only (the worker's loads torch)
    if kind == "broker":
        from pipeline.stream.broker import BrokerStage

        return BrokerStage(graph, parent_pid).run()
    if kind == "filter":
        from pipeline.stream.filter_stage import FilterStage

        return FilterStage(graph, parent_pid).run()
    if kind == "sink":
        from pipeline.stream.sink_stage import SinkStage

        return SinkStage(graph, arg, parent_pid).run()
    if kind == "worker":
        from pipeline.stream.detector_stage import WorkerStage

        return WorkerStage(graph, int(arg), parent_pid).run()
    from pipeline.stream.source_stage import SourceStage

    return SourceStage(graph, arg, parent_pid).run()


def load_for_stage(graph_json: str | None, config: str | None) -> GraphConfig:
    if graph_json:
        return read_graph_json(graph_json)
    if not config:
        raise GhostboxError("pass --graph (resolved JSON) or --config (YAML)")
    return resolve(load_graph(config), default_run_dir(config))


def setup_logging(name: str, level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format=f"[{name}] %(levelname)s %(message)s", stream=sys.stderr, force=True)
    logging.getLogger("ultralytics").setLevel(logging.WARNING)


def _leave_error(graph_json: str | None, name: str, error: str) -> bool:
    """The refusal, where the supervisor can quote it in its one-line exit message; False if it cannot."""
    if not graph_json:
        return False
    try:
        path = progress_file(Path(graph_json).parent, name, ".error")
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_text(error)
        return True
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stream.stage_main")
    parser.add_argument("name")
    parser.add_argument("--graph", help="resolved graph JSON (written by the supervisor)")
    parser.add_argument("--config", help="graph YAML")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is no longer the parent")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.name, args.log_level)
    if args.parent_pid is not None and os.getppid() != args.parent_pid:
        return 1  # the supervisor died before this process started
    try:
        graph = load_for_stage(args.graph, args.config)
        os.makedirs(graph.run_dir or ".", mode=0o700, exist_ok=True)  # ipc sockets: this user only
        return run_stage(graph, args.name, args.parent_pid)
    except GhostboxError as exc:
        # under the supervisor, it quotes the refusal as the run's one line; alone, say it here
        if args.parent_pid is None or not _leave_error(args.graph, args.name, str(exc)):
            print(f"[{args.name}] error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
