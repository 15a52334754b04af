"""`ghostbox run`: the streaming pipeline on this machine, from a graph config or from flags."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from pipeline.cli.detector_flags import detector_notes
from pipeline.cli.settings_args import SettingsFlags, SettingsHelpFormatter, add_setting
from pipeline.config_files import defaults_yaml, read_yaml
from pipeline.detect.config import DetectorConfig
from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)


GRAPH = "pipeline.stream.config"  # read when help is printed: importing it loads zmq



def _worker_count(value: str) -> int | str:
    """`--workers`: `auto` or a number, as `workers.count` takes them."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of workers, got '{value}'") from None

def add_graph_flags(parser: argparse.ArgumentParser) -> None:
    """The flags for the common case. Each is written once, with where its value goes in the graph config;
    defaults shown in the help are the graph config's (`SettingsHelpFormatter` on the parser)."""
    flags = SettingsFlags("graph_flags")
    flags.attach(parser)
    group = parser.add_argument_group("graph (flags win over the config file)")
    group.add_argument("--source", "-s", action="append", metavar="URI",
                       help="video, image, folder, glob, webcam index, rtsp/http URL or synth[:k=v,...]; repeatable")
    flags.add(group, "--model", "-m", model=DetectorConfig, field="model", path=("detector", "model"),
              help=".pt/.onnx model (default: the bundled street-world model)")
    flags.add(group, "--filter", model=f"{GRAPH}:FilterConfig", field="path", path=("filter", "path"),
              dest="filter_path", metavar="FILE", help="fitted filter file (default: none, boxes pass through)")
    flags.add(group, "--workers", "-w", model=f"{GRAPH}:WorkersConfig", field="count", path=("workers", "count"),
              dest="workers", type=_worker_count, help="detector worker processes, or auto")
    flags.add(group, "--mode", model=f"{GRAPH}:GraphConfig", field="mode", choices=("lossless", "live"),
              help="lossless (files) or live (cameras)")
    for flag, field, text in (("--imgsz", "imgsz", "inference size in pixels"),
                              ("--batch", "batch", "frames per forward pass, across streams"),
                              ("--device", "device", "auto, cpu, cuda or cuda:N"),
                              ("--conf", "conf", "confidence threshold")):
        flags.add(group, flag, model=DetectorConfig, field=field, path=("detector", field), help=text)
    add_setting(group, "--fps", model=f"{GRAPH}:SourceConfig", field="fps", type=float,
                help="frame-rate limit of every source")
    add_setting(group, "--out", "-o", model=f"{GRAPH}:SinkConfig", field="out", metavar="OUT",
                help="output folder of the (first) sink")
    group.add_argument("--no-video", dest="video", action="store_false", default=None, help="no annotated video")
    group.add_argument("--no-crops", dest="crops", action="store_false", default=None, help="no flagged-crop archive")
    flags.add(group, "--metrics-port", model=f"{GRAPH}:MetricsConfig", field="port", path=("metrics", "port"),
              dest="metrics_port", type=int, help="serve Prometheus metrics: stage k on PORT + k")
    flags.add(group, "--tracks", model=f"{GRAPH}:TracksConfig", field="enabled", path=("tracks", "enabled"),
              dest="tracks", action=argparse.BooleanOptionalAction,
              help="verdicts per track (ByteTrack in the sink) for every source, or for none; default: the config's "
                   "`tracks.enabled`")
    group.add_argument("--save-calibration-clip", dest="calibration_clip_frames", type=int, metavar="FRAMES",
                       help="write each source's first FRAMES frames, as captured, to OUT/calibration/ (for "
                       "`ghostbox calibrate --from FILTER --calibration-id OUT/calibration/SOURCE.avi`)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run", help="run the streaming pipeline (sources -> detector workers -> filter -> sinks)",
        description="Starts every stage of the graph as its own process, supervises them, and exits 0 when every "
                    "file source is done. Ctrl-C drains and stops the graph cleanly.",
        formatter_class=SettingsHelpFormatter,
    )
    parser.add_argument("config", nargs="?", help="graph YAML (see configs/pipeline.yaml; `ghostbox config run` "
                        "prints the defaults); optional with --source")
    add_graph_flags(parser)
    parser.add_argument("--web", metavar="[HOST:]PORT",
                        help="serve the live view and review page (loopback unless HOST is given; bound elsewhere, "
                        "the printed URL carries a token)")
    parser.set_defaults(handler=run)


def graph_from_args(args: argparse.Namespace) -> Any:
    # zmq loads with the stream package: only when a graph runs, not for every command's --help
    from pipeline.stream.config import graph_from_dict, with_overrides

    data = read_yaml(args.config) if args.config else {}
    if not args.config and not args.source:
        raise GhostboxError("give a graph config or at least one --source")
    flags: SettingsFlags | None = getattr(args, "graph_flags", None)
    given = flags.given(args) if flags is not None else {}
    if (given.get("filter") or {}).get("path") == "":
        given["filter"]["path"] = None  # --filter "": no filter, whatever the file says
    first_sink = {key: value for key, value in (("out", getattr(args, "out", None)),
                                                ("calibration_clip_frames", getattr(args, "calibration_clip_frames",
                                                                                    None))) if value is not None}
    every_sink = {key: value for key in ("video", "crops") if (value := getattr(args, key, None)) is not None}
    data = with_overrides(data, given, sources=args.source, fps=getattr(args, "fps", None), first_sink=first_sink,
                          every_sink=every_sink, web=bool(getattr(args, "web", None)))
    where = f"config '{args.config}'" if args.config else "command line"
    return graph_from_dict(data, where)


def default_config() -> str:
    """`ghostbox config run|stage`: the graph defaults, as a config file (sources still to be given)."""
    from pipeline.stream.config import GraphConfig

    return ("# ghostbox run FILE [--source URI ...]: command-line flags win over these values; see "
            "configs/pipeline.yaml.\n"
            + defaults_yaml({"": GraphConfig}, notes=detector_notes("detector")
                            | {"detector.model": "the detector; empty: the bundled street-world model"}))


def run_graph(graph: Any, log_level: str = "INFO", web: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """`web`: [HOST:]PORT of the live view (the first sink's), served while the graph runs."""
    from pipeline.stream.config import feed_url, resolve
    from pipeline.stream.supervisor import Supervisor

    temporary = graph.run_dir is None
    resolved = resolve(graph, graph.run_dir or tempfile.mkdtemp(prefix="gbx-"))
    server = None
    if web:
        from pipeline.web.server import WebServer

        sink = resolved.sinks[0]
        Path(sink.out).mkdir(parents=True, exist_ok=True)
        server = WebServer(sink.out, web, [feed_url(resolved.run_dir or '', sink.name)]).start()
        print(f"web view: {server.url}", flush=True)
    try:
        supervisor = Supervisor(resolved, log_level=log_level, remove_run_dir=temporary)
        code = supervisor.run()
    finally:
        if server is not None:
            server.stop()
    summaries = []
    for sink in resolved.sinks:
        path = Path(sink.out) / "summary.json"
        if path.is_file():
            summaries.append(json.loads(path.read_text()))
    return code, summaries


def print_summary(summary: dict[str, Any], out: str) -> None:
    """One line of figures, then one line per thing that was skipped, cut, lost or not written."""
    lat = summary.get("latency_ms") or {}
    if "fps" in summary and lat:
        print(f"{summary['frames']} frames at {summary['fps']:.1f} frames/s, latency p50 {lat['p50']:.1f} ms "
              f"p95 {lat['p95']:.1f} ms p99 {lat['p99']:.1f} ms; {summary['dropped']} dropped; "
              f"{summary['boxes']} boxes, {summary['flagged']} flagged -> {out}")
    for stage, counts in (summary.get("peers") or {}).items():
        print(f"{stage}: {counts['refused']} peer(s) refused at the handshake, {counts['bad_messages']} bad "
              f"message(s) dropped")
    status = summary.get("status", "unknown")
    if status != "complete":
        print(f"status: {status} (details in {Path(out) / 'summary.json'})")
        for problem in summary.get("problems") or []:
            print(f"  - {problem}")


def log_level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())


def run(args: argparse.Namespace) -> int:
    graph = graph_from_args(args)
    code, summaries = run_graph(graph, log_level(), web=getattr(args, "web", None))
    for sink, summary in zip(graph.sinks, summaries):
        print_summary(summary, sink.out)
    if getattr(args, "web", None) and summaries:
        print(f"review its tracks later: ghostbox review {graph.sinks[0].out} --web {args.web}")
    return code
