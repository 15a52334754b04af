"""Sinks: frames back in order per source, then annotated video, JSONL, flagged crops, summary.

Pure core: `SinkCore.write(delivered)` / `end_source()` / `close()` writes into one output
folder:
    OUT/detections.jsonl           one line per frame: the `ghostbox detect` schema plus
                                   `stream`, `seq`, per-box `score`/`threshold`/`hallucination`,
                                   per-stage timestamps `t` and `latency_ms`
    OUT/annotated/<source>.mp4     kept boxes solid, flagged boxes dashed magenta with score
    OUT/flagged/<source>/*.jpg     crops of flagged boxes, and OUT/flagged/index.jsonl with
                                   their metadata (what the fine-tuning step reads)
    OUT/summary.json               counts, fps, latency percentiles, per source and per stage

Shell: `SinkStage`, a PULL socket (bound by default: sinks are the stable end of the graph
and filters connect to them), the resequencer, and the core.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq

from pipeline.detections import Detections
from pipeline.stream import protocol as P
from pipeline.stream.config import GraphConfig, SinkConfig
from pipeline.stream.metrics import LatencyStats, StageMetrics
from pipeline.stream.resequencer import Resequencer
from pipeline.stream.shell import StageShell

log = logging.getLogger(__name__)

# Where a frame's time goes, as (name, from stamp, to stamp), in path order.
SEGMENTS = (
    ("source->broker", "send", "broker_in"), ("broker queue", "broker_in", "dispatch"),
    ("broker->worker", "dispatch", "worker_in"), ("batching", "worker_in", "detect_start"),
    ("detect", "detect_start", "detect_end"), ("worker->broker", "detect_end", "broker_out"),
    ("broker->filter", "broker_out", "filter_in"), ("filter", "filter_in", "filter_out"),
    ("filter->sink", "filter_out", "sink_in"), ("reorder+write", "sink_in", "sink_out"),
)


@dataclass
class Delivered:
    source: str
    seq: int
    dets: Detections
    header: dict[str, Any]
    message: P.Message  # for the image part, decoded only when a sink needs pixels

    def image(self) -> np.ndarray | None:
        if not self.message.has("image"):
            return None
        return self.message.array("image")


@dataclass
class _SourceStats:
    frames: int = 0
    boxes: int = 0
    flagged: int = 0
    errors: int = 0
    dropped: int = 0
    first_capture: float | None = None
    last_out: float | None = None
    latency: LatencyStats = field(default_factory=LatencyStats)
    eos: dict[str, Any] | None = None
    reorder: dict[str, int] = field(default_factory=dict)
    drift: dict[str, Any] | None = None  # the filter's last rolling drift figures for this source


@dataclass
class _Clip:
    """A source's calibration clip being written."""

    writer: cv2.VideoWriter | None
    size: tuple[int, int]
    path: str
    frames: int = 0
    error: str = ""


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


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "source"


def _cut(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    left, top = int(np.clip(np.floor(x1), 0, width - 1)), int(np.clip(np.floor(y1), 0, height - 1))
    right, bottom = int(np.clip(np.ceil(x2), left + 1, width)), int(np.clip(np.ceil(y2), top + 1, height))
    return image[top:bottom, left:right]


class SinkCore:
    """Writes delivered frames (already in order) to the configured outputs; no sockets."""

    def __init__(self, config: SinkConfig, sources: list[str], mode: str, metrics: StageMetrics | None = None) -> None:
        self.config = config
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.metrics = metrics
        self.stats = {sid: _SourceStats() for sid in sources}
        self.latency = LatencyStats()
        self.segments = {name: LatencyStats() for name, _, _ in SEGMENTS}
        self.policy: str | None = None
        self.detector: dict[str, Any] | None = None
        self.started = time.time()
        self.bad_messages = 0
        self._jsonl = open(self.out / "detections.jsonl", "w", encoding="utf-8") if config.jsonl else None
        self._last_flush = time.monotonic()
        self._videos: dict[str, tuple[cv2.VideoWriter, tuple[int, int]]] = {}
        self._clips: dict[str, _Clip] = {}
        self._flagged_index = None
        self._closed = False

    # -- writing --------------------------------------------------------------------------------

    def write(self, item: Delivered) -> None:
        header = item.header
        stamps = header["t"]
        stats = self.stats[item.source]
        dets = item.dets
        flags = dets.data.get("hallucination")
        flagged = np.asarray(flags, bool) if flags is not None else np.zeros(len(dets), bool)
        n_flagged = int(flagged.sum())
        if header.get("policy"):
            self.policy = header["policy"]
        if header.get("detector") and self.detector is None:
            self.detector = header["detector"]
        shown = dets[~flagged] if self.policy == "drop" and n_flagged else dets
        image = None
        clip_wanted = self._clip_wanted(item.source)
        if self.config.video or (self.config.crops and n_flagged) or clip_wanted:
            try:
                image = item.image()
            except P.ProtocolError as exc:
                log.warning("source %s frame %d: image unreadable (%s)", item.source, item.seq, exc)
        if self.config.video and image is not None:
            self._video(item, shown, image)
        if clip_wanted and image is not None:
            self._clip(item, image)
        if self.config.crops and n_flagged:
            self._archive(item, dets, flagged, image)
        t_out = time.time()
        stamps["sink_out"] = t_out
        capture = stamps.get("capture", t_out)
        latency = t_out - capture
        if self._jsonl is not None:
            record = shown.to_record()
            record.update({"stream": item.source, "seq": item.seq})
            if self.policy == "drop":
                record["dropped_boxes"] = n_flagged
            if header.get("error"):
                record["error"] = header["error"]
            record["t"] = {k: round(v, 6) for k, v in stamps.items()}
            record["latency_ms"] = round(latency * 1000, 3)
            self._jsonl.write(json.dumps(record, separators=(",", ":")) + "\n")
            if time.monotonic() - self._last_flush > 0.5:  # `tail -f` sees frames within half a second
                self._jsonl.flush()
                self._last_flush = time.monotonic()
        stats.frames += 1
        stats.boxes += len(dets)
        stats.flagged += n_flagged
        stats.errors += bool(header.get("error"))
        stats.drift = _drift_figures(header.get("drift")) or stats.drift
        stats.dropped = max(stats.dropped, int(header.get("dropped", 0)))
        stats.first_capture = capture if stats.first_capture is None else min(stats.first_capture, capture)
        stats.last_out = t_out
        stats.latency.add(latency)
        self.latency.add(latency)
        for name, start, end in SEGMENTS:
            if start in stamps and end in stamps:
                self.segments[name].add(max(0.0, stamps[end] - stamps[start]))
        if self.metrics is not None:
            self.metrics.inc_out(item.source)
            self.metrics.observe_latency(item.source, latency)
            self.metrics.observe_stage(t_out - stamps.get("sink_in", t_out))
            self.metrics.inc_boxes(item.source, len(dets) - n_flagged, n_flagged)

    def _video(self, item: Delivered, dets: Detections, image: np.ndarray) -> None:
        from pipeline.sinks.annotate import annotate

        entry = self._videos.get(item.source)
        if entry is None:
            entry = self._videos[item.source] = self._writer(item, image, "annotated", ".mp4", "mp4v")
        writer, size = entry
        frame = annotate(image, dets)
        if (frame.shape[1], frame.shape[0]) != size:  # an image folder of mixed sizes
            frame = cv2.resize(frame, size)
        writer.write(frame)

    def _writer(self, item: Delivered, image: np.ndarray, folder_name: str, suffix: str,
                fourcc: str) -> tuple[cv2.VideoWriter, tuple[int, int]]:
        folder = self.out / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        size = (image.shape[1], image.shape[0])
        fps = float(item.header.get("fps") or 25.0)
        path = folder / f"{_safe_name(item.source)}{suffix}"
        return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size), size

    def _clip_wanted(self, source: str) -> bool:
        clip = self._clips.get(source)
        return self.config.calibration_clip_frames > 0 and (
            clip is None or (clip.writer is not None and clip.frames < self.config.calibration_clip_frames))

    def _clip(self, item: Delivered, image: np.ndarray) -> None:
        clip = self._clips.get(item.source)
        if clip is None:
            # MJPG: every frame a JPEG of its own, close to what the detector saw
            writer, size = self._writer(item, image, "calibration", ".avi", "MJPG")
            path = str(self.out / "calibration" / f"{_safe_name(item.source)}.avi")
            clip = self._clips[item.source] = _Clip(writer, size, path)
            if not writer.isOpened():
                clip.writer, clip.error = None, "cannot open an MJPG writer here"
                log.error("source %s: calibration clip %s not written (%s)", item.source, path, clip.error)
                return
        clip.writer.write(image if (image.shape[1], image.shape[0]) == clip.size else cv2.resize(image, clip.size))
        clip.frames += 1
        if clip.frames >= self.config.calibration_clip_frames:
            clip.writer.release()

    def _archive(self, item: Delivered, dets: Detections, flagged: np.ndarray, image: np.ndarray | None) -> None:
        folder = self.out / "flagged" / _safe_name(item.source)
        folder.mkdir(parents=True, exist_ok=True)
        if self._flagged_index is None:
            self._flagged_index = open(self.out / "flagged" / "index.jsonl", "a", encoding="utf-8")
        labels = dets.labels
        for i in np.flatnonzero(flagged):
            crop = dets.crops[i] if dets.crops is not None else (_cut(image, dets.xyxy[i]) if image is not None else None)
            if crop is None or crop.size == 0:
                continue
            name = f"{item.seq:07d}_{i:03d}.jpg"
            cv2.imwrite(str(folder / name), crop)
            record = {
                "file": f"{_safe_name(item.source)}/{name}", "stream": item.source, "seq": item.seq,
                "source": dets.source, "frame": dets.frame, "xyxy": [round(float(v), 2) for v in dets.xyxy[i]],
                "cls": int(dets.class_id[i]), "label": labels[i], "conf": round(float(dets.confidence[i]), 5),
                "level": int(dets.level[i]),
                "score": round(float(dets.data["score"][i]), 5) if "score" in dets.data else None,
                "threshold": round(float(dets.data["threshold"][i]), 5) if "threshold" in dets.data else None,
                "detector": (item.header.get("detector") or {}).get("weights_sha256"),
                "t_capture": item.header["t"].get("capture"),
            }
            self._flagged_index.write(json.dumps(record, separators=(",", ":")) + "\n")

    # -- ends -----------------------------------------------------------------------------------

    def end_source(self, source: str, eos: dict[str, Any], reorder: dict[str, int]) -> None:
        stats = self.stats[source]
        stats.eos = eos
        stats.reorder = reorder
        stats.dropped = max(stats.dropped, int(eos.get("dropped", 0)))
        entry = self._videos.pop(source, None)
        if entry is not None:
            entry[0].release()
        clip = self._clips.get(source)
        if clip is not None and clip.writer is not None:
            clip.writer.release()
        log.info("source %s done: %d frames, %d boxes, %d flagged (%s)", source, stats.frames, stats.boxes,
                 stats.flagged, eos.get("status"))

    def summary(self, status: str) -> dict[str, Any]:
        per_source = {}
        frames = boxes = flagged = dropped = errors = 0
        first, last = None, None
        for sid, s in self.stats.items():
            span = (s.last_out - s.first_capture) if s.frames and s.last_out and s.first_capture else 0.0
            eos = s.eos or {}
            per_source[sid] = {
                "frames": s.frames, "fps": round(s.frames / span, 2) if span > 0 else 0.0,
                "latency_ms": s.latency.summary_ms(), "dropped": s.dropped, "boxes": s.boxes,
                "kept": s.boxes - s.flagged, "flagged": s.flagged, "errors": s.errors,
                "status": eos.get("status", "running"), "detail": eos.get("detail", ""),
                **{k: v for k, v in (eos.get("stats") or {}).items() if k in
                   ("resent", "gave_up", "broker_dropped", "rate_skipped", "reconnects")},
                **s.reorder,
                **({"drift": s.drift} if s.drift else {}),
            }
            frames, boxes, flagged = frames + s.frames, boxes + s.boxes, flagged + s.flagged
            dropped, errors = dropped + s.dropped, errors + s.errors
            if s.frames:
                first = s.first_capture if first is None else min(first, s.first_capture)
                last = s.last_out if last is None else max(last, s.last_out)
        span = (last - first) if first is not None and last is not None else 0.0
        outputs: dict[str, Any] = {}
        if self.config.jsonl:
            outputs["jsonl"] = str(self.out / "detections.jsonl")
        if self.config.video:
            outputs["video"] = {sid: str(self.out / "annotated" / f"{_safe_name(sid)}.mp4")
                                for sid, s in self.stats.items() if s.frames}
        if self.config.crops:
            outputs["flagged"] = str(self.out / "flagged")
        if self._clips:
            outputs["calibration_clips"] = {sid: {"path": clip.path, "frames": clip.frames,
                                                  **({"error": clip.error} if clip.error else {})}
                                            for sid, clip in self._clips.items()}
        return {
            "status": status, "mode": self.mode, "frames": frames, "fps": round(frames / span, 2) if span > 0 else 0.0,
            "wall_s": round(time.time() - self.started, 2), "latency_ms": self.latency.summary_ms(),
            "dropped": dropped, "boxes": boxes, "kept": boxes - flagged, "flagged": flagged, "errors": errors,
            "bad_messages": self.bad_messages, "policy": self.policy,
            "stages_ms": {name: stats.summary_ms() for name, stats in self.segments.items() if stats.count},
            "per_source": per_source, "outputs": outputs,
            "detector": (self.detector or {}).get("weights_sha256"),
        }

    def write_summary(self, status: str) -> dict[str, Any]:
        summary = self.summary(status)
        if self.config.summary:
            tmp = self.out / "summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            tmp.replace(self.out / "summary.json")  # readers never see half a file
        return summary

    def close(self, status: str) -> dict[str, Any]:
        if self._closed:
            return self.summary(status)
        self._closed = True
        for writer, _ in self._videos.values():
            writer.release()
        self._videos.clear()
        for clip in self._clips.values():
            if clip.writer is not None:
                clip.writer.release()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._flagged_index is not None:
            self._flagged_index.close()
        return self.write_summary(status)


class SinkStage(StageShell):
    STALL_WARN_S = 10.0
    SUMMARY_EVERY_S = 10.0

    def __init__(self, graph: GraphConfig, name: str, parent_pid: int | None = None, exit_when_done: bool = True) -> None:
        super().__init__(graph, f"sink:{name}", parent_pid)
        self.config = graph.sink(name)
        live = {s.id: graph.source_mode(s) == "live" for s in graph.sources}
        mode = "live" if all(live.values()) else "lossless" if not any(live.values()) else "mixed"
        self.core = SinkCore(self.config, list(live), mode, self.metrics)
        self.reseq = Resequencer(live, max_wait_s=self.config.reorder_wait_ms / 1000)
        ep = self.config.endpoint
        self.input = self.socket(zmq.PULL, ep.url, bind=ep.binder == "sink", bind_url=ep.bind_url,
                                 hwm=graph.broker.hwm)
        self.exit_when_done = exit_when_done
        self.done: set[str] = set()
        self.eos: dict[str, dict[str, Any]] = {}
        self._reported: dict[tuple[str, str], int] = {}  # resequencer drops already in the metrics

    def _write(self, ready: list[tuple[str, int, Delivered]]) -> None:
        for _, _, item in ready:
            try:
                self.core.write(item)
            except (ValueError, TypeError, cv2.error, P.ProtocolError) as exc:
                # content no earlier check caught must not end the sink (and every stream with it)
                self.bad("unwritable", f"{item.source} frame {item.seq}: {exc}", "sink input")

    def _receive(self) -> None:
        message = self.receive(self.input, "sink input")
        if message is None:
            return
        now = time.time()
        if not self.reseq.known(message.topic):
            self.bad("unknown-source", message.topic, "sink input")
            return
        if message.type == P.DETECTIONS:
            try:
                dets = P.detections_from(message)
            except P.ProtocolError as exc:
                self.bad(exc.reason, exc.detail, "sink input")
                return
            header = message.header
            header["t"]["sink_in"] = now
            self.metrics.inc_in(message.topic)
            self.metrics.observe_hop("filter->sink", now - header["t"].get("filter_out", now))
            item = Delivered(message.topic, message.seq, dets, header, message)
            self._write(self.reseq.push(message.topic, message.seq, item, now, header.get("epoch")))
        elif message.type == P.EOS:
            header = message.header
            self.eos[message.topic] = {k: header.get(k) for k in ("status", "dropped", "stats", "detail", "total")}
            self._write(self.reseq.end(message.topic, int(header.get("total") or 0), now))
        else:  # shutdown included: only signals and EOS end this stage
            self.bad(f"unexpected-{message.type}", "", "sink input")

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
        for sid in self.eos:
            if sid not in self.done and self.reseq.done(sid):
                self.done.add(sid)
                self.core.end_source(sid, self.eos[sid], self.reseq.stats(sid))

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
            if self.exit_when_done and len(self.done) == len(self.core.stats):
                break
            now = time.monotonic()
            if now - last_metrics > 1.0:
                last_metrics = now
                self._publish_metrics()
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
        status = "complete" if len(self.done) == len(self.core.stats) else "interrupted"
        if status != "complete":
            self._write(self.reseq.flush())
            for sid in self.core.stats:
                if sid not in self.done:
                    self.core.end_source(sid, self.eos.get(sid, {"status": "interrupted"}), self.reseq.stats(sid))
        self.core.bad_messages = self.bad.total
        summary = self.core.close(status)
        log.info("%d frames, %d boxes, %d flagged, latency p50 %.1f ms p99 %.1f ms -> %s", summary["frames"],
                 summary["boxes"], summary["flagged"], summary["latency_ms"]["p50"], summary["latency_ms"]["p99"],
                 self.config.out)
        self.close()
        return 0
