"""The stream's source stage: one process per stream that sends its frames to the broker.

The frames come from a reader of `pipeline.sources` (files, synth world, cameras); here they are
sent. A `Grabber` thread reads into a `FrameBuffer` (lossless: blocks under backpressure; live:
latest frame wins) and wakes the sending loop over an inproc socket. The `SourceStage` shell owns
a DEALER socket to the broker: it announces itself (HELLO), sends a frame for each credit the
broker grants, and ends with an explicit EOS that the broker acknowledges, its stats built by
`eos_fields` from what the reader skipped or cut.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from pipeline.errors import GhostboxError
from pipeline.sources.frame_buffer import FrameBuffer
from pipeline.sources.frame_reader import Captured, FrameReader
from pipeline.sources.media_files import MediaReport
from pipeline.sources.open_reader import open_reader
from pipeline.sources.resize import resize
from pipeline.stream import protocol as P
from pipeline.stream.config import GraphConfig, SourceConfig
from pipeline.stream.endpoints import leaves_machine
from pipeline.stream.shell import StageShell

log = logging.getLogger(__name__)

# source exit codes the supervisor reads: 0 EOS acknowledged (status ok or incomplete);
# 3 EOS acknowledged, stream failed
EXIT_STREAM_ERROR = 3
MAX_LISTED = 20  # files named in an EOS's stats; the counts cover all of them


# -- reading into the buffer ------------------------------------------------------------------------

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


def _open_reader(source: SourceConfig, stop: threading.Event) -> FrameReader:
    # the readers sit below the stream and know nothing of its config: hand them its fields
    return open_reader(source.resolved_kind, source.uri, stop, loop=source.loop,
                       reconnect=(source.reconnect_initial_s, source.reconnect_max_s, source.reconnect_attempts))


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
        self.grabber = Grabber(self.ctx, wake_url, lambda: _open_reader(self.source, self.stop_event), self.buffer,
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
