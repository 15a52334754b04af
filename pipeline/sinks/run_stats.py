"""A run's account, source by source, and the summary.json figures and problem lines it adds up to:
`RunStats`, beside `summary_file.SummaryFile`, which writes them.

What each source's frames held (boxes, flagged, errors, latency), how the source ended (its
sanitised end of stream, the reorder counts) and what contradicted it (conflicts, forged messages)
are kept here; the stream sink fills in what only a stream knows. The outputs say what they wrote
and lost (`OutputReport`): their figures join each source's entry and their lines the problems,
so summary.json names every loss, with its numbers, in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.sinks.output import FrameRecord, OutputReport

MAX_PROBLEMS = 50  # lines in summary.json's `problems`; the counts stay complete
MAX_NAMED = 3  # files named in one problem line
# output figures every source's entry names, 0 when that output is off: readers find the same keys in every run
OUTPUT_FIGURES = {"rows_lost": 0, "crops_written": 0, "crops_failed": 0}


class Durations(Protocol):
    """Percentiles of durations in constant memory (`pipeline.stream.metrics.LatencyStats`)."""

    count: int

    def add(self, seconds: float) -> None: ...

    def summary_ms(self) -> dict[str, float]: ...


@dataclass
class SourceStats:
    latency: Durations  # capture to written
    live: bool = False
    frames: int = 0
    boxes: int = 0
    flagged: int = 0
    errors: int = 0
    first_error: str = ""
    dropped: int = 0
    first_capture: float | None = None
    last_out: float | None = None
    eos: dict[str, Any] | None = None  # sanitised: status, detail, dropped, total, epoch, stats
    eos_received: bool = False  # False: the sink made `eos` up at shutdown
    finished: bool = False  # every frame up to the EOS total went through
    reorder: dict[str, int] = field(default_factory=dict)
    drift: dict[str, Any] | None = None  # the filter's last rolling drift figures for this source
    unwritten: int = 0  # frames an unexpected error kept out of (some of) the outputs
    unwritten_error: str = ""
    conflicts: int = 0
    conflict: str = ""
    forged: int = 0  # messages refused for a missing or wrong seal
    forged_first: str = ""


def _named(items: list[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {total - min(len(items), MAX_NAMED)} more" if total > min(len(items), MAX_NAMED) else "")


class RunStats:
    """`live`: source id -> live (a live source may skip frames; a lossless one must not)."""

    def __init__(self, live: dict[str, bool], durations: Callable[[], Durations]) -> None:
        self.sources = {sid: SourceStats(durations(), live=is_live) for sid, is_live in live.items()}
        self.latency = durations()
        self.started = time.time()

    def count(self, frame: FrameRecord, t_out: float) -> float:
        """A frame written at `t_out`; returns its latency from capture."""
        s = self.sources[frame.source]
        capture = frame.t_capture if frame.t_capture is not None else t_out
        latency = t_out - capture
        s.frames += 1
        s.boxes += len(frame.dets)
        s.flagged += int(frame.flagged.sum())
        if frame.error:
            s.errors += 1
            s.first_error = s.first_error or str(frame.error)[:200]
        s.first_capture = capture if s.first_capture is None else min(s.first_capture, capture)
        s.last_out = t_out
        s.latency.add(latency)
        self.latency.add(latency)
        return latency

    def write_failed(self, source: str, detail: str) -> bool:
        """A frame an unexpected error kept from (some of) its outputs; True for the source's first."""
        s = self.sources[source]
        s.unwritten += 1
        if s.unwritten_error:
            return False
        s.unwritten_error = detail[:300]
        return True

    def stopped_early(self) -> bool:
        """A source was told to stop (it said so in its end of stream)."""
        return any(s.eos_received and (s.eos or {}).get("status") == "interrupted" for s in self.sources.values())

    # -- problems -------------------------------------------------------------------------------

    def problems(self, reports: list[OutputReport], final: bool = False) -> list[str]:
        """One line per thing lost or contradicted, naming the source or file and the numbers."""
        lines: list[str] = []
        for sid, s in self.sources.items():
            lines += _source_problems(sid, s, final, [line for r in reports for line in r.source_problems.get(sid, [])])
        lines += [line for report in reports for line in report.problems]
        if len(lines) > MAX_PROBLEMS:
            lines = lines[:MAX_PROBLEMS - 1] + [f"... and {len(lines) - MAX_PROBLEMS + 1} more"]
        return lines

    # -- figures --------------------------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        """The run's figures over every source (summary.json's top level)."""
        sources = self.sources.values()
        frames, boxes, flagged = (sum(s.frames for s in sources), sum(s.boxes for s in sources),
                                  sum(s.flagged for s in sources))
        first = last = None
        for s in sources:
            if s.frames and s.first_capture is not None and s.last_out is not None:  # both set with the first frame
                first = s.first_capture if first is None else min(first, s.first_capture)
                last = s.last_out if last is None else max(last, s.last_out)
        span = (last - first) if first is not None and last is not None else 0.0
        return {"frames": frames, "fps": round(frames / span, 2) if span > 0 else 0.0,
                "wall_s": round(time.time() - self.started, 2), "latency_ms": self.latency.summary_ms(),
                "dropped": sum(s.dropped for s in sources), "boxes": boxes, "kept": boxes - flagged,
                "flagged": flagged, "errors": sum(s.errors for s in sources)}

    def per_source(self, reports: list[OutputReport], extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Each source's entry: its figures, its end, the outputs' figures for it, and `extra` (e.g. tracks)."""
        entries = {}
        for sid, s in self.sources.items():
            span = (s.last_out - s.first_capture) if s.frames and s.last_out and s.first_capture else 0.0
            eos = s.eos or {}
            reorder = dict(s.reorder)
            broker_dropped = (eos.get("stats") or {}).get("broker_dropped") or 0
            if reorder.get("skipped") and broker_dropped:
                # a frame the broker dropped (live) never reaches the sink either: it is counted in
                # `dropped`, not again as a gap the sink skipped
                reorder["skipped"] = max(0, reorder["skipped"] - broker_dropped)
            figures = dict(OUTPUT_FIGURES)
            for report in reports:
                figures.update(report.per_source.get(sid, {}))
            entries[sid] = {
                "frames": s.frames, "fps": round(s.frames / span, 2) if span > 0 else 0.0,
                "latency_ms": s.latency.summary_ms(), "dropped": s.dropped, "boxes": s.boxes,
                "kept": s.boxes - s.flagged, "flagged": s.flagged, "errors": s.errors,
                "status": eos.get("status", "running"), "detail": eos.get("detail", ""),
                **(eos.get("stats") or {}), **reorder, **figures,
                "conflicts": s.conflicts, **({"conflict": s.conflict} if s.conflict else {}),
                **({"forged": s.forged} if s.forged else {}),
                **({"drift": s.drift} if s.drift else {}),
                **extra.get(sid, {}),
            }
        return entries

    def live_figures(self, tracks: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
        """The counters of every source for the live web view; `tracks`: a tracked source's track counts."""
        figures: dict[str, dict[str, Any]] = {}
        for sid, s in self.sources.items():
            latency = s.latency.summary_ms()
            figures[sid] = {"frames": s.frames, "boxes": s.boxes, "kept": s.boxes - s.flagged, "flagged": s.flagged,
                            "dropped": s.dropped, "latency_p50_ms": latency.get("p50", 0.0),
                            "latency_p95_ms": latency.get("p95", 0.0)}
            counts = tracks.get(sid)
            if counts:
                figures[sid].update(tracks=counts.get("tracks", 0), flagged_tracks=counts.get("hallucinations", 0))
            if s.drift:
                figures[sid].update(flag_rate_drift=s.drift.get("flag_rate", 0.0), psi=s.drift.get("psi", 0.0),
                                    drift_alarm=bool(s.drift.get("alarm")))
        return figures


def merged(reports: list[OutputReport], part: str) -> dict[str, Any]:
    """The reports' `outputs` or `writes` entries in one dict; one key from several outputs (e.g. `videos`)
    merges theirs."""
    out: dict[str, Any] = {}
    for report in reports:
        for key, value in getattr(report, part).items():
            out[key] = {**out[key], **value} if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def _source_problems(sid: str, s: SourceStats, final: bool, output_lines: list[str]) -> list[str]:
    lines: list[str] = []
    eos = s.eos or {}
    src = eos.get("stats") or {}
    if final and not s.finished:
        total = eos.get("total") if s.eos_received else None
        if total is not None:
            lines.append(f"source {sid}: {max(total - s.frames, 0)} of {total} frames missing "
                         "(the sink stopped before they arrived)")
        else:
            lines.append(f"source {sid}: end never received ({s.frames} frames delivered)")
    status = eos.get("status")
    truncated = src.get("truncated", [])
    reasons = [f"'{t['file']}' ends early" + (f" ({t['read']} of {t['expected']})" if len(truncated) > 1 else "")
               for t in truncated[:MAX_NAMED]]
    if len(truncated) > MAX_NAMED:
        reasons.append(f"{len(truncated) - MAX_NAMED} more videos end early")
    files = src.get("unreadable_files", [])
    unreadable = src.get("unreadable") or len(files)
    if unreadable:
        named = f": {_named([repr(f) for f in files], unreadable)}" if files else ""
        reasons.append(f"{unreadable} unreadable file(s) skipped{named}")
    if reasons or (s.eos_received and status != "ok"):
        read, expected = src.get("read"), src.get("expected")
        head = (f"{read} of {expected} frames read" if read is not None and expected is not None else
                f"{read} frames read" if read is not None else "")
        why = "; ".join(reasons) or eos.get("detail") or ""
        if status not in ("ok", "incomplete"):
            why = f"ended '{status}'" + (f": {why}" if why else "")
        lines.append(f"source {sid}: " + (f"{head} ({why[:300]})" if head and why else head or why[:300]))
    reorder = s.reorder
    if not s.live and reorder.get("skipped") and s.finished:
        lines.append(f"source {sid}: {reorder['skipped']} frames never arrived")
    if reorder.get("out_of_window"):
        lines.append(f"source {sid}: {reorder['out_of_window']} frames refused "
                     "(numbered beyond the reorder window)")
    if reorder.get("over_budget"):
        lines.append(f"source {sid}: {reorder['over_budget']} frames refused (the frames held to restore order "
                     "reached limits.reorder_max_bytes)")
    if reorder.get("beyond_end"):
        lines.append(f"source {sid}: {reorder['beyond_end']} frames numbered past the end of the stream "
                     f"({eos.get('total')} frames)")
    if not s.live and s.dropped:
        lines.append(f"source {sid}: {s.dropped} frames dropped")
    if s.errors:
        lines.append(f"source {sid}: {s.errors} frames without detections ({s.first_error})")
    if s.unwritten:
        lines.append(f"source {sid}: {s.unwritten} frames not written ({s.unwritten_error})")
    lines += output_lines
    if s.conflicts:
        lines.append(f"source {sid}: {s.conflicts} conflicting message(s) (first: {s.conflict})")
    if s.forged:
        lines.append(f"source {sid}: {s.forged} forged message(s) refused, none written (first: {s.forged_first})")
    return lines
