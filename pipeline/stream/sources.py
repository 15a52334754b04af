"""Frame sources: files, image folders and globs, webcams, RTSP/HTTP streams, the synthetic world.

Pure parts (no sockets): `open_reader()` gives a `FrameReader` per kind; `Backoff` is the
reconnect policy of live sources; `FrameBuffer` sits between the reading thread and the
sending loop and is where the two modes differ:

- lossless: a small blocking queue. When the broker gives no credit the buffer fills and
  the reader blocks, so backpressure slows the source and no frame is ever skipped.
- live: one slot, latest frame wins. A frame that is overwritten before it was sent is
  counted as dropped, so the pipeline always works on the newest frame and latency cannot
  build up behind a slow detector.

The `SourceStage` shell owns a DEALER socket to the broker: it announces itself (HELLO),
sends a frame for each credit the broker grants, and ends with an explicit EOS that the
broker acknowledges.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import zmq

from pipeline.errors import GhostboxError
from pipeline.sources.media_files import VIDEO_SUFFIXES, MediaReport, count_frames, iter_frames
from pipeline.stream import protocol as P
from pipeline.stream.config import GraphConfig, SourceConfig
from pipeline.stream.endpoints import leaves_machine
from pipeline.stream.shell import StageShell
from pipeline.synth import WorldConfig, render_stream_frame

log = logging.getLogger(__name__)

# source exit codes the supervisor reads: 0 EOS acknowledged (status ok or incomplete);
# 3 EOS acknowledged, stream failed
EXIT_STREAM_ERROR = 3
MAX_LISTED = 20  # files named in an EOS's stats; the counts cover all of them


@dataclass
class Captured:
    image: np.ndarray  # BGR uint8
    origin: str  # the file, URL or device it came from
    frame: int  # index within that origin
    t_capture: float  # unix seconds


class FrameReader(Protocol):
    # read-only properties: a reader may narrow them (a plain attribute or a class attribute will do)
    @property
    def fps(self) -> float | None:  # native frame rate when known
        ...

    @property
    def live(self) -> bool:  # a camera or network stream: frames arrive in real time, it may drop and come back
        ...

    @property
    def report(self) -> MediaReport | None:  # what a file reader skipped or cut; None for readers without files
        ...

    def read(self) -> Captured | None:  # None: end of stream
        ...

    def close(self) -> None:
        ...


# -- readers ----------------------------------------------------------------------------------------

def check_file_source(uri: str) -> None:
    """Raise GhostboxError now if a file/folder/glob source names nothing readable."""
    count_frames([uri])


class FileReader:
    """Video files, images, folders and globs, through ghostbox's media reader.

    `report` records what the first pass skipped or cut (a looping source reads the same files
    again; they are counted once); `expected` is what the inputs announce, counted up front.
    """

    live = False

    def __init__(self, uri: str, loop: bool = False) -> None:
        self.expected = count_frames([uri])  # raises GhostboxError if the source names nothing readable
        self.report = MediaReport()
        self._passes = 0
        self.uri = uri
        self.loop = loop
        self.fps: float | None = None
        if Path(uri).suffix.lower() in VIDEO_SUFFIXES and Path(uri).is_file():
            capture = cv2.VideoCapture(uri)
            self.fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
            capture.release()
        self._frames = self._open()

    def _open(self) -> Iterator[Any]:
        self._passes += 1
        return iter_frames([self.uri], self.report if self._passes == 1 else MediaReport())

    def read(self) -> Captured | None:
        frame = next(self._frames, None)
        if frame is None and self.loop:
            self._frames = self._open()
            frame = next(self._frames, None)
        if frame is None:
            return None
        return Captured(frame.image, frame.source, frame.index, time.time())

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()


def parse_synth_uri(uri: str) -> dict[str, Any]:
    """`synth` or `synth:seed=3,frames=600,width=320,height=320,fps=30,objects=5`."""
    keys = {"seed": "seed", "frames": "stream_frames", "width": "width", "height": "height", "fps": "stream_fps",
            "objects": "stream_objects_on_screen"}
    params: dict[str, Any] = {}
    body = uri[len("synth"):].lstrip(":")
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, _, value = item.partition("=")
        if key not in keys or not value:
            raise GhostboxError(f"source '{uri}': expected synth:key=value,... with keys {sorted(keys)}, got '{item}'")
        try:
            params[keys[key]] = float(value) if key == "fps" else int(value)
        except ValueError:
            raise GhostboxError(f"source '{uri}': {key}={value!r} is not a number") from None
    WorldConfig(**params)  # validates (raises GhostboxError naming the field)
    return params


class SynthReader:
    """The synthetic world's stream (`pipeline.synth.render_stream_frame`), frame by frame."""

    live = False
    report = None

    def __init__(self, uri: str) -> None:
        self.config = WorldConfig(**parse_synth_uri(uri))
        self.fps = float(self.config.stream_fps)
        self.uri = uri
        self._index = 0

    def read(self) -> Captured | None:
        if self._index >= self.config.stream_frames:
            return None
        image, _ = render_stream_frame(self.config, self._index)
        self._index += 1
        return Captured(image, self.uri, self._index - 1, time.time())

    def close(self) -> None:
        pass


class Backoff:
    """Reconnect delays: initial, doubling up to max; reset after a success; optional attempt limit."""

    def __init__(self, initial_s: float, max_s: float, attempts: int | None = None) -> None:
        self.initial_s, self.max_s, self.attempts = initial_s, max_s, attempts
        self.failures = 0

    def next_delay(self) -> float | None:
        """Seconds to wait before the next try, or None when the attempts are used up."""
        self.failures += 1
        if self.attempts is not None and self.failures > self.attempts:
            return None
        return min(self.initial_s * 2 ** (self.failures - 1), self.max_s)

    def reset(self) -> None:
        self.failures = 0


class CaptureReader:
    """A webcam (device index) or network stream through OpenCV/FFmpeg, reconnecting with back-off.

    `read()` only returns None when the attempts are used up or `stop` is set; while the
    camera is away it keeps retrying, and the other streams of the graph go on.
    """

    live = True
    report = None

    def __init__(self, uri: str, backoff: Backoff, stop: threading.Event,
                 open_capture: Callable[[str], Any] | None = None) -> None:
        self.uri = uri
        self.backoff = backoff
        self.stop = stop
        self.fps: float | None = None
        self.reconnects = 0
        self._open_capture = open_capture or _open_cv_capture
        self._capture: Any = None
        self._index = 0

    def _connect(self) -> bool:
        while not self.stop.is_set():
            capture = None
            try:
                capture = self._open_capture(self.uri)
                if capture is not None and capture.isOpened():
                    self._capture = capture
                    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0)
                    self.fps = fps if 0 < fps <= 240 else None
                    return True
            except Exception as exc:  # noqa: BLE001 - a backend error is one more failed attempt
                log.debug("opening %s: %s", self.uri, exc)
            if capture is not None:
                capture.release()
            if not self._wait("cannot open"):
                return False
        return False

    def _wait(self, what: str) -> bool:
        delay = self.backoff.next_delay()
        if delay is None:
            log.error("source %s: %s; giving up after %d attempts", self.uri, what, self.backoff.failures - 1)
            return False
        log.warning("source %s: %s; retrying in %.1f s", self.uri, what, delay)
        return not self.stop.wait(delay)

    def read(self) -> Captured | None:
        while not self.stop.is_set():
            if self._capture is None:
                if not self._connect():
                    return None
                if self.backoff.failures:
                    self.reconnects += 1
                    log.info("source %s: connected again", self.uri)
            ok, image = self._capture.read()
            if ok and image is not None:
                self.backoff.reset()
                self._index += 1
                return Captured(image, self.uri, self._index - 1, time.time())
            self._capture.release()
            self._capture = None
            if not self._wait("stream lost"):
                return None
        return None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _open_cv_capture(uri: str) -> Any:
    if uri.isdigit():
        capture = cv2.VideoCapture(int(uri))
    else:
        # bounded open/read timeouts, so an unreachable camera never blocks the thread for minutes
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        capture = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the backend honours it: fewer stale frames
    return capture


def open_reader(source: SourceConfig, stop: threading.Event) -> FrameReader:
    kind = source.resolved_kind
    if kind == "file":
        return FileReader(source.uri, loop=source.loop)
    if kind == "synth":
        return SynthReader(source.uri)
    backoff = Backoff(source.reconnect_initial_s, source.reconnect_max_s, source.reconnect_attempts)
    return CaptureReader(source.uri, backoff, stop)


def resize(image: np.ndarray, size: tuple[int, int] | int | None) -> np.ndarray:
    if size is None:
        return image
    height, width = image.shape[:2]
    if isinstance(size, int):
        scale = size / max(height, width)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
    else:
        target = (int(size[0]), int(size[1]))
    if target == (width, height):
        return image
    interpolation = cv2.INTER_AREA if target[0] < width else cv2.INTER_LINEAR
    return cv2.resize(image, target, interpolation=interpolation)


# -- the buffer between reading and sending ---------------------------------------------------------

class FrameBuffer:
    """Lossless: a blocking queue of `capacity`. Live: latest wins, overwritten frames counted."""

    def __init__(self, live: bool, capacity: int = 2) -> None:
        self.live = live
        self.capacity = 1 if live else max(1, capacity)
        self._items: deque[Captured] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.ended = False
        self.error: str | None = None

    def put(self, item: Captured, stop: threading.Event) -> bool:
        """False when stopped before the frame could be placed (lossless only waits)."""
        with self._cond:
            if self.live:
                if self._items:
                    self._items.popleft()
                    self.dropped += 1
                self._items.append(item)
                return True
            while len(self._items) >= self.capacity:
                if stop.is_set():
                    return False
                self._cond.wait(0.1)
            self._items.append(item)
            return True

    def take(self) -> Captured | None:
        with self._cond:
            item = self._items.popleft() if self._items else None
            self._cond.notify_all()
            return item

    def end(self, error: str | None = None) -> None:
        with self._cond:
            self.ended = True
            self.error = error

    def finished(self) -> bool:
        with self._cond:
            return self.ended and not self._items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Grabber(threading.Thread):
    """Reads frames into the buffer: paced at `fps` for files and the synthetic world in live
    mode (they stand in for a camera), thinned to `fps` for cameras, as fast as allowed otherwise.
    Wakes the sending loop through an inproc socket (it owns its end; zmq sockets stay in one thread)."""

    def __init__(self, ctx: zmq.Context, wake_url: str, open_fn: Callable[[], FrameReader], buffer: FrameBuffer,
                 live: bool, fps_limit: float | None, stop: threading.Event, max_frames: int | None = None) -> None:
        super().__init__(name="grabber", daemon=True)
        self.ctx, self.wake_url, self.open_fn = ctx, wake_url, open_fn
        self.buffer, self.live, self.fps_limit, self.stop = buffer, live, fps_limit, stop
        self.max_frames = max_frames
        self.started = threading.Event()  # set by the sender at the first credit
        self.rate_skipped = 0
        self.max_frames_reached = False  # the stream was cut at max_frames on purpose
        self.reader: FrameReader | None = None

    def run(self) -> None:
        wake = self.ctx.socket(zmq.PAIR)
        wake.linger = 0
        wake.connect(self.wake_url)
        error = None
        try:
            self.reader = self.open_fn()
            for item in self._paced(self.reader):
                if not self.buffer.put(item, self.stop):
                    break
                try:
                    wake.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass  # a wake-up is already pending
        except GhostboxError as exc:
            error = str(exc)
            log.error("%s", exc)
        except Exception as exc:  # noqa: BLE001 - the stream ends with an error EOS instead of a crash
            error = f"{type(exc).__name__}: {exc}"
            log.exception("source reader failed")
        finally:
            self.buffer.end(error)
            try:
                wake.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass
            wake.close()
            if self.reader is not None:
                self.reader.close()

    def _paced(self, reader: FrameReader) -> Iterator[Captured]:
        fps = self.fps_limit or (reader.fps if self.live and not reader.live else None)
        interval = 1.0 / fps if fps else 0.0
        if self.live and not reader.live:
            # a file standing in for a camera starts playing when the pipeline can take frames,
            # instead of dropping its first seconds while the detector loads
            while not self.started.wait(0.1):
                if self.stop.is_set():
                    return
        next_at = time.monotonic()
        count = 0
        while not self.stop.is_set():
            if self.max_frames is not None and count >= self.max_frames:
                self.max_frames_reached = True
                return
            item = reader.read()
            count += 1
            if item is None:
                return
            if interval and reader.live:
                # a camera runs at its own pace: keep at most one frame per interval
                now = time.monotonic()
                if now < next_at:
                    self.rate_skipped += 1
                    continue
                next_at = max(next_at + interval, now)
            elif interval:
                # a file standing in for a camera (or rate-limited): frame i at t0 + i * interval
                delay = next_at - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    return
                next_at = max(next_at + interval, time.monotonic() - interval)
                item.t_capture = time.time()
            yield item

    def end_fields(self, status: str) -> tuple[str, str, dict[str, Any]]:
        """(status, detail, stats) for the EOS of what this grabber read (see `eos_fields`)."""
        reader = self.reader
        status, detail, stats = eos_fields(status, self.buffer.error, getattr(reader, "report", None),
                                           getattr(reader, "expected", _FROM_REPORT),
                                           self.max_frames if self.max_frames_reached else None)
        stats.update(rate_skipped=self.rate_skipped, reconnects=getattr(reader, "reconnects", 0))
        return status, detail, stats


# -- the end of a stream ----------------------------------------------------------------------------

_FROM_REPORT: Any = object()


def eos_fields(status: str, error: str | None, report: MediaReport | None, expected: int | None = _FROM_REPORT,
               max_frames: int | None = None) -> tuple[str, str, dict[str, Any]]:
    """(status, detail, stats) for a source's EOS. A stream that ended normally but skipped or cut
    frames (the report is not complete) is "incomplete"; `detail` names the error or the first
    problem. Stats (msgpack-plain) when there is a report: `expected` (frames the inputs announce,
    None when a video cannot tell; given, it overrides the report's, which only covers the files
    opened so far), `read`, `unreadable` (count), `unreadable_files` and `truncated` (the first
    MAX_LISTED); `max_frames` when the stream was cut there on purpose (not incomplete)."""
    stats: dict[str, Any] = {}
    problems: list[str] = []
    if report is not None:
        problems = report.problems()
        stats.update(expected=report.expected if expected is _FROM_REPORT else expected, read=report.read,
                     unreadable=len(report.unreadable), unreadable_files=list(report.unreadable[:MAX_LISTED]),
                     truncated=[dict(t) for t in report.truncated[:MAX_LISTED]])
    if max_frames is not None:
        stats["max_frames"] = max_frames
    if status == "ok" and problems:
        status = "incomplete"
    detail = error or ""
    if not detail and problems:
        detail = problems[0] + (f" (and {len(problems) - 1} more file(s))" if len(problems) > 1 else "")
    return status, detail[:1000], stats


# -- the stage shell --------------------------------------------------------------------------------

class SourceStage(StageShell):
    """One stream: reads frames, sends one per broker credit, ends with an acknowledged EOS."""

    HELLO_RETRY_S = 1.0
    EOS_RETRY_S = 1.0
    EOS_TIMEOUT_S = 30.0

    def __init__(self, graph: GraphConfig, source_id: str, parent_pid: int | None = None) -> None:
        super().__init__(graph, f"source:{source_id}", parent_pid)
        self.source = graph.source(source_id)
        self.live = graph.source_mode(self.source) == "live"
        endpoint = graph.endpoints.sources
        self.encoding = self.source.encoding
        if self.encoding == "auto":
            self.encoding = "jpeg" if leaves_machine(endpoint.url or "") else "raw"
        # identity = source id: a restarted source takes over its routing slot (ROUTER_HANDOVER)
        # room for every frame the broker may grant (credit) plus control messages
        self.sock = self.socket(zmq.DEALER, endpoint.url, bind=False, identity=source_id.encode(),
                                hwm=2 * graph.broker.prefetch + 16, edge="sources")
        self.epoch = time.time_ns() // 1000 % (1 << 52)
        self.seal = self.load_seal()
        self.stop_event = threading.Event()
        self.buffer = FrameBuffer(self.live, capacity=2)
        wake_url = f"inproc://wake-{id(self)}"
        self.wake = self.wake_socket(wake_url)
        self.grabber = Grabber(self.ctx, wake_url, lambda: open_reader(self.source, self.stop_event), self.buffer,
                               self.live, self.source.fps, self.stop_event, self.source.max_frames)
        self.seq = 0
        self.credit = 0
        self.unsent: Captured | None = None
        self.shutdown_now = False
        self._reported = (0, 0)  # drops already counted in the metrics (stale, rate-limit)

    def on_stop(self) -> None:
        self.stop_event.set()

    def _publish_drops(self) -> None:
        stale = self.buffer.dropped - self._reported[0]
        skipped = self.grabber.rate_skipped - self._reported[1]
        if stale:
            self.metrics.inc_dropped(self.source.id, "stale", stale)
        if skipped:
            self.metrics.inc_dropped(self.source.id, "rate-limit", skipped)
        self._reported = (self.buffer.dropped, self.grabber.rate_skipped)

    def _hello(self) -> None:
        self.send(self.sock, P.control(P.HELLO, self.source.id, role="source", mode="live" if self.live else "lossless",
                                       epoch=self.epoch, pid=os.getpid()))

    def _send_frame(self, item: Captured) -> bool:
        image = resize(item.image, self.source.resize)
        t_send = time.time()
        part = P.image_part("image", image, self.encoding, self.source.jpeg_quality)
        fps = self.source.fps or (self.grabber.reader.fps if self.grabber.reader else None)
        fields = {"seq": self.seq, "frame": item.frame, "origin": item.origin, "epoch": self.epoch}
        message = P.encode(P.FRAME, self.source.id, [part], **fields, seal=self.seal.frame(self.source.id, fields),
                           dropped=self.buffer.dropped, fps=fps, image_size=[image.shape[1], image.shape[0]],
                           t={"capture": item.t_capture, "send": t_send})
        if not self.send(self.sock, message):
            return False  # the queue to the broker is full: keep the frame, try again
        self._publish_drops()
        self.metrics.inc_out(self.source.id)
        self.seq += 1
        self.credit -= 1
        # what was really sent, for the supervisor to hold the sinks' counts against (not an EOS any peer could forge)
        self.report_progress(sent=self.seq, dropped=self.buffer.dropped, done=self.seq)
        return True

    def _drain_socket(self) -> bool:
        """Read what the broker sent; True when an EOS ack came."""
        acked = False
        while self.sock.poll(0):
            message = self.receive(self.sock, "broker")
            if message is None:
                continue
            if message.type == P.CREDIT:
                self.credit += message.header["n"]
            elif message.type == P.ACK and message.header["of"] == P.EOS:
                acked = True
            elif message.type == P.SHUTDOWN:
                self.shutdown_now = True
                self.stop_event.set()
        return acked

    def run(self) -> int:
        self.grabber.start()
        self._hello()
        last_hello = time.monotonic()
        got_credit = False
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.wake, zmq.POLLIN)
        while not self.should_stop():
            events = dict(poller.poll(100))
            if self.wake in events:
                while self.wake.poll(0):
                    self.wake.recv()
            if self.sock in events:
                self._drain_socket()
            if self.shutdown_now:
                break
            if self.credit > 0:
                got_credit = True
                self.grabber.started.set()
            elif not got_credit and time.monotonic() - last_hello > self.HELLO_RETRY_S:
                self._hello()  # the broker was not up yet, or restarted
                last_hello = time.monotonic()
            while self.credit > 0:
                item = self.unsent or self.buffer.take()
                self.unsent = None
                if item is None:
                    break
                if not self._send_frame(item):
                    self.unsent = item
                    break
            if self.buffer.finished() and self.unsent is None:
                break
        self.stop_event.set()
        status = "interrupted" if self.stopping or self.shutdown_now else "error" if self.buffer.error else "ok"
        status, acked = self._end(status)
        self.report_progress(force=True, sent=self.seq, dropped=self.buffer.dropped, done=self.seq)
        self.grabber.join(timeout=2.0)
        log.info("%s: %d frames sent, %d dropped, EOS %s%s", self.source.id, self.seq, self.buffer.dropped, status,
                 "" if acked else " (not acknowledged)")
        self.close()
        if not acked:
            return 1
        return EXIT_STREAM_ERROR if status == "error" else 0

    def _end(self, status: str) -> tuple[str, bool]:
        """Send the EOS until the broker acknowledges it: (the status sent, acknowledged)."""
        status, detail, stats = self.grabber.end_fields(status)
        if status == "incomplete":
            log.warning("%s: incomplete: %s", self.source.id, detail)
        fields = {"total": self.seq, "status": status, "epoch": self.epoch}
        message = P.control(P.EOS, self.source.id, **fields, seal=self.seal.eos(self.source.id, fields),
                            dropped=self.buffer.dropped, stats=stats, detail=detail)
        deadline = time.monotonic() + (5.0 if self.stopping else self.EOS_TIMEOUT_S)
        while time.monotonic() < deadline and not self.parent_gone():
            self.send(self.sock, message)
            retry_at = time.monotonic() + self.EOS_RETRY_S
            while time.monotonic() < min(retry_at, deadline):
                if self.sock.poll(100) and self._drain_socket():
                    return status, True
        return status, False
