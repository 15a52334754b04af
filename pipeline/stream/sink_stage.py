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

The files are written by `pipeline.sinks` (`LineFile`, `VideoFile`, `CropArchive`,
`SummaryFile`); this module decides what goes into them and keeps the account.

Shell: `SinkStage`, a PULL socket (bound by default: sinks are the stable end of the graph
and filters connect to them), the resequencer, and the core.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import read_filter_header
from pipeline.sinks import video_file
from pipeline.sinks.annotate import annotate
from pipeline.sinks.crop_archive import CropArchive
from pipeline.sinks.jsonl import LineFile
from pipeline.sinks.live_feed import LiveFeed
from pipeline.sinks.source_names import safe_name
from pipeline.sinks.summary_file import SummaryFile
from pipeline.sinks.video_file import VideoFile
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
MAX_PROBLEMS = 50  # lines in summary.json's `problems`; the counts stay complete
MAX_NAMED = 3  # files named in one problem line
DIGESTS_KEPT = 4096  # per source: delivered frames whose boxes a re-sent copy is compared with


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
    live: bool = False
    frames: int = 0
    boxes: int = 0
    flagged: int = 0
    errors: int = 0
    first_error: str = ""
    dropped: int = 0
    first_capture: float | None = None
    last_out: float | None = None
    latency: LatencyStats = field(default_factory=LatencyStats)
    eos: dict[str, Any] | None = None  # sanitised: status, detail, dropped, total, epoch, stats
    eos_received: bool = False  # False: the sink made `eos` up at shutdown
    finished: bool = False  # every frame up to the EOS total went through
    reorder: dict[str, int] = field(default_factory=dict)
    drift: dict[str, Any] | None = None  # the filter's last rolling drift figures for this source
    unwritten: int = 0  # frames an unexpected OSError kept out of every output
    unwritten_error: str = ""
    conflicts: int = 0
    conflict: str = ""
    forged: int = 0  # messages refused for a missing or wrong seal
    forged_first: str = ""
    epoch: int | None = None  # a lossless stream's one epoch: its source process never restarts
    digests: OrderedDict[tuple[int | None, int], tuple[int, int, float] | None] = field(default_factory=OrderedDict)


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


def _digest(dets: Detections) -> tuple[int, int, float]:
    """What a re-sent copy of a frame must match: box count, the classes, and the coordinates' sum."""
    classes = np.sort(np.asarray(dets.class_id, np.int64).ravel())
    return len(dets), zlib.crc32(classes.tobytes()), float(np.asarray(dets.xyxy, np.float64).sum())


def _same_boxes(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    # a frame re-detected in another batch can differ in the last bits of its floats; a forged or
    # mixed-up one differs by whole boxes: allow a pixel per coordinate
    return a[0] == b[0] and a[1] == b[1] and abs(a[2] - b[2]) <= 4.0 * max(a[0], 1)


def _named(items: list[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {total - min(len(items), MAX_NAMED)} more" if total > min(len(items), MAX_NAMED) else "")


class SinkCore:
    """Writes delivered frames (already in order) to the configured outputs; no sockets.

    `policy`: the filter's ("flag" or "drop", from the filter file in the graph; None without a
    filter). `sources`: ids, or id -> live (lossless when a list, unless `mode` is "live").
    """

    VIDEO_MIN_FREE = video_file.MIN_FREE  # given to each video this core opens; 0 turns the early stop off

    def __init__(self, config: SinkConfig, sources: list[str] | dict[str, bool], mode: str,
                 metrics: StageMetrics | None = None, policy: str | None = None,
                 tracks: dict[str, TracksConfig] | None = None, feed: LiveFeed | None = None) -> None:
        self.config = config
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.metrics = metrics
        live = sources if isinstance(sources, dict) else {sid: mode == "live" for sid in sources}
        self.stats = {sid: _SourceStats(live=is_live) for sid, is_live in live.items()}
        self.latency = LatencyStats()
        self.segments = {name: LatencyStats() for name, _, _ in SEGMENTS}
        self.policy = policy
        self.detector: dict[str, Any] | None = None
        self.started = time.time()
        self.bad_messages = 0
        self.forgers: dict[str, int] = {}  # peer -> messages refused for their seal
        # first: its reserve takes room before any other output can fill the disk
        self._summary = SummaryFile(self.out) if config.summary else None
        self._jsonl = LineFile(self.out / "detections.jsonl") if config.jsonl else None
        self._videos: dict[str, VideoFile] = {}
        self._clips: dict[str, VideoFile] = {}
        self._crops = CropArchive(self.out)
        self._gallery = CropArchive(self.out, "tracks", head=True)
        self.feed = feed
        self._closed = False
        # made now: the tracker's import (Ultralytics, ~2 s) must not delay a source's first frame
        self._tracks = {sid: SourceTracks(sid, settings) for sid, settings in (tracks or {}).items()}

    @property
    def summary_error(self) -> str | None:
        """Why the final summary.json could not be written; None when it was (or is not wanted)."""
        return self._summary.error if self._summary is not None else None

    # -- writing --------------------------------------------------------------------------------

    def write(self, item: Delivered) -> None:
        header = item.header
        stamps = header["t"]
        stats = self.stats[item.source]
        dets = self._tracked(item)
        flags, _ = dets.verdict()
        flagged = np.asarray(flags, bool) if flags is not None else np.zeros(len(dets), bool)
        n_flagged = int(flagged.sum())
        if header.get("detector") and self.detector is None:
            self.detector = header["detector"]
        shown = dets[~flagged] if self.policy == "drop" and n_flagged else dets
        video = self._videos.get(item.source)
        video_wanted = self.config.video and (video is None or video.writer is not None)
        if self.config.video and video is not None and video.writer is None and video.error:
            video.missed += 1
        clip_wanted = self._clip_wanted(item.source)
        clip = self._clips.get(item.source)
        if clip is not None and clip.writer is None and clip.error and clip.written + clip.missed < (clip.limit or 0):
            clip.missed += 1  # a clip that failed still owed these frames
        tracks = self._tracks.get(item.source)
        cropped = np.zeros(len(dets), bool)
        if self.config.crops and n_flagged:
            cropped = flagged if tracks is None else tracks.crops_wanted(item.seq, dets, flagged)
        gallery = (tracks.gallery_wanted(item.seq, dets) if tracks is not None and self.config.gallery
                   else np.zeros(len(dets), bool))
        feed_wanted = self.feed is not None and self.feed.frame_due(item.source)
        image = None
        if video_wanted or cropped.any() or gallery.any() or clip_wanted or feed_wanted:
            try:
                image = item.image()
            except P.ProtocolError as exc:
                log.warning("source %s frame %d: image unreadable (%s)", item.source, item.seq, exc)
        if (video_wanted or feed_wanted) and image is not None:
            annotated = annotate(image, shown)
            if video_wanted:
                self._feed(self._videos, item, annotated, "annotated", ".mp4", "mp4v")
            if feed_wanted and self.feed is not None:
                self.feed.frame(item.source, item.seq, annotated)
        if clip_wanted and image is not None:
            self._clip(item, image)
        weights = (header.get("detector") or {}).get("weights_sha256")
        if cropped.any():
            self._crops.add(item.source, item.seq, dets, cropped, image, weights, stamps.get("capture"))
        if gallery.any():
            self._gallery.add(item.source, item.seq, dets, gallery, image, weights, stamps.get("capture"))
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
            self._jsonl.add(json.dumps(record, separators=(",", ":")), item.source)
        stats.frames += 1
        stats.boxes += len(dets)
        stats.flagged += n_flagged
        if header.get("error"):
            stats.errors += 1
            stats.first_error = stats.first_error or str(header["error"])[:200]
        stats.drift = _drift_figures(header.get("drift")) or stats.drift
        stats.dropped = max(stats.dropped, _count(header.get("dropped")) or 0)
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

    def _tracked(self, item: Delivered) -> Detections:
        """The frame's detections with track fields, for a tracked source (frames arrive here in order)."""
        tracks = self._tracks.get(item.source)
        return item.dets if tracks is None else tracks.apply(item.seq, item.dets)

    def tick(self) -> None:
        """Lines waiting in memory reach their files within `flush_s` even when no frame comes."""
        for lines in (self._jsonl, self._crops.index, self._gallery.index):
            if lines is not None and lines.due():
                lines.flush()

    def feed_stats(self) -> None:
        """The counters of every source, for the live web view (a snapshot; dropped if nobody looks)."""
        if self.feed is None:
            return
        figures: dict[str, dict[str, Any]] = {}
        for sid, s in self.stats.items():
            latency = s.latency.summary_ms()
            tracks = self._tracks[sid].summary() if sid in self._tracks else {}
            figures[sid] = {"frames": s.frames, "boxes": s.boxes, "kept": s.boxes - s.flagged, "flagged": s.flagged,
                            "dropped": s.dropped, "latency_p50_ms": latency.get("p50", 0.0),
                            "latency_p95_ms": latency.get("p95", 0.0)}
            if tracks:
                figures[sid].update(tracks=tracks.get("tracks", 0), flagged_tracks=tracks.get("hallucinations", 0))
            if s.drift:
                figures[sid].update(flag_rate_drift=s.drift.get("flag_rate", 0.0), psi=s.drift.get("psi", 0.0),
                                    drift_alarm=bool(s.drift.get("alarm")))
        self.feed.stats(figures)

    def write_failed(self, source: str, detail: str) -> None:
        """A frame that an error `write` raised kept from (some of) its outputs; the shell catches it."""
        stats = self.stats[source]
        stats.unwritten += 1
        if not stats.unwritten_error:
            stats.unwritten_error = detail[:300]
            log.error("source %s: %s", source, detail)

    # -- videos ---------------------------------------------------------------------------------

    def _clip_wanted(self, source: str) -> bool:
        clip = self._clips.get(source)
        return self.config.calibration_clip_frames > 0 and (clip is None or clip.writer is not None)

    def _clip(self, item: Delivered, image: np.ndarray) -> None:
        # MJPG: every frame a JPEG of its own, close to what the detector saw
        self._feed(self._clips, item, image, "calibration", ".avi", "MJPG", self.config.calibration_clip_frames)

    def _feed(self, videos: dict[str, VideoFile], item: Delivered, frame: np.ndarray, folder_name: str, suffix: str,
              fourcc: str, limit: int | None = None) -> None:
        """One frame to the source's video of this kind, opened at its first frame (a failed open counts it missed)."""
        video = videos.get(item.source)
        if video is None:
            video = videos[item.source] = self._open_video(item, frame, folder_name, suffix, fourcc, limit)
        if video.writer is None:
            video.missed += 1
            return
        if (frame.shape[1], frame.shape[0]) != video.size:  # an image folder of mixed sizes
            frame = cv2.resize(frame, video.size)
        video.feed(frame)

    def _open_video(self, item: Delivered, image: np.ndarray, folder_name: str, suffix: str, fourcc: str,
                    limit: int | None = None) -> VideoFile:
        rel = f"{folder_name}/{safe_name(item.source)}{suffix}"
        return VideoFile.open(item.source, rel, self.out / rel, (image.shape[1], image.shape[0]),
                              float(item.header.get("fps") or 25.0), fourcc, limit, self.VIDEO_MIN_FREE)

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
        stats = self.stats[source]
        epoch = header.get("epoch")
        eos = stats.eos if stats.eos_received else None
        if eos is not None and eos["total"] is not None and seq >= eos["total"] and eos.get("epoch") in (None, epoch):
            self.conflict(source, f"frame {seq} arrived after the EOS said {eos['total']} frames")
            return
        if not stats.live and isinstance(epoch, int):
            if stats.epoch is None:
                stats.epoch = epoch
            elif epoch != stats.epoch:
                # a lossless source runs as one process: a result of another epoch was never sent by it
                self.conflict(source, f"frame {seq} came with epoch {epoch}, the stream's frames with epoch "
                                      f"{stats.epoch}: a result for a frame this source never sent")
                return
        digest = None if header.get("error") else _digest(dets)  # an error result has no boxes to compare
        key = (epoch, seq)
        if key not in stats.digests:
            stats.digests[key] = digest
            if len(stats.digests) > DIGESTS_KEPT:
                stats.digests.popitem(last=False)
            return
        before = stats.digests[key]
        if before is not None and digest is not None and not _same_boxes(before, digest):
            self.conflict(source, f"frame {seq} arrived twice with different boxes ({before[0]}, then {digest[0]})")

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
        stats.eos = {"status": str(header.get("status") or "error"), "detail": _text(header.get("detail")) or "",
                     "dropped": _count(header.get("dropped")) or 0, "total": total, "epoch": header.get("epoch"),
                     "stats": _source_stats(header.get("stats"))}
        stats.dropped = max(stats.dropped, stats.eos["dropped"])
        return total

    # -- ends -----------------------------------------------------------------------------------

    def end_source(self, source: str, eos: dict[str, Any] | None = None, reorder: dict[str, int] | None = None,
                   finished: bool = True) -> None:
        """`finished`: every frame up to the EOS went through; False when the sink stops before that.
        `eos`: used when none was received (a test, or the status the sink gives an unfinished source)."""
        stats = self.stats[source]
        if stats.eos is None and eos is not None:
            stats.eos = {"status": str(eos.get("status") or "interrupted"), "detail": _text(eos.get("detail")) or "",
                         "dropped": _count(eos.get("dropped")) or 0, "total": _count(eos.get("total")),
                         "epoch": None, "stats": _source_stats(eos.get("stats"))}
            stats.dropped = max(stats.dropped, stats.eos["dropped"])
        stats.reorder = dict(reorder or {})
        stats.finished = finished
        for videos in (self._videos, self._clips):
            if source in videos:
                videos[source].finish()
        stats.digests.clear()
        log.info("source %s done: %d frames, %d boxes, %d flagged (%s)", source, stats.frames, stats.boxes,
                 stats.flagged, (stats.eos or {}).get("status"))

    # -- the account ----------------------------------------------------------------------------

    def _source_problems(self, sid: str, s: _SourceStats, final: bool) -> list[str]:
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
        lines += [line for archive in (self._crops, self._gallery) if (line := archive.problem(sid))]
        if s.conflicts:
            lines.append(f"source {sid}: {s.conflicts} conflicting message(s) (first: {s.conflict})")
        if s.forged:
            lines.append(f"source {sid}: {s.forged} forged message(s) refused, none written (first: "
                         f"{s.forged_first})")
        return lines

    def _lines_problem(self, name: str, lines: LineFile | None, what: str) -> list[str]:
        if lines is None or not (lines.lost or lines.error):
            return []
        if not lines.lost:
            return [f"{name}: {lines.reason}"]
        by_source = ", ".join(f"{sid} {n}" for sid, n in lines.lost_by.items())
        return [f"{name}: {lines.lost} {what} not written ({by_source}; {lines.reason or 'write failed'})"]

    def problems(self, final: bool = False) -> list[str]:
        """One line per thing lost or contradicted, naming the source or file and the numbers."""
        lines: list[str] = []
        for sid, s in self.stats.items():
            lines += self._source_problems(sid, s, final)
        lines += self._lines_problem("detections.jsonl", self._jsonl, "rows")
        lines += self._lines_problem("flagged/index.jsonl", self._crops.index,
                                     "index lines (their crops are in flagged/)")
        lines += self._lines_problem("tracks/index.jsonl", self._gallery.index,
                                     "index lines (their crops are in tracks/)")
        for videos in (self._videos, self._clips):
            lines += [video.problem() for video in videos.values() if video.failed]
        if len(lines) > MAX_PROBLEMS:
            lines = lines[:MAX_PROBLEMS - 1] + [f"... and {len(lines) - MAX_PROBLEMS + 1} more"]
        return lines

    def writes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, lines in (("jsonl", self._jsonl), ("flagged_index", self._crops.index),
                            ("tracks_index", self._gallery.index)):
            if lines is not None:
                out[name] = {"file": str(lines.path.relative_to(self.out)), "written": lines.written,
                             "lost": lines.lost, **({"error": lines.error} if lines.error else {})}
        if self.config.crops:
            out["crops"] = self._crops.totals(list(self.stats))
        if self._gallery.counts:
            out["track_crops"] = self._gallery.totals(list(self.stats))
        videos = {video.rel: video.report() for group in (self._videos, self._clips) for video in group.values()}
        if videos:
            out["videos"] = videos
        return out

    def summary(self, status: str) -> dict[str, Any]:
        final = status != "running"
        problems = self.problems(final)
        if status == "complete" and problems:
            # a source that was told to stop ended the run early: interrupted, with its problems listed
            stopped = any(s.eos_received and (s.eos or {}).get("status") == "interrupted" for s in self.stats.values())
            status = "interrupted" if stopped else "incomplete"
        per_source = {}
        frames = boxes = flagged = dropped = errors = 0
        first, last = None, None
        for sid, s in self.stats.items():
            span = (s.last_out - s.first_capture) if s.frames and s.last_out and s.first_capture else 0.0
            eos = s.eos or {}
            rows_lost = self._jsonl.lost_by.get(sid, 0) if self._jsonl is not None else 0
            crops = self._crops.count(sid)
            reorder = dict(s.reorder)
            broker_dropped = _count((eos.get("stats") or {}).get("broker_dropped")) or 0
            if reorder.get("skipped") and broker_dropped:
                # a frame the broker dropped (live) never reaches the sink either: it is counted in
                # `dropped`, not again as a gap the sink skipped
                reorder["skipped"] = max(0, reorder["skipped"] - broker_dropped)
            per_source[sid] = {
                "frames": s.frames, "fps": round(s.frames / span, 2) if span > 0 else 0.0,
                "latency_ms": s.latency.summary_ms(), "dropped": s.dropped, "boxes": s.boxes,
                "kept": s.boxes - s.flagged, "flagged": s.flagged, "errors": s.errors,
                "status": eos.get("status", "running"), "detail": eos.get("detail", ""),
                **(eos.get("stats") or {}),
                **reorder,
                "rows_lost": rows_lost, "crops_written": crops.written, "crops_failed": crops.failed,
                "conflicts": s.conflicts, **({"conflict": s.conflict} if s.conflict else {}),
                **({"forged": s.forged} if s.forged else {}),
                **({"drift": s.drift} if s.drift else {}),
                **({"tracks": self._tracks[sid].summary()} if sid in self._tracks else {}),
            }
            frames, boxes, flagged = frames + s.frames, boxes + s.boxes, flagged + s.flagged
            dropped, errors = dropped + s.dropped, errors + s.errors
            if s.frames and s.first_capture is not None and s.last_out is not None:  # both set with the first frame
                first = s.first_capture if first is None else min(first, s.first_capture)
                last = s.last_out if last is None else max(last, s.last_out)
        span = (last - first) if first is not None and last is not None else 0.0
        outputs: dict[str, Any] = {}
        if self.config.jsonl:
            outputs["jsonl"] = str(self.out / "detections.jsonl")
        if self.config.video:
            outputs["video"] = {sid: str(video.path) for sid, video in self._videos.items() if video.written}
        if self.config.crops:
            outputs["flagged"] = str(self.out / "flagged")
        if self._gallery.index is not None:
            outputs["tracks"] = str(self.out / "tracks")
        if self._clips:
            outputs["calibration_clips"] = {sid: {"path": str(clip.path), "frames": clip.written,
                                                  **({"error": clip.error} if clip.error else {})}
                                            for sid, clip in self._clips.items()}
        return {
            "status": status, "mode": self.mode, "frames": frames, "fps": round(frames / span, 2) if span > 0 else 0.0,
            "wall_s": round(time.time() - self.started, 2), "latency_ms": self.latency.summary_ms(),
            "dropped": dropped, "boxes": boxes, "kept": boxes - flagged, "flagged": flagged, "errors": errors,
            "bad_messages": self.bad_messages, "policy": self.policy,
            "stages_ms": {name: stats.summary_ms() for name, stats in self.segments.items() if stats.count},
            "per_source": per_source, "outputs": outputs, "writes": self.writes(), "problems": problems,
            "detector": (self.detector or {}).get("weights_sha256"),
            **({"forgers": dict(self.forgers)} if self.forgers else {}),
        }

    # -- summary.json ---------------------------------------------------------------------------

    def write_summary(self, status: str, final: bool = False) -> dict[str, Any]:
        summary = self.summary(status)
        if self._summary is not None:
            self._summary.save(summary, final)
        return summary

    def close(self, status: str) -> dict[str, Any]:
        if self._closed:
            return self.summary(status)
        self._closed = True
        for videos in (self._videos, self._clips):
            for video in videos.values():
                video.finish()
        for lines in (self._jsonl, self._crops.index, self._gallery.index):
            if lines is not None:
                lines.close()
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
        feed = None
        if graph.web.feed and graph.run_dir:
            # PUB drops what nobody takes: a closed or slow browser never holds the sink up
            self.feed_socket = self.ctx.socket(zmq.PUB)
            self.feed_socket.sndhwm, self.feed_socket.linger = 8, 0
            self.feed_socket.bind(feed_url(graph.run_dir, name))
            self._sockets.append(self.feed_socket)
            feed = LiveFeed(self._publish, graph.web.fps, graph.web.max_width, graph.web.quality)
        self.core = SinkCore(self.config, live, mode, self.metrics, policy=filter_policy(graph.filter.path),
                             tracks=tracks, feed=feed)
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
