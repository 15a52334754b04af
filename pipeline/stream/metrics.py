"""Metrics of one stage process: Prometheus counters/histograms, constant-memory percentiles,
and rate-limited logging of bad messages.

Each stage process serves its own registry on its own port (stage k of `ghostbox stage
--list` on `metrics.port + k`), so a Prometheus scrape config lists them as targets; there
is no aggregator to become a bottleneck or a single point of failure. Metric names:

    ghostbox_frames_in_total{stage,source}          frames received
    ghostbox_frames_out_total{stage,source}         frames passed on (sinks: written)
    ghostbox_frames_dropped_total{stage,source,reason}
    ghostbox_boxes_total{stage,source,verdict}      verdict: kept | flagged
    ghostbox_stage_seconds{stage}                   work time per frame (detect, filter, write)
    ghostbox_hop_seconds{hop}                       transport + queueing between two stages
    ghostbox_latency_seconds{source}                capture to sink, per source
    ghostbox_queue_depth{stage,queue}               frames waiting in a stage's queues
    ghostbox_bad_messages_total{stage,reason}       malformed or wrong-version messages dropped
    ghostbox_events_total{stage,event}              worker deaths, re-sent frames, reconnects...
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pipeline.errors import GhostboxError

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LatencyStats:
    """Percentiles of durations in constant memory: log-spaced bins 2% wide, 10 us to 1000 s.

    A run of hours must not grow a list of every latency; the 1% error of a bin is far below
    the jitter of what it measures.
    """

    LO, HI, GROWTH = 1e-5, 1e3, 1.02

    def __init__(self) -> None:
        self._log_growth = math.log(self.GROWTH)
        self.counts = np.zeros(int(math.log(self.HI / self.LO) / self._log_growth) + 2, np.int64)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        seconds = max(float(seconds), 0.0)
        index = 0 if seconds <= self.LO else min(int(math.log(seconds / self.LO) / self._log_growth) + 1,
                                                 len(self.counts) - 1)
        self.counts[index] += 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def merge(self, other: LatencyStats) -> None:
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float:
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.count))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        if index == 0:
            return self.LO
        # the bin's geometric middle
        return min(self.LO * self.GROWTH ** (index - 0.5), self.max)

    def summary_ms(self) -> dict[str, float]:
        return {
            "p50": round(self.percentile(50) * 1000, 2), "p95": round(self.percentile(95) * 1000, 2),
            "p99": round(self.percentile(99) * 1000, 2), "mean": round(self.total / max(self.count, 1) * 1000, 2),
            "max": round(self.max * 1000, 2), "count": self.count,
        }


class StageMetrics:
    """The metric families of one stage, on a private registry (so tests can build many)."""

    def __init__(self, stage: str, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.stage = stage
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_in = Counter("ghostbox_frames_in", "frames received", ["stage", "source"], registry=r)
        self.frames_out = Counter("ghostbox_frames_out", "frames passed on or written", ["stage", "source"], registry=r)
        self.frames_dropped = Counter("ghostbox_frames_dropped", "frames dropped", ["stage", "source", "reason"],
                                      registry=r)
        self.boxes = Counter("ghostbox_boxes", "boxes by verdict", ["stage", "source", "verdict"], registry=r)
        self.stage_seconds = Histogram("ghostbox_stage_seconds", "work time per frame", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.hop_seconds = Histogram("ghostbox_hop_seconds", "transport and queueing between stages", ["hop"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.latency_seconds = Histogram("ghostbox_latency_seconds", "capture to sink", ["source"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("ghostbox_queue_depth", "frames waiting", ["stage", "queue"], registry=r)
        self.bad_messages = Counter("ghostbox_bad_messages", "malformed messages dropped", ["stage", "reason"],
                                    registry=r)
        self.events = Counter("ghostbox_events", "notable events", ["stage", "event"], registry=r)
        self.flag_rate = Gauge("ghostbox_flag_rate", "share of the source's last boxes flagged", ["source"],
                               registry=r)
        self.score_psi = Gauge("ghostbox_score_psi", "PSI of the source's last boxes' score margins against "
                               "the filter's calibration (> 0.2: the footage has drifted)", ["source"], registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}
        self.port = port
        if port is not None:
            try:
                start_http_server(port, addr=host, registry=r)
            except OSError as exc:
                raise GhostboxError(f"metrics: cannot serve on {host}:{port} ({exc})") from exc

    def _child(self, family: Any, *labels: str) -> Any:
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def inc_in(self, source: str, n: int = 1) -> None:
        self._child(self.frames_in, self.stage, source).inc(n)

    def inc_out(self, source: str, n: int = 1) -> None:
        self._child(self.frames_out, self.stage, source).inc(n)

    def inc_dropped(self, source: str, reason: str, n: int = 1) -> None:
        self._child(self.frames_dropped, self.stage, source, reason).inc(n)

    def inc_boxes(self, source: str, kept: int, flagged: int) -> None:
        if kept:
            self._child(self.boxes, self.stage, source, "kept").inc(kept)
        if flagged:
            self._child(self.boxes, self.stage, source, "flagged").inc(flagged)

    def observe_stage(self, seconds: float) -> None:
        self._child(self.stage_seconds, self.stage).observe(seconds)

    def observe_hop(self, hop: str, seconds: float) -> None:
        self._child(self.hop_seconds, hop).observe(max(seconds, 0.0))

    def observe_latency(self, source: str, seconds: float) -> None:
        self._child(self.latency_seconds, source).observe(max(seconds, 0.0))

    def set_queue(self, queue: str, depth: int) -> None:
        self._child(self.queue_depth, self.stage, queue).set(depth)

    def set_drift(self, source: str, flag_rate: float, psi: float | None) -> None:
        self._child(self.flag_rate, source).set(flag_rate)
        if psi is not None:
            self._child(self.score_psi, source).set(psi)

    def event(self, name: str, n: int = 1) -> None:
        self._child(self.events, self.stage, name).inc(n)

    def bad_message(self, reason: str) -> None:
        self._child(self.bad_messages, self.stage, reason).inc()


class BadMessageLog:
    """Count every bad message; log the first of each reason, then at most one line per
    `interval_s` with how many were suppressed (a flood must not flood the log)."""

    def __init__(self, metrics: StageMetrics, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self.metrics = metrics
        self.log = logger
        self.interval_s = interval_s
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __call__(self, reason: str, detail: str = "", where: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.metrics.bad_message(reason)
        now = time.monotonic()
        key = f"{where}/{reason}"
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        more = f" (+{suppressed} more since last report)" if suppressed else ""
        self.log.warning("dropped a bad message%s: %s%s%s", f" on {where}" if where else "", reason,
                         f" ({detail})" if detail else "", more)
        self._last[key] = now
