"""Detector workers: a pool of processes, each running the detector on batches of frames.

Pure core: `DetectorCore.process(frames) -> messages` (frame messages in, one encoded
detections message per frame out: boxes, confidences, classes, logits, box features, pyramid
level as raw arrays, and the box crops). A frame the detector cannot process becomes a
zero-box result with an `error` field, so one bad frame never takes a worker down.

Shell: `WorkerStage`, a DEALER connected to the broker's backend ROUTER (Paranoid Pirate):
- it says HELLO, then CREDIT for the frames it can hold (`batch` x (1 + `prefetch`)) and a
  new CREDIT for each batch done, so the broker never sends more than it asked for;
- it batches frames of any streams until `batch` frames are there or the oldest waited
  `batch_timeout_ms`;
- inference runs on a compute thread so the socket loop keeps heartbeating during a long
  batch (torch releases the GIL); results come back through an inproc PAIR socket;
- if the broker is silent for `liveness` beats, or asks for a reset (HELLO), the worker
  starts over with a new identity: frames it held are the broker's to re-send.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import zmq

from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import read_filter_header, with_filter_features
from pipeline.filter.hallucination_filter import check_calibrated_conf, fingerprint_differences
from pipeline.stream import protocol as P
from pipeline.stream.config import GraphConfig
from pipeline.stream.endpoints import leaves_machine
from pipeline.stream.shell import StageShell

log = logging.getLogger(__name__)


def check_filter_matches(path: str, fingerprint: dict[str, Any], conf: float | None = None) -> None:
    """Fail at start, not at the first frame, when the filter was fitted for another detector,
    or calibrated on boxes above the confidence this detector reports."""
    header = read_filter_header(path)
    diffs = fingerprint_differences(header.get("fingerprint", {}), fingerprint)
    if diffs:
        raise GhostboxError(f"filter '{path}' was fitted for another detector (filter vs detector): {'; '.join(diffs)}")
    if conf is not None:
        check_calibrated_conf((header.get("metadata") or {}).get("detector_conf"), conf, f"filter '{path}' was")


class DetectorCore:
    """Frame messages in, detections messages out; no sockets."""

    def __init__(self, detector: Any, crops: str = "raw", jpeg_quality: int = 90) -> None:
        self.detector = detector
        self.crops = crops
        self.jpeg_quality = jpeg_quality
        self.fingerprint = dict(detector.fingerprint())

    def process(self, frames: list[P.Message]) -> list[list[Any]]:
        t_in = time.time()
        images: list[np.ndarray | None] = []
        errors: list[str | None] = []
        for message in frames:
            try:
                image = message.array("image")
                if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
                    raise P.ProtocolError("bad-image", f"shape {image.shape} dtype {image.dtype}")
                images.append(image)
                errors.append(None)
            except P.ProtocolError as exc:
                images.append(None)
                errors.append(str(exc))
        good = [i for i, image in enumerate(images) if image is not None]
        batch = [image for image in images if image is not None]  # the images of `good`, in order
        results: dict[int, Any] = {}
        t_start = time.time()
        if good:
            try:
                for i, dets in zip(good, self._detect(batch)):
                    results[i] = dets
            except Exception:  # noqa: BLE001 - find the frame that fails, keep the others
                for i, image in zip(good, batch):
                    try:
                        results[i] = self._detect([image])[0]
                    except Exception as exc:  # noqa: BLE001
                        log.exception("detector failed on %s frame %d", frames[i].topic, frames[i].seq)
                        errors[i] = f"detector: {type(exc).__name__}: {exc}"
        t_end = time.time()
        out = []
        for i, message in enumerate(frames):
            stamps = {"worker_in": message.stamps.get("worker_in", t_in), "detect_start": t_start, "detect_end": t_end}
            if i in results:
                fields, parts = P.detections_parts(results[i], self.crops, self.jpeg_quality)
                out.append(P.encode(P.DETECTIONS, message.topic, parts, seq=message.seq, detector=self.fingerprint,
                                    t=stamps, **fields))
            else:
                out.append(self._error(message, errors[i] or "unknown error", stamps))
        return out

    def _detect(self, images: list[np.ndarray]) -> list[Any]:
        return self.detector.detect(images, crops=self.crops != "none")

    def _error(self, message: P.Message, error: str, stamps: dict[str, float]) -> list[Any]:
        nc = len(self.fingerprint.get("class_names", []))
        dim = int(self.fingerprint.get("feature_dim", 0))
        parts = [P.raw_part("xyxy", np.zeros((0, 4), np.float32)), P.raw_part("confidence", np.zeros(0, np.float32)),
                 P.raw_part("class_id", np.zeros(0, np.int64)), P.raw_part("logits", np.zeros((0, nc), np.float32)),
                 P.raw_part("box_features", np.zeros((0, dim), np.float32)), P.raw_part("level", np.zeros(0, np.int8))]
        size = message.header.get("image_size", [0, 0])
        return P.encode(P.DETECTIONS, message.topic, parts, seq=message.seq, class_names=self.fingerprint.get(
            "class_names", []), image_size=size, crops="none", error=error[:500], t=stamps)


class _Compute(threading.Thread):
    """Runs batches off the socket thread; signals each result over its own inproc PAIR."""

    def __init__(self, ctx: zmq.Context, url: str, core: DetectorCore) -> None:
        super().__init__(name="detect", daemon=True)
        self.ctx, self.url, self.core = ctx, url, core
        self.inbox: queue.Queue[tuple[int, list[P.Message]] | None] = queue.Queue()
        self.results: queue.Queue[tuple[int, int, list[list[Any]], float]] = queue.Queue()

    def run(self) -> None:
        wake = self.ctx.socket(zmq.PAIR)
        wake.linger = 0
        wake.connect(self.url)
        try:
            while True:
                job = self.inbox.get()
                if job is None:
                    return
                generation, batch = job
                start = time.perf_counter()
                messages = self.core.process(batch)
                self.results.put((generation, len(batch), messages, time.perf_counter() - start))
                wake.send(b"")
        finally:
            wake.close()


class WorkerStage(StageShell):
    def __init__(self, graph: GraphConfig, index: int, parent_pid: int | None = None) -> None:
        super().__init__(graph, f"worker:{index}", parent_pid)
        # torch (and the detector, built on it): loaded by the worker that runs it, not by whoever imports
        # this module (the broker tests use DetectorCore with a fake detector)
        import torch

        from pipeline.detect.detector import Detector

        cfg = graph.workers
        self.index = index
        # Replicas in containers (or on machines) share stage indices and often pids: a random id tells them
        # apart. The broker names a worker by the first 4 bytes of its ZeroMQ identity, in hex; they are this
        # id's random part, so the broker's "worker 9f3c01aa joined" and this worker's "w0-9f3c01aa" match.
        self.token = bytes([1 + secrets.randbelow(255)]) + secrets.token_bytes(3)  # ZeroMQ reserves a leading 0
        self.worker_id = f"w{index}-{self.token.hex()}"
        plan = graph.worker_plan()
        threads = plan.threads

        torch.set_num_threads(threads)
        # the plan's batch, the one the supervisor and `bench stream` report (the graph's when it names one)
        detector = graph.detector.model_copy(update={"batch": plan.batch})
        self.detector = Detector(with_filter_features(detector, [graph.filter.path] if graph.filter.path else []))
        if graph.filter.path:
            check_filter_matches(graph.filter.path, self.detector.fingerprint(), self.detector.config.conf)
        self.detector.warmup()
        crops = cfg.crops
        graph.check_filter_crops()
        if crops == "auto":
            wanted = any(s.crops for s in graph.sinks) or graph.filter_needs_crops()
            crops = "none" if not wanted else "jpeg" if leaves_machine(graph.endpoints.workers.url or "") else "raw"
        self.core = DetectorCore(self.detector, crops)
        self.batch = self.detector.batch
        prefetch = cfg.prefetch if cfg.prefetch is not None else (0 if graph.all_live() else 1)
        self.capacity = self.batch * (1 + prefetch)
        self.batch_timeout_s = cfg.batch_timeout_ms / 1000
        self.heartbeat_s = graph.broker.heartbeat_ms / 1000
        self.liveness = graph.broker.liveness
        # which worker and where: replicas in containers share the stage index (and often the pid), so the
        # start line names the random id its identities carry and the host (a container's is its id)
        log.info("worker %d (%s on %s): %s on %s, imgsz %d, batch %d, %d thread(s), crops %s", index, self.worker_id,
                 socket.gethostname(), os.path.basename(graph.detector.model), self.detector.device,
                 self.detector.imgsz, self.batch, threads, crops)
        wake_url = f"inproc://detect-{id(self)}"
        self.wake = self.wake_socket(wake_url)
        self.compute = _Compute(self.ctx, wake_url, self.core)
        self.generation = 0
        self.sock: zmq.Socket | None = None
        self.held: deque[P.Message] = deque()  # received, not yet handed to the compute thread
        self.busy = 0  # frames on the compute thread (credit comes back when they are done)
        self.poller = zmq.Poller()
        self.poller.register(self.wake, zmq.POLLIN)
        self.results = 0
        # the supervisor starts the other stages only once this worker accepted its model and filter
        self.report_progress(force=True, ready=1, held=0, done=0)

    def _connect(self) -> None:
        if self.sock is not None:
            self.poller.unregister(self.sock)
            self._sockets.remove(self.sock)
            self.sock.close(0)
        self.generation += 1
        # a new identity per connection: the broker never takes a reconnected worker for the one it gave up on
        suffix = f"-{os.getpid()}-{self.generation}"
        identity, name = self.token + suffix.encode(), self.worker_id + suffix
        self.sock = self.socket(zmq.DEALER, self.graph.endpoints.workers.url, bind=False, identity=identity,
                                edge="workers")
        self.held.clear()
        free = self.capacity - self.busy
        self.send(self.sock, P.control(P.HELLO, name, role="worker", capacity=self.capacity,
                                       batch=self.batch, pid=os.getpid()))
        self.send(self.sock, P.control(P.CREDIT, name, n=free))
        self.poller.register(self.sock, zmq.POLLIN)
        self.last_broker = time.monotonic()

    def _broker(self) -> zmq.Socket:
        """The socket to the broker, opened by `_connect` (the first thing `run` does)."""
        if self.sock is None:
            raise RuntimeError(f"worker {self.index}: not connected to the broker yet")
        return self.sock

    def run(self) -> int:
        self.compute.start()
        self._connect()
        last_beat = time.monotonic()
        computing = False
        while not self.should_stop():
            timeout = self.heartbeat_s if computing or not self.held else self._batch_wait()
            events = dict(self.poller.poll(int(timeout * 1000) + 1))
            if self.sock in events and self._read_socket():
                break
            if self.wake in events:
                computing = self._take_results(computing)
            if not computing and self.held and self._batch_wait() <= 0:
                batch = [self.held.popleft() for _ in range(min(self.batch, len(self.held)))]
                self.busy += len(batch)
                self.compute.inbox.put((self.generation, batch))
                computing = True
                self.metrics.set_queue("held", len(self.held))
            now = time.monotonic()
            if now - last_beat >= self.heartbeat_s:
                last_beat = now
                self.send(self._broker(), P.control(P.HEARTBEAT, "worker"))
            self.report_progress(held=len(self.held) + self.busy, done=self.results)
            if now - self.last_broker > self.heartbeat_s * self.liveness:
                log.warning("worker %d: broker silent for %.1f s; reconnecting", self.index, now - self.last_broker)
                self.metrics.event("reconnect")
                self._connect()
        self.compute.inbox.put(None)
        self.compute.join(timeout=10.0)
        self.report_progress(force=True, held=len(self.held) + self.busy, done=self.results)
        self.close()
        return 0

    def _batch_wait(self) -> float:
        """Seconds the held frames should still wait for a fuller batch (<= 0: run now)."""
        if len(self.held) >= self.batch or self.held[-1].header.get("more", 1) == 0:
            return 0.0  # full, or nothing more is queued at the broker: waiting would only add latency
        return self.held[0].stamps["worker_in"] + self.batch_timeout_s - time.time()

    def _read_socket(self) -> bool:
        """Take every waiting message; True when told to shut down."""
        while self._broker().poll(0):
            message = self.receive(self._broker(), "broker")
            if message is None:
                continue
            self.last_broker = time.monotonic()
            if message.type == P.FRAME:
                now = time.time()
                message.stamps["worker_in"] = now
                self.metrics.inc_in(message.topic)
                self.metrics.observe_hop("broker->worker", now - message.stamps.get("dispatch", now))
                self.held.append(message)
            elif message.type == P.SHUTDOWN:
                log.info("worker %d: shutdown (%s)", self.index, message.header.get("reason", ""))
                return True
            elif message.type == P.HELLO:
                log.info("worker %d: the broker asked for a reset", self.index)
                self._connect()
                return False
        return False

    def _take_results(self, computing: bool) -> bool:
        while self.wake.poll(0):
            self.wake.recv()
        while True:
            try:
                generation, count, messages, seconds = self.compute.results.get_nowait()
            except queue.Empty:
                return computing
            computing = False
            self.busy -= count
            if generation == self.generation:  # else the broker has re-sent these frames after a reset
                for message in messages:
                    if not self.send(self._broker(), message):
                        log.warning("worker %d: the broker is not taking results; %s frame %d left to it",
                                    self.index, message[0].decode(), P.decode(message).seq)
                    self.metrics.inc_out(message[0].decode())
                self.results += len(messages)
                self.metrics.observe_stage(seconds / max(count, 1))
            self.send(self._broker(), P.control(P.CREDIT, "worker", n=count))
