"""Sinks: frames back in order per source, then annotated video, JSONL, flagged crops, summary.

Pure core: `SinkCore.write(delivered)` / `end_source()` / `close()` writes into one output
folder:
    OUT/detections.jsonl           one line per frame: the `ghostbox detect` schema plus
                                   `stream`, `seq`, per-box `score`/`threshold`/`hallucination`,
                                   per-stage timestamps `t` and `latency_ms`
    OUT/annotated/<source>.mp4     kept boxes solid, flagged boxes dashed magenta with score
    OUT/flagged/<source>/*.jpg     crops of flagged boxes, and OUT/flagged/index.jsonl with
                                   their metadata (what the fine-tuning step reads)
    OUT/tracks/<source>/*.jpg      tracked sources: a few crops of every track, flagged or kept,
                                   and OUT/tracks/index.jsonl with their logits and box features
                                   (the review page's gallery; `ghostbox calibrate --reviewed`)
    OUT/summary.json               counts, fps, latency percentiles, per source and per stage

Nothing is lost or faked silently: JSONL is written in whole lines (a failed write is cut back
and its rows counted), a crop that was not written gets no index line, each video is checked
at release (the file opens and holds the frames written), and summary.json says "complete"
only when every source ended "ok" and nothing was lost; otherwise "incomplete" ("interrupted"
when the sink stopped first or a source was told to stop), with one line per problem in
`problems` and the counts in `writes`. A small reserve file (OUT/summary.reserve, removed at
the end) keeps room for summary.json on a full disk.

Messages are checked before they are believed: the drop/flag policy comes from the filter
file named in the graph (never from a message), and EOS that contradict each other or the
frames delivered are recorded as conflicts and not believed (the run is then "incomplete").

Each file is an output of `pipeline.sinks` (`DetectionsFile`, `AnnotatedVideo`, `CalibrationClip`,
`FlaggedCrops`, `TrackGallery`, `LiveFeed`: one `Output` interface, as in `ghostbox detect`), and
the account is `pipeline.sinks.run_stats.RunStats`; the core tracks each frame, hands it to the
outputs, and keeps what only a stream has: the sources' ends and what their peers said.

Shell: `SinkStage`, a PULL socket (bound by default: sinks are the stable end of the graph
and filters connect to them), the resequencer, and the core.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import read_filter_header
from pipeline.sinks.crop_outputs import FlaggedCrops, TrackGallery
from pipeline.sinks.detections_file import DetectionsFile
from pipeline.sinks.live_feed import LiveFeed
from pipeline.sinks.output import DEFAULT_FPS, FrameRecord, Output
from pipeline.sinks.run_stats import MAX_PROBLEMS, RunStats, SourceStats, merged
from pipeline.sinks.summary_file import SummaryFile
from pipeline.sinks.video_output import AnnotatedVideo, CalibrationClip
from pipeline.stream import protocol as P
from pipeline.stream.config import GraphConfig, SinkConfig, TracksConfig, feed_url
from pipeline.stream.metrics import LatencyStats, StageMetrics
from pipeline.stream.provenance import Seal, part_specs
from pipeline.stream.resequencer import Resequencer
from pipeline.stream.shell import StageShell
from pipeline.stream.tracking import SourceTracks

log = logging.getLogger(__name__)

# Where a frame's time goes, as (name, from stamp, to stamp), in path order.
SEGMENTS = (
    ("source->broker", "send", "broker_in"), ("broker queue", "broker_in", "dispatch"),
    ("broker->worker", "dispatch", "worker_in"), ("batching", "worker_in", "detect_start"),
    ("detect", "detect_start", "detect_end"), ("worker->broker", "detect_end", "broker_out"),
    ("broker->filter", "broker_out", "filter_in"), ("filter", "filter_in", "filter_out"),
    ("filter->sink", "filter_out", "sink_in"), ("reorder+write", "sink_in", "sink_out"),
)

BROKER_STATS = ("resent", "gave_up", "broker_dropped", "rate_skipped", "reconnects")
DIGESTS_KEPT = 4096  # per source: delivered frames whose boxes a re-sent copy is compared with


@dataclass
class Delivered:
    source: str
    seq: int
    dets: Detections
    header: dict[str, Any]
    message: P.Message  # for the image part, decoded only when an output needs pixels

    def image(self) -> np.ndarray | None:
        """The image part; None when the message has none, or (warned) when it cannot be read."""
        if not self.message.has("image"):
            return None
        try:
            return self.message.array("image")
        except P.ProtocolError as exc:  # the frame's other outputs still get it
            log.warning("source %s frame %d: image unreadable (%s)", self.source, self.seq, exc)
            return None


def _drift_figures(value: Any) -> dict[str, Any] | None:
    """The known drift keys with values of the right type; anything else from the wire is ignored."""
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    for key in ("boxes", "flag_rate", "psi"):
        item = value.get(key)
        if isinstance(item, (int, float)) and not isinstance(item, bool) and np.isfinite(item):
            out[key] = item
    out["alarm"] = value.get("alarm") is True
    return out if "flag_rate" in out else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _text(value: Any, limit: int = 500) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _source_stats(value: Any) -> dict[str, Any]:
    """The EOS stats a source reports about its inputs, where they have the right types (a peer may be buggy)."""
    stats: dict[str, Any] = {}
    if not isinstance(value, dict):
        return stats
    for key in ("read", "unreadable", "max_frames", *BROKER_STATS):
        if _count(value.get(key)) is not None:
            stats[key] = value[key]
    if "expected" in value and (value["expected"] is None or _count(value["expected"]) is not None):
        stats["expected"] = value["expected"]
    files = value.get("unreadable_files")
    if isinstance(files, list):
        stats["unreadable_files"] = [name for name in map(_text, files[:100]) if name is not None]
    truncated = value.get("truncated")
    if isinstance(truncated, list):
        stats["truncated"] = [
            {"file": _text(t.get("file")), "read": _count(t.get("read")), "expected": _count(t.get("expected"))}
            for t in truncated[:100] if isinstance(t, dict) and _text(t.get("file")) is not None]
    return stats


def _end(header: dict[str, Any], status: str, total: int | None, epoch: Any) -> dict[str, Any]:
    """A source's end as the account keeps it, from an EOS header (or the status the sink gives it)."""
    return {"status": str(header.get("status") or status), "detail": _text(header.get("detail")) or "",
            "dropped": _count(header.get("dropped")) or 0, "total": total, "epoch": epoch,
            "stats": _source_stats(header.get("stats"))}


def _digest(dets: Detections) -> tuple[int, int, float]:
    """What a re-sent copy of a frame must match: box count, the classes, and the coordinates' sum."""
    classes = np.sort(np.asarray(dets.class_id, np.int64).ravel())
    return len(dets), zlib.crc32(classes.tobytes()), float(np.asarray(dets.xyxy, np.float64).sum())


def _same_boxes(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    # a frame re-detected in another batch can differ in the last bits of its floats; a forged or
    # mixed-up one differs by whole boxes: allow a pixel per coordinate
    return a[0] == b[0] and a[1] == b[1] and abs(a[2] - b[2]) <= 4.0 * max(a[0], 1)


class _Arrivals:
    """What a frame's arrival (before reordering) can contradict: its stream's end, the one epoch of a
    lossless stream (its source process never restarts), and the boxes of a copy that came before."""

    def __init__(self, sources: Iterable[str]) -> None:
        self._epochs: dict[str, int] = {}
        self._digests: dict[str, OrderedDict[tuple[int | None, int], tuple[int, int, float] | None]] = {
            sid: OrderedDict() for sid in sources}

    def contradiction(self, source: str, stats: SourceStats, seq: int, dets: Detections,
                      header: dict[str, Any]) -> str | None:
        """What this frame contradicts, in a sentence; None when nothing."""
        epoch = header.get("epoch")
        eos = stats.eos if stats.eos_received else None
        if eos is not None and eos["total"] is not None and seq >= eos["total"] and eos.get("epoch") in (None, epoch):
            return f"frame {seq} arrived after the EOS said {eos['total']} frames"
        if not stats.live and isinstance(epoch, int):
            first = self._epochs.setdefault(source, epoch)
            if epoch != first:
                # a lossless source runs as one process: a result of another epoch was never sent by it
                return (f"frame {seq} came with epoch {epoch}, the stream's frames with epoch {first}: a result "
                        "for a frame this source never sent")
        digests = self._digests[source]
        digest = None if header.get("error") else _digest(dets)  # an error result has no boxes to compare
        key = (epoch, seq)
        if key not in digests:
            digests[key] = digest
            if len(digests) > DIGESTS_KEPT:
                digests.popitem(last=False)
            return None
        before = digests[key]
        if before is not None and digest is not None and not _same_boxes(before, digest):
            return f"frame {seq} arrived twice with different boxes ({before[0]}, then {digest[0]})"
        return None

    def forget(self, source: str) -> None:
        """The source ended: no copy of its frames is compared any more."""
        self._digests[source].clear()


class SinkCore:
    """Writes delivered frames (already in order) to the configured outputs; no sockets.

    `policy`: the filter's ("flag" or "drop", from the filter file in the graph; None without a
    filter), an option of the outputs that show boxes. `sources`: ids, or id -> live (lossless
    when a list, unless `mode` is "live"). `feed`: the live view's output, if any.
    """

    def __init__(self, config: SinkConfig, sources: list[str] | dict[str, bool], mode: str,
                 metrics: StageMetrics | None = None, policy: str | None = None,
                 tracks: dict[str, TracksConfig] | None = None, feed: LiveFeed | None = None) -> None:
        self.config = config
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.metrics = metrics
        self.policy = policy
        self.feed = feed
        live = sources if isinstance(sources, dict) else {sid: mode == "live" for sid in sources}
        self.account = RunStats(live, LatencyStats)
        self.segments = {name: LatencyStats() for name, _, _ in SEGMENTS}
        self.detector: dict[str, Any] | None = None
        self.bad_messages = 0
        self.forgers: dict[str, int] = {}  # peer -> messages refused for their seal
        self._arrivals = _Arrivals(live)
        self._closed = False
        # made now: the tracker's import (Ultralytics, ~2 s) must not delay a source's first frame
        self._tracks = {sid: SourceTracks(sid, settings) for sid, settings in (tracks or {}).items()}
        # before the outputs: its reserve takes room before any of them can fill the disk
        self._summary = SummaryFile(self.out) if config.summary else None
        self.rows = DetectionsFile(self.out, policy, count_dropped=True) if config.jsonl else None
        self.outputs = self._open_outputs()
        # reported rows first: the order of summary.json's problems
        self._all: list[Output] = ([self.rows] if self.rows is not None else []) + self.outputs

    def _open_outputs(self) -> list[Output]:
        """What a frame goes to before its row, in that order."""
        config = self.config
        outputs: list[Output] = []
        if config.crops:
            outputs.append(FlaggedCrops(self.out, self._crops_pick))
        if config.gallery and self._tracks:
            outputs.append(TrackGallery(self.out, self._gallery_pick))
        if config.video:
            outputs.append(AnnotatedVideo(self.out, self.policy))
        if config.calibration_clip_frames > 0:
            outputs.append(CalibrationClip(self.out, config.calibration_clip_frames))
        if self.feed is not None:
            outputs.append(self.feed)
        return outputs

    @property
    def stats(self) -> dict[str, SourceStats]:
        return self.account.sources

    @property
    def summary_error(self) -> str | None:
        """Why the final summary.json could not be written; None when it was (or is not wanted)."""
        return self._summary.error if self._summary is not None else None

    # -- writing --------------------------------------------------------------------------------

    def write(self, item: Delivered) -> None:
        header = item.header
        stamps = header["t"]
        if header.get("detector") and self.detector is None:
            self.detector = header["detector"]
        tracks = self._tracks.get(item.source)  # frames arrive here in order, as a tracker needs them
        dets = item.dets if tracks is None else tracks.apply(item.seq, item.dets)
        frame = FrameRecord(item.source, item.seq, dets, item.image, ident={"stream": item.source, "seq": item.seq},
                            fps=float(header.get("fps") or DEFAULT_FPS), error=header.get("error"), stamps=stamps,
                            detector=(header.get("detector") or {}).get("weights_sha256"))
        for output in self.outputs:
            output.write(frame)
        t_out = stamps["sink_out"] = time.time()  # the row carries it: the frame has left the other outputs
        if self.rows is not None:
            self.rows.write(frame)
        latency = self.account.count(frame, t_out)
        stats = self.stats[item.source]
        stats.drift = _drift_figures(header.get("drift")) or stats.drift
        stats.dropped = max(stats.dropped, _count(header.get("dropped")) or 0)
        for name, start, end in SEGMENTS:
            if start in stamps and end in stamps:
                self.segments[name].add(max(0.0, stamps[end] - stamps[start]))
        if self.metrics is not None:
            flagged = int(frame.flagged.sum())
            self.metrics.inc_out(item.source)
            self.metrics.observe_latency(item.source, latency)
            self.metrics.observe_stage(t_out - stamps.get("sink_in", t_out))
            self.metrics.inc_boxes(item.source, len(dets) - flagged, flagged)

    def _crops_pick(self, frame: FrameRecord) -> np.ndarray:
        """Of the flagged boxes, those cut: all of an untracked source's, a few per track of a tracked one."""
        tracks = self._tracks.get(frame.source)
        return frame.flagged if tracks is None else tracks.crops_wanted(frame.seq, frame.dets, frame.flagged)

    def _gallery_pick(self, frame: FrameRecord) -> np.ndarray:
        tracks = self._tracks.get(frame.source)
        return tracks.gallery_wanted(frame.seq, frame.dets) if tracks is not None else np.zeros(len(frame.dets), bool)

    def tick(self) -> None:
        """Lines waiting in memory reach their files within `flush_s` even when no frame comes."""
        for output in self._all:
            output.tick()

    def feed_stats(self) -> None:
        """The counters of every source, for the live web view (a snapshot; dropped if nobody looks)."""
        if self.feed is not None:
            self.feed.stats(self.account.live_figures({sid: t.summary() for sid, t in self._tracks.items()}))

    def write_failed(self, source: str, detail: str) -> None:
        """A frame that an error `write` raised kept from (some of) its outputs; the shell catches it."""
        if self.account.write_failed(source, detail):
            log.error("source %s: %s", source, detail)

    # -- what peers say -------------------------------------------------------------------------

    def conflict(self, source: str, detail: str) -> None:
        stats = self.stats[source]
        stats.conflicts += 1
        if not stats.conflict:
            stats.conflict = detail[:300]
            log.warning("source %s: %s", source, detail)

    def forged(self, source: str, detail: str, peer: str) -> None:
        """A message refused for its seal (never written, never believed): named in problems with its peer."""
        stats = self.stats[source]
        stats.forged += 1
        if not stats.forged_first:
            stats.forged_first = f"{detail}, from {peer}"[:300]
        if peer not in self.forgers and len(self.forgers) >= MAX_PROBLEMS:
            peer = "other peers"
        self.forgers[peer] = self.forgers.get(peer, 0) + 1

    def check_frame(self, source: str, seq: int, dets: Detections, header: dict[str, Any]) -> None:
        """A frame as it arrives (before reordering): past its stream's end, or a re-sent copy with other boxes."""
        detail = self._arrivals.contradiction(source, self.stats[source], seq, dets, header)
        if detail:
            self.conflict(source, detail)

    def eos_received(self, source: str, header: dict[str, Any], delivered_to: int) -> int | None:
        """The total to end `source` with: that of its first believable EOS; None when this one is not.

        `delivered_to`: the next seq the resequencer would deliver. An EOS without a total, one
        with fewer frames than were already delivered, and a second one with another total are
        conflicts and not believed (a real end never looks like that), never crashes.
        """
        stats = self.stats[source]
        total = _count(header.get("total"))
        if stats.eos_received:
            first_eos = stats.eos
            assert first_eos is not None  # set together with eos_received, below
            if total != first_eos["total"]:
                self.conflict(source, f"a second EOS says {total} frames, the first said {first_eos['total']}")
            return None
        if total is None:
            self.conflict(source, f"an EOS without a frame count, after {delivered_to} frames (not believed)")
            return None
        if total < delivered_to:
            self.conflict(source, f"an EOS says {total} frames, {delivered_to} were already delivered (not believed)")
            return None
        stats.eos_received = True
        stats.eos = _end(header, "error", total, header.get("epoch"))
        stats.dropped = max(stats.dropped, stats.eos["dropped"])
        return total

    # -- ends -----------------------------------------------------------------------------------

    def end_source(self, source: str, eos: dict[str, Any] | None = None, reorder: dict[str, int] | None = None,
                   finished: bool = True) -> None:
        """`finished`: every frame up to the EOS went through; False when the sink stops before that.
        `eos`: used when none was received (a test, or the status the sink gives an unfinished source)."""
        stats = self.stats[source]
        if stats.eos is None and eos is not None:
            stats.eos = _end(eos, "interrupted", _count(eos.get("total")), None)
            stats.dropped = max(stats.dropped, stats.eos["dropped"])
        stats.reorder = dict(reorder or {})
        stats.finished = finished
        for output in self._all:
            output.end(source)
        self._arrivals.forget(source)
        log.info("source %s done: %d frames, %d boxes, %d flagged (%s)", source, stats.frames, stats.boxes,
                 stats.flagged, (stats.eos or {}).get("status"))

    def summary(self, status: str) -> dict[str, Any]:
        reports = [output.report(list(self.stats)) for output in self._all]
        problems = self.account.problems(reports, final=status != "running")
        if status == "complete" and problems:
            # a source that was told to stop ended the run early: interrupted, with its problems listed
            status = "interrupted" if self.account.stopped_early() else "incomplete"
        tracks = {sid: {"tracks": t.summary()} for sid, t in self._tracks.items()}
        return {
            "status": status, "mode": self.mode, **self.account.totals(), "bad_messages": self.bad_messages,
            "policy": self.policy,
            "stages_ms": {name: stats.summary_ms() for name, stats in self.segments.items() if stats.count},
            "per_source": self.account.per_source(reports, tracks), "outputs": merged(reports, "outputs"),
            "writes": merged(reports, "writes"), "problems": problems,
            "detector": (self.detector or {}).get("weights_sha256"),
            **({"forgers": dict(self.forgers)} if self.forgers else {}),
        }

    def write_summary(self, status: str, final: bool = False) -> dict[str, Any]:
        summary = self.summary(status)
        if self._summary is not None:
            self._summary.save(summary, final)
        return summary

    def close(self, status: str) -> dict[str, Any]:
        if self._closed:
            return self.summary(status)
        self._closed = True
        for output in self._all:
            output.close()
        summary = self.write_summary(status, final=True)
        if self._summary is not None:
            self._summary.drop_reserve()
        return summary


def _nbytes(message: P.Message) -> int:
    """The payload a message holds in memory (what the resequencer's byte bound counts)."""
    total = 0
    for part in message.parts:
        buffer = getattr(part, "buffer", None)
        total += memoryview(buffer if buffer is not None else part).nbytes
    return total


def filter_policy(path: str | None) -> str | None:
    """The policy of the filter file named in the graph: the only source the sink takes it from."""
    if not path:
        return None
    try:  # the header only: no arrays, no torch
        return str(read_filter_header(path).get("policy") or "flag")
    except GhostboxError as exc:
        # e.g. a sink on another machine without the file: keep every box (flagged ones marked) rather than guess
        log.warning("%s; writing every box (policy 'flag')", exc)
        return "flag"


class SinkStage(StageShell):
    STALL_WARN_S = 10.0
    SUMMARY_EVERY_S = 10.0
    DRAIN_S = 2.0  # on SIGTERM: how long what is already queued in the socket is still taken

    def __init__(self, graph: GraphConfig, name: str, parent_pid: int | None = None,
                 exit_when_done: bool = True) -> None:
        super().__init__(graph, f"sink:{name}", parent_pid)
        self.config = graph.sink(name)
        live = {s.id: graph.source_mode(s) == "live" for s in graph.sources}
        mode = "live" if all(live.values()) else "lossless" if not any(live.values()) else "mixed"
        tracks = {s.id: graph.tracks for s in graph.sources if graph.tracks.on_for(s)}
        policy = filter_policy(graph.filter.path)
        feed = None
        if graph.web.feed and graph.run_dir:
            # PUB drops what nobody takes: a closed or slow browser never holds the sink up
            self.feed_socket = self.ctx.socket(zmq.PUB)
            self.feed_socket.sndhwm, self.feed_socket.linger = 8, 0
            self.feed_socket.bind(feed_url(graph.run_dir, name))
            self._sockets.append(self.feed_socket)
            feed = LiveFeed(self._publish, graph.web.fps, graph.web.max_width, graph.web.quality, policy)
        self.core = SinkCore(self.config, live, mode, self.metrics, policy=policy, tracks=tracks, feed=feed)
        self.reseq = Resequencer(live, max_wait_s=self.config.reorder_wait_ms / 1000,
                                 max_bytes=graph.limits.reorder_max_bytes)
        ep = self.config.endpoint
        self.input = self.socket(zmq.PULL, ep.url, bind=ep.binder == "sink", bind_url=ep.bind_url,
                                 hwm=graph.broker.hwm, edge=f"sink:{name}")
        self.seal = self.load_seal()
        self.exit_when_done = exit_when_done
        self.done: set[str] = set()
        self.eos_count = 0  # EOS messages taken (progress)
        self._reported: dict[tuple[str, str], int] = {}  # resequencer drops already in the metrics
        self.report_progress(force=True, ready=1, done=0, held=0)  # the supervisor starts sources after this

    def _publish(self, data: bytes) -> bool:
        try:
            self.feed_socket.send(data, zmq.NOBLOCK)
            return True
        except zmq.ZMQError:  # Again (nobody is listening fast enough), or the socket is closing
            return False

    def _write(self, ready: list[tuple[str, int, Delivered]]) -> None:
        for _, _, item in ready:
            try:
                self.core.write(item)
            except (ValueError, TypeError, cv2.error, P.ProtocolError) as exc:
                # content no earlier check caught must not end the sink (and every stream with it)
                self.bad("unwritable", f"{item.source} frame {item.seq}: {exc}", "sink input")
                self.core.write_failed(item.source, f"frame {item.seq}: {exc}")
            except OSError as exc:  # a write the core did not expect to fail: counted, never fatal
                self.core.write_failed(item.source, f"frame {item.seq}: {exc}")

    def _receive(self) -> None:
        message = self.receive(self.input, "sink input")
        if message is None:
            return
        now = time.time()
        if not self.reseq.known(message.topic):
            self.bad("unknown-source", message.topic, "sink input")
            return
        if message.type == P.DETECTIONS:
            expected = self.seal.result(message.topic, message.header, part_specs(message), message.parts)
            if not Seal.same(expected, message.header.get("sealed")):
                # only the filter seals results: a forged row, or a real one altered, is never written
                self._forged(message.topic, f"a result for frame {message.seq} without the filter's seal")
                return
            try:
                dets = P.detections_from(message)
            except P.ProtocolError as exc:
                self.bad(exc.reason, exc.detail, "sink input")
                return
            header = message.header
            header["t"]["sink_in"] = now
            self.metrics.inc_in(message.topic)
            self.metrics.observe_hop("filter->sink", now - header["t"].get("filter_out", now))
            self.core.check_frame(message.topic, message.seq, dets, header)
            item = Delivered(message.topic, message.seq, dets, header, message)
            self._write(self.reseq.push(message.topic, message.seq, item, now, header.get("epoch"),
                                        nbytes=_nbytes(message)))
        elif message.type == P.EOS:
            if not Seal.same(self.seal.eos(message.topic, message.header), message.header.get("seal")):
                self._forged(message.topic, f"an end of stream ({message.header.get('total')} frames) without its "
                                            f"source's seal")
                return
            self.eos_count += 1
            total = self.core.eos_received(message.topic, message.header, self.reseq.streams[message.topic].next_seq)
            if total is not None:
                self._write(self.reseq.end(message.topic, total, now))
        else:  # shutdown included: only signals and EOS end this stage
            self.bad(f"unexpected-{message.type}", "", "sink input")

    def _forged(self, source: str, detail: str) -> None:
        self.forged(f"{source}: {detail}", "sink input")
        self.core.forged(source, detail, self.last_peer())

    def _publish_metrics(self) -> None:
        for sid in self.core.stats:
            self.metrics.set_queue(f"reorder:{sid}", self.reseq.waiting(sid))
            stats = self.reseq.stats(sid)
            for reason in ("late", "skipped", "duplicates"):
                delta = stats[reason] - self._reported.get((sid, reason), 0)
                if delta:
                    self.metrics.inc_dropped(sid, reason, delta)
                    self._reported[(sid, reason)] = stats[reason]

    def _check_done(self) -> None:
        for sid, stats in self.core.stats.items():
            if sid not in self.done and stats.eos_received and self.reseq.done(sid):
                self.done.add(sid)
                self.core.end_source(sid, None, self.reseq.stats(sid))

    def _progress(self, force: bool = False) -> None:
        rows = sum(s.frames for s in self.core.stats.values())
        held = sum(self.reseq.waiting(sid) for sid in self.core.stats)
        self.report_progress(force=force, done=rows + self.eos_count, held=held)

    def _drain(self) -> None:
        """Stopped by a signal: what is already queued in the socket is written, within DRAIN_S."""
        deadline = time.monotonic() + self.DRAIN_S
        taken = 0
        while time.monotonic() < deadline and self.input.poll(0):
            self._receive()
            taken += 1
        self._write(self.reseq.poll(time.time()))
        self._check_done()
        if taken:
            log.info("took %d queued messages before stopping", taken)

    def run(self) -> int:
        last_summary = last_stall = last_metrics = time.monotonic()
        while not self.should_stop():
            if self.input.poll(50):
                for _ in range(64):
                    self._receive()
                    if not self.input.poll(0):
                        break
            self._write(self.reseq.poll(time.time()))
            self._check_done()
            self.core.tick()
            self._progress()
            if self.exit_when_done and len(self.done) == len(self.core.stats):
                break
            now = time.monotonic()
            if now - last_metrics > 1.0:
                last_metrics = now
                self._publish_metrics()
                self.core.feed_stats()
            if now - last_stall > self.STALL_WARN_S:
                last_stall = now
                for sid in self.core.stats:
                    missing = self.reseq.missing(sid)
                    if missing is not None and not self.reseq.streams[sid].live:
                        log.warning("source %s: waiting for frame %d (%d later frames held)", sid, missing,
                                    self.reseq.waiting(sid))
            if now - last_summary > self.SUMMARY_EVERY_S:
                last_summary = now
                self.core.bad_messages = self.bad.total
                self.core.write_summary("running")
        if self.stopping is not None:
            self._drain()
        status = "complete" if len(self.done) == len(self.core.stats) else "interrupted"
        if status != "complete":
            self._write(self.reseq.flush())
            for sid in self.core.stats:
                if sid not in self.done:
                    self.core.end_source(sid, {"status": "interrupted"}, self.reseq.stats(sid), finished=False)
        self.core.bad_messages = self.bad.total
        self.core.feed_stats()  # the final counters, for a page still open
        summary = self.core.close(status)
        self._progress(force=True)
        log.info("%d frames, %d boxes, %d flagged, latency p50 %.1f ms p99 %.1f ms -> %s (%s)", summary["frames"],
                 summary["boxes"], summary["flagged"], summary["latency_ms"]["p50"], summary["latency_ms"]["p99"],
                 self.config.out, summary["status"])
        for line in summary["problems"]:
            log.warning("problem: %s", line)
        self.close()
        return 1 if self.core.summary_error else 0
