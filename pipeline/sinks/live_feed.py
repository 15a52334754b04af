"""What a sink shows the live web view: each source's newest annotated frame (a few a second) and
the counters, as small msgpack messages.

`LiveFeed` is one of a stream sink's outputs (`pipeline.sinks.output.Output`): it takes every
frame and sends a source's newest one when it is due. The sink hands the messages to a ZeroMQ
PUB socket that drops a message rather than wait when nobody takes it (a closed or slow browser
must never slow the pipeline), so a message here is a snapshot, never something that must arrive.
`decode` is how the web view reads one back: it checks every field, since the feed is a socket
like any other.

    {"kind": "frame", "source": str, "seq": int, "t": float, "jpeg": bytes}
    {"kind": "stats", "t": float, "sources": {source: {"frames": int, "boxes": int, "kept": int,
                                              "flagged": int, "latency_p50_ms": float, ...}}}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cv2
import msgpack
import numpy as np

from pipeline.sinks.output import FrameRecord, Output

MAX_MESSAGE_BYTES = 8 << 20  # a 1080p JPEG is well under this
# the defaults, here and in the graph config's `web` section
FPS, MAX_WIDTH, QUALITY = 4.0, 960, 75
STAT_KEYS = ("frames", "boxes", "kept", "flagged", "dropped", "latency_p50_ms", "latency_p95_ms", "tracks",
             "flagged_tracks", "flag_rate_drift", "psi", "drift_alarm")


class LiveFeed(Output):
    """Decides what the web view gets and hands it to `send` (which returns False when it dropped it).
    As an output: a source's newest frame, annotated with the boxes `policy` shows, at most `fps` a second."""

    def __init__(self, send: Callable[[bytes], bool], fps: float = FPS, max_width: int = MAX_WIDTH,
                 quality: int = QUALITY, policy: str | None = None) -> None:
        self.send = send
        self.policy = policy
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.max_width, self.quality = int(max_width), int(quality)
        self._last: dict[str, float] = {}
        self.sent = 0
        self.dropped = 0  # refused by `send` (a PUB socket drops what nobody takes without saying so)

    def frame_due(self, source: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self._last.get(source, -1e9) >= self.period

    def write(self, frame: FrameRecord) -> None:
        if self.frame_due(frame.source):
            annotated = frame.annotated(self.policy)
            if annotated is not None:
                self.frame(frame.source, frame.seq, annotated)

    def frame(self, source: str, seq: int, annotated: np.ndarray, now: float | None = None) -> None:
        self._last[source] = time.monotonic() if now is None else now
        height, width = annotated.shape[:2]
        if width > self.max_width:
            annotated = cv2.resize(annotated, (self.max_width, max(1, round(height * self.max_width / width))),
                                   interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self._send({"kind": "frame", "source": source, "seq": int(seq), "t": time.time(),
                        "jpeg": jpeg.tobytes()})

    def stats(self, sources: dict[str, dict[str, Any]]) -> None:
        self._send({"kind": "stats", "t": time.time(),
                    "sources": {sid: {k: v for k, v in figures.items() if k in STAT_KEYS}
                                for sid, figures in sources.items()}})

    def _send(self, message: dict[str, Any]) -> None:
        if self.send(msgpack.packb(message, use_bin_type=True)):
            self.sent += 1
        else:
            self.dropped += 1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def decode(data: bytes) -> dict[str, Any] | None:
    """A feed message with the right fields and types; None for anything else (never raises)."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        message = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE_BYTES,
                                  max_str_len=1 << 16, max_array_len=1 << 12, max_map_len=1 << 12)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if not isinstance(message, dict) or not _number(message.get("t")):
        return None
    kind = message.get("kind")
    if kind == "frame":
        ok = (isinstance(message.get("source"), str) and 0 < len(message["source"]) <= 64
              and isinstance(message.get("seq"), int) and isinstance(message.get("jpeg"), bytes)
              and message["jpeg"][:2] == b"\xff\xd8")
        return message if ok else None
    if kind == "stats":
        sources = message.get("sources")
        if not isinstance(sources, dict):
            return None
        clean = {}
        for sid, figures in list(sources.items())[:256]:
            if isinstance(sid, str) and 0 < len(sid) <= 64 and isinstance(figures, dict):
                clean[sid] = {k: v for k, v in figures.items()
                              if k in STAT_KEYS and (_number(v) or isinstance(v, bool))}
        return {"kind": "stats", "t": message["t"], "sources": clean}
    return None
