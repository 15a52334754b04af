"""The run's summary.json, as the supervisor reads and completes it.

Each sink writes its own summary.json as it runs. At the end the supervisor adds what only it knows
(restarts, exit codes, killed stages, refused peers, the failure) and applies the status rules: a run
is "complete" only if nothing was lost on the way; a killed sink, a source stopped because every
sink had ended, frames sent but neither written nor counted as dropped, or forged messages make it
"incomplete"; a Ctrl-C makes it "interrupted" (with `drained` saying whether every stream had ended).
A sink killed before it wrote any summary gets one here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.data.review_file import read_lines
from pipeline.errors import GhostboxError
from pipeline.json_files import write_json
from pipeline.stream.config import GraphConfig, SinkConfig
from pipeline.stream.stage_processes import StageProcesses

log = logging.getLogger(__name__)


def sink_summaries(graph: GraphConfig) -> list[tuple[Path, dict[str, Any]]]:
    """Each sink's summary.json that can be read now (a sink rewrites it as it runs)."""
    found = []
    for sink in graph.sinks:
        path = Path(sink.out) / "summary.json"
        try:
            found.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return found


def log_status(graph: GraphConfig) -> None:
    """The periodic one-line status of a run, from the first sink's summary."""
    for _, summary in sink_summaries(graph)[:1]:
        try:
            log.info("%d frames, %.1f frames/s, latency p50 %.0f ms p99 %.0f ms, %d dropped, %d boxes, %d flagged",
                     summary["frames"], summary["fps"], summary["latency_ms"]["p50"],
                     summary["latency_ms"]["p99"], summary["dropped"], summary["boxes"], summary["flagged"])
        except (KeyError, TypeError):
            pass


def _problem(summary: dict[str, Any], line: str) -> None:
    """Name a loss once; a summary with one is not complete."""
    if line not in summary.setdefault("problems", []):
        summary["problems"].append(line)
    if summary.get("status") == "complete":
        summary["status"] = "incomplete"


def _check_sent_against_written(graph: GraphConfig, progress: dict[str, dict[str, Any]], sink: str,
                                summary: dict[str, Any]) -> None:
    """Each source's frames as its own stage counted them, against what the sink wrote or knows was dropped:
    a sink that stopped early (an end of stream that came too soon, forged or not) cannot say complete."""
    per_source = summary.get("per_source") or {}
    for source in graph.sources:
        sent = progress.get(f"source:{source.id}", {}).get("sent")
        if not isinstance(sent, int):
            continue
        entry = per_source.get(source.id) or {}
        # error frames may or may not be rows: counting them here can hide a loss, never invent one
        accounted = sum(int(entry.get(key) or 0) for key in ("frames", "dropped", "errors"))
        if sent > accounted:
            _problem(summary, f"source {source.id} sent {sent} frames; sink {sink} wrote or counted as dropped "
                              f"{accounted}: {sent - accounted} missing")


def _count_rows_on_disk(graph: GraphConfig, sink: SinkConfig, summary: dict[str, Any]) -> None:
    """A killed sink's summary from the rows it did write: its last periodic summary (or none) lags them."""
    path = Path(sink.out) / "detections.jsonl"
    if not sink.jsonl or not path.is_file():
        return
    ids = {s.uri: str(s.id or s.uri) for s in graph.sources}
    per_source: dict[str, int] = {}
    try:
        lines, _ = read_lines(path)  # whole lines only: a torn last line is not a row
    except GhostboxError as exc:
        log.error("sink %s: %s", sink.name, exc)
        return
    for row in lines:
        if isinstance(row.get("source"), str):
            sid = ids.get(row["source"], str(row["source"]))
            per_source[sid] = per_source.get(sid, 0) + 1
    rows = sum(per_source.values())
    if rows > int(summary.get("frames") or 0):
        summary["frames"] = rows
        known = summary.setdefault("per_source", {})
        for sid, count in per_source.items():
            entry = known.setdefault(sid, {})
            entry["frames"] = max(int(entry.get("frames") or 0), count)
        line = f"the sink was killed: frames and per_source count the {rows} rows in {path.name}"
        if line not in summary.setdefault("problems", []):
            summary["problems"].append(line)


def _name_forgers(peers: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
    """Messages any stage refused for their seal: the run is not complete, and who sent them is named."""
    for stage, counts in peers.items():
        forgers = counts.get("forged") or {}
        if not forgers:
            continue
        named = ", ".join(f"{peer} ({n})" for peer, n in list(forgers.items())[:5])
        _problem(summary, f"{stage} refused {sum(int(n) for n in forgers.values())} forged message(s) (no valid "
                          f"seal; none written or believed) from {named}")


def annotate_summaries(graph: GraphConfig, stages: StageProcesses, progress: dict[str, dict[str, Any]],
                       interrupted: int | None, failure: str | None) -> list[dict[str, Any]]:
    """Add what only the supervisor knows (restarts, exit codes, killed stages) to each sink's summary.json;
    write one for a sink that could not (killed before it wrote any). `progress`: the stages' final counters;
    `interrupted`: the signal that stopped the run, if one did."""
    summaries = []
    found = {str(path): summary for path, summary in sink_summaries(graph)}
    for sink in graph.sinks:
        path = Path(sink.out) / "summary.json"
        summary = found.get(str(path))
        if summary is None:
            if f"sink:{sink.name}" not in stages.children or not sink.summary:
                continue  # never started: nothing to say about it
            summary = {"status": "running", "frames": 0, "problems": []}
        child = stages.children.get(f"sink:{sink.name}")
        if child is not None and child.name in stages.killed:
            summary["status"] = "incomplete"  # its last periodic summary is all it left
            _count_rows_on_disk(graph, sink, summary)
        for name in stages.orphaned_sources:
            _problem(summary, f"{name} was still sending when every sink had ended: frames after the sink's end are "
                              f"missing")
        _check_sent_against_written(graph, progress, sink.name, summary)
        if interrupted is None and summary.get("status") == "interrupted":
            # nobody pressed Ctrl-C: the sink was stopped before every stream ended, so frames are missing
            summary["status"] = "incomplete"
            summary.setdefault("problems", []).append(
                "the sink was stopped before every source's stream ended (no Ctrl-C or SIGTERM was given): "
                "frames are missing")
        if interrupted is not None and summary.get("status") not in ("running", "incomplete"):
            # the sink saw every stream end; it ended because it was asked to
            summary["drained"] = summary.get("status") == "complete"
            summary["status"] = "interrupted"
        summary["restarts"] = dict(stages.restarts)
        summary["exit_codes"] = {name: c.exit_code for name, c in stages.children.items()}
        if stages.killed:
            summary["killed"] = stages.killed
            for name, info in stages.killed.items():
                _problem(summary, f"stage {name} was killed ({info['why']}); about {info['held']} message(s) it "
                                  f"held were lost")
        peers = {name: {"refused": int(p.get("refused", 0) or 0), "bad_messages": int(p.get("bad", 0) or 0),
                        **({"forged": p["forgers"]} if isinstance(p.get("forgers"), dict) else {})}
                 for name, p in progress.items() if p.get("refused") or p.get("bad")}
        if peers:  # messages dropped and handshakes refused: the data is intact, but someone tried
            summary["peers"] = peers
        _name_forgers(peers, summary)
        if failure:
            summary["failure"] = failure
        try:
            write_json(path, summary, newline=False)
        except OSError as exc:
            log.error("sink %s: summary %s cannot be written (%s)", sink.name, path, exc)
            summary["status"] = "incomplete"
        summaries.append(summary)
    return summaries
