"""The broker: hands frames from every source to a pool of detector workers and passes their
detections on to the filter. It owns every frame from arrival until its result went
downstream, which is what makes worker deaths lossless.

Sockets (the shell, `BrokerStage`):
    frontend  ROUTER, bound; sources connect DEALERs (identity = source id). ROUTER because
              the broker must address credit and EOS acks to one particular source.
    backend   ROUTER, bound; workers connect DEALERs. ROUTER because frames go to the worker
              that asked for them (credit), not round-robin: a slow or dead worker must not
              be handed frames blindly as PUSH would.
    filter    PUSH (binds or connects per config) to the filter stage: one way, and it queues
              up to its high-water mark, which is the downstream backpressure the broker
              watches (sends never block the loop; a full queue pauses dispatching).

Flow control is credit-based both ways (the ZeroMQ guide's load-balancing broker with the
Paranoid Pirate's heartbeats):
- a lossless source may have `prefetch` frames queued or on their way; it gets a credit
  back for each frame handed to a worker, so a slow detector slows the source;
- a live source gets a credit only when a worker has room and none of its frames waits,
  so what a worker picks up is always the newest frame of that camera;
- a worker announces free room with CREDIT n; it is given frames of different sources in
  round-robin (batching across streams), least busy worker first;
- broker and workers exchange heartbeats every `heartbeat_ms`; a worker silent for
  `liveness` beats is dead: in lossless mode its frames are queued again at the head of
  their source's queue (a frame whose workers died `max_attempts` times is delivered as an
  error instead, so a frame that crashes the detector cannot crash every worker in turn);
  in live mode they are dropped and counted, since re-sending stale frames only adds latency;
- a worker that holds a frame longer than `frame_lease_s` without returning it is lost the same
  way, heartbeats or not: a peer with the workers' key that takes frames and keeps them cannot
  hang a lossless run (each frame goes elsewhere, and is given up after `max_attempts`).
A result is accepted once, from a worker the frame was given to; a second result for the
same frame (a worker declared dead that was only slow) is dropped here, and the sink's
resequencer drops duplicates again by (source, seq).

The core (`DispatchCore`, no sockets) is in parts: `source_admission.py` admits each source's
messages and paces it with credit, `worker_pool.py` keeps the workers' room, heartbeats and what
each holds, `broker_ledger.py` the frames held and the messages to send; here is each frame's way
from its source's queue to a worker and on downstream (or back, when its worker is lost).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from pipeline.detections import Detections
from pipeline.stream import protocol as P
from pipeline.stream.broker_ledger import DOWNSTREAM, SOURCE, WORKER, Key, Ledger, Out, Pending
from pipeline.stream.config import GraphConfig
from pipeline.stream.shell import StageShell
from pipeline.stream.source_admission import SourceAdmission, SourceState
from pipeline.stream.worker_pool import WorkerPool, WorkerState

log = logging.getLogger(__name__)

# a frame's own fields, which its result takes from the frame (not from the worker); `seal` is its source's
FRAME_FIELDS = ("frame", "origin", "epoch", "dropped", "fps", "seal")


class DispatchCore:
    """The broker's logic without sockets: messages in (with the sender's routing id), `Out`s out.

    Its parts keep the books: `admission` the sources and their credit, `pool` the workers, `ledger` the
    frames held and the messages to send. What is here is each frame's way: to a worker, its result
    downstream, back to its source's queue when the worker is lost, or given up."""

    def __init__(self, sources: dict[str, bool], prefetch: int = 4, heartbeat_s: float = 1.0, liveness: int = 3,
                 max_attempts: int = 3, forward_frames: bool = True,
                 reachable: Callable[[bytes], bool] | None = None, lease_s: float = 0.0) -> None:
        self.ledger = Ledger()
        self.pool = WorkerPool(self.ledger, heartbeat_s, liveness)
        # reachable(routing): is that source connection still open? (the shell asks ZeroMQ)
        self.admission = SourceAdmission(sources, self.ledger, self.pool, prefetch,
                                         reachable or (lambda routing: False))
        self.max_attempts = max_attempts
        self.lease_s = lease_s  # 0: a worker may hold a frame as long as it beats
        self.now = 0.0  # the clock of the last message or tick: when a frame is handed out
        self.forward_frames = forward_frames
        self.downstream_ready = True

    # -- what the shell reads -----------------------------------------------------------------

    @property
    def sources(self) -> dict[str, SourceState]:
        return self.admission.sources

    @property
    def workers(self) -> dict[bytes, WorkerState]:
        return self.pool.workers

    @property
    def pending(self) -> dict[Key, Pending]:
        return self.ledger.pending

    @property
    def events(self) -> dict[str, int]:
        return self.ledger.events

    @property
    def rejected(self) -> dict[str, int]:
        return self.ledger.rejected

    @property
    def finished(self) -> bool:
        return self.admission.finished

    def take_outputs(self) -> list[Out]:
        return self.ledger.take_outputs()

    # -- messages in --------------------------------------------------------------------------

    def source_message(self, routing: bytes, message: P.Message, now: float) -> None:
        self.now = now
        if self.admission.admit(routing, message, now):
            self._dispatch()

    def worker_message(self, routing: bytes, message: P.Message, now: float) -> None:
        self.now = now
        kind = message.type
        worker = self.workers.get(routing)
        if kind == P.HELLO and message.header["role"] != "worker":
            self.ledger.reject("hello-with-wrong-role")
            return
        if kind == P.HELLO:
            if worker is not None:
                self._worker_lost(worker, "re-announced itself")
            self.pool.join(routing, now)
        elif kind == P.DETECTIONS:
            self._result(routing, message, now)
            if worker is None:
                self.pool.reset(routing)
        elif worker is None:
            # a worker this broker does not know (declared dead, or the broker restarted)
            if kind in (P.CREDIT, P.HEARTBEAT):
                self.pool.reset(routing)
            else:
                self.ledger.reject(f"unexpected-{kind}-from-worker")
            return
        elif kind == P.CREDIT:
            worker.credit += message.header["n"]
        elif kind == P.HEARTBEAT:
            pass
        else:
            self.ledger.reject(f"unexpected-{kind}-from-worker")
        if worker is not None:
            worker.last_seen = now
        elif routing in self.workers:
            self.workers[routing].last_seen = now
        self._dispatch()

    def _result(self, routing: bytes, message: P.Message, now: float) -> None:
        key = (message.topic, message.seq)
        pending = self.pending.get(key)
        if pending is None:
            self.ledger.event("duplicate_result")
            return
        if routing not in pending.tried:
            self.ledger.reject("result-from-wrong-worker")
            return
        if message.header.get("error") is None:
            try:
                P.detections_from(message)  # never pass on what the filter could not read
            except P.ProtocolError as exc:
                self.ledger.reject(exc.reason)
                self._requeue(pending, "bad result")
                return
        header = dict(message.header)
        frame_header = pending.frame.header
        for name in FRAME_FIELDS:
            if name in frame_header:
                header[name] = frame_header[name]
        header["t"] = {**frame_header["t"], **message.header["t"], "broker_out": now}
        header["attempts"] = pending.attempts
        extra = []
        if self.forward_frames:
            i = pending.frame.index("image")
            spec = pending.frame.specs[i]
            extra.append(({"name": "image", "enc": spec.encoding, "dtype": spec.dtype, "shape": list(spec.shape)},
                          pending.frame.parts[i]))
        self.ledger.send(DOWNSTREAM, None, P.reencode(message, header, extra))
        self.sources[pending.source].forwarded += 1
        self._complete(pending)  # after the result, so a following EOS goes out behind it

    # -- a frame's end, or its way back -------------------------------------------------------

    def _complete(self, pending: Pending) -> None:
        self.pending.pop((pending.source, pending.seq), None)
        state = self.sources[pending.source]
        if pending.worker is not None:
            self.pool.release(pending.worker, (pending.source, pending.seq))
            state.in_flight -= 1
            pending.worker = None
        self.admission.maybe_end(state)
        self.admission.grant(state)

    def _requeue(self, pending: Pending, why: str) -> None:
        state = self.sources[pending.source]
        if pending.worker is not None:
            state.in_flight -= 1
            self.pool.release(pending.worker, (pending.source, pending.seq))
            pending.worker = None
        if state.live:
            self.pending.pop((pending.source, pending.seq), None)
            state.dropped += 1
            self.ledger.event("live_frame_lost")
            self.admission.maybe_end(state)
            self.admission.grant(state)
            return
        if pending.attempts >= self.max_attempts:
            log.error("source %s frame %d: given up after %d attempts (%s)", pending.source, pending.seq,
                      pending.attempts, why)
            self.pending.pop((pending.source, pending.seq), None)
            state.gave_up += 1
            self.ledger.event("gave_up")
            self.ledger.send(DOWNSTREAM, None, error_result(pending, f"given up after {pending.attempts} "
                                                                     f"attempts ({why})"))
            state.forwarded += 1
            self.admission.maybe_end(state)
            self.admission.grant(state)
            return
        state.queue.appendleft(pending)  # ahead of newer frames: the resequencer is waiting for it
        state.resent += 1
        self.ledger.event("resent")

    def _worker_lost(self, worker: WorkerState, why: str) -> None:
        for pending in self.pool.lose(worker, why):
            self._requeue(pending, f"worker {why}")

    # -- time ---------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self.now = now
        for worker in self.pool.beat(now):
            self._worker_lost(worker, f"silent for {now - worker.last_seen:.1f} s")
        if self.lease_s:
            for worker in self.pool.overdue(now, self.lease_s):
                held = now - min(p.sent_at for p in worker.in_flight.values())
                self._worker_lost(worker, f"held a frame {held:.0f} s, past the {self.lease_s:g} s lease")
        self._dispatch()

    def worker_unreachable(self, routing: bytes) -> None:
        """The shell could not hand a message to this worker: its frames must not wait for it."""
        worker = self.workers.get(routing)
        if worker is not None:
            self._worker_lost(worker, "unreachable")
            self._dispatch()

    def shutdown_workers(self, reason: str) -> None:
        self.pool.shutdown(reason)

    # -- dispatching --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        sent: list[tuple[WorkerState, Pending]] = []
        while self.downstream_ready:
            worker = self.pool.next_worker()
            if worker is None:
                break
            pending = self.admission.next_frame()
            if pending is None:
                break
            state = self.sources[pending.source]
            pending.attempts += 1
            pending.sent_at = self.now
            self.pool.assign(worker, pending)
            state.in_flight += 1
            sent.append((worker, pending))
            self.admission.grant(state)
        now = time.time()
        queued = self.admission.queued()
        last = {worker.id: i for i, (worker, _) in enumerate(sent)}
        for i, (worker, pending) in enumerate(sent):
            pending.frame.stamps["dispatch"] = now  # the last dispatch counts, if it is sent again
            header = dict(pending.frame.header)
            header["attempts"] = pending.attempts
            # "more": frames still waiting here after this burst; 0 tells the worker not to wait for a fuller batch
            header["more"] = queued if last[worker.id] == i else queued + 1
            self.ledger.send(WORKER, worker.id, P.reencode(pending.frame, header))
        self.admission.grant_live()


def error_result(pending: Pending, error: str) -> list[Any]:
    """A zero-box detections message for a frame that could not be processed."""
    frame = pending.frame
    size = frame.header.get("image_size") or [0, 0]
    # the wire's own encoding of an empty Detections: every part a detections message has, none forgotten
    boxes, empty = P.detections_parts(Detections.empty(0, 0, image_size=tuple(size)), crops="none")
    fields = {name: frame.header[name] for name in FRAME_FIELDS
              if name in frame.header}
    return P.encode(P.DETECTIONS, pending.source, empty, seq=pending.seq, **boxes, error=error[:500],
                    attempts=pending.attempts, t={**frame.header["t"], "broker_out": time.time()}, **fields)


class BrokerStage(StageShell):
    """The shell: three sockets, one poll loop, non-blocking sends, an outbox for the filter."""

    OUTBOX_LIMIT = 4  # results waiting for the filter before dispatching pauses

    def __init__(self, graph: GraphConfig, parent_pid: int | None = None, exit_when_done: bool = True) -> None:
        super().__init__(graph, "broker", parent_pid)
        cfg = graph.broker
        forward_frames = any(s.video or s.crops for s in graph.sinks)
        self.core = DispatchCore({s.id: graph.source_mode(s) == "live" for s in graph.sources}, prefetch=cfg.prefetch,
                                 heartbeat_s=cfg.heartbeat_ms / 1000, liveness=cfg.liveness,
                                 max_attempts=cfg.max_attempts, forward_frames=forward_frames,
                                 reachable=self._source_reachable, lease_s=cfg.frame_lease_s)
        self.exit_when_done = exit_when_done
        ep = graph.endpoints
        self.frontend = self.socket(zmq.ROUTER, ep.sources.url, bind=True, bind_url=ep.sources.bind_url,
                                    edge="sources")
        # no handover: a peer reusing a connected source's routing id is refused, never given its credits
        self.frontend.router_handover = 0
        self.frontend.router_mandatory = 1  # unroutable sends raise instead of vanishing silently
        self.backend = self.socket(zmq.ROUTER, ep.workers.url, bind=True, bind_url=ep.workers.bind_url,
                                   edge="workers")
        self.backend.router_mandatory = 1
        self.downstream = self.socket(zmq.PUSH, ep.filter.url, bind=ep.filter.binder == "broker",
                                      bind_url=ep.filter.bind_url, hwm=cfg.hwm, edge="filter")
        self.downstream.linger = -1  # results not yet taken by the filter are never dropped at exit
        self.outbox: deque[list[Any]] = deque()
        self.sent = 0  # messages passed to the filter
        self._dropped_reported: dict[str, int] = {}

    def _source_reachable(self, routing: bytes) -> bool:
        try:  # a zero credit changes nothing at the source; ZeroMQ knows whether the pipe is still open
            self.frontend.send_multipart([routing, *P.control(P.CREDIT, "broker", n=0)], flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return True  # connected, only not reading
        except zmq.ZMQError:
            return False

    def _route(self, outputs: list[Out]) -> None:
        unreachable = False
        for out in outputs:
            if out.to == DOWNSTREAM:
                self.outbox.append(out.frames)
                continue
            sock = self.frontend if out.to == SOURCE else self.backend
            if out.routing is None:
                continue
            try:
                sock.send_multipart([out.routing, *out.frames], flags=zmq.NOBLOCK, copy=False)
            except zmq.ZMQError as exc:  # EHOSTUNREACH (peer gone) or EAGAIN (peer not reading)
                self.metrics.event("unroutable")
                log.debug("cannot send to %s %s: %s", out.to, out.routing.hex()[:8], exc)
                if out.to == WORKER:
                    self.core.worker_unreachable(out.routing)
                    unreachable = True
        self._flush_outbox()
        if unreachable:  # the frames it held were queued again: send them elsewhere
            self._route(self.core.take_outputs())

    def _flush_outbox(self) -> None:
        while self.outbox:
            try:
                self.downstream.send_multipart(self.outbox[0], flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            frames = self.outbox.popleft()
            self.sent += 1
            self.metrics.inc_out(frames[0].decode("utf-8", "replace") if isinstance(frames[0], bytes) else "?")
        self.core.downstream_ready = len(self.outbox) < self.OUTBOX_LIMIT

    def _publish_metrics(self) -> None:
        for sid, state in self.core.sources.items():
            dropped = state.dropped - self._dropped_reported.get(sid, 0)
            if dropped:
                self.metrics.inc_dropped(sid, "broker", dropped)
                self._dropped_reported[sid] = state.dropped
            self.metrics.set_queue(f"queued:{sid}", len(state.queue))
            self.metrics.set_queue(f"in_flight:{sid}", state.in_flight)
        self.metrics.set_queue("outbox", len(self.outbox))
        self.metrics.set_queue("workers", len(self.core.workers))
        for name, count in self.core.events.items():
            self.metrics.event(name, count)
        self.core.events.clear()
        for reason, count in self.core.rejected.items():
            for _ in range(count):
                self.bad(reason, where="broker")
        self.core.rejected.clear()

    def run(self) -> int:
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        poll_ms = max(10, min(100, self.graph.broker.heartbeat_ms // 4))
        last_metrics = 0.0
        while not self.should_stop():
            poller.register(self.downstream, zmq.POLLOUT if self.outbox else 0)  # flags 0: unregister
            poller.poll(poll_ms)
            now = time.time()
            for _ in range(256):  # bounded bursts keep heartbeats on time under load
                if not self.backend.poll(0):
                    break
                routing, message = self.receive_routed(self.backend, "workers endpoint")
                if message is not None:
                    self.core.worker_message(routing, message, now)
            for _ in range(256):
                if not self.frontend.poll(0):
                    break
                routing, message = self.receive_routed(self.frontend, "sources endpoint")
                if message is not None:
                    self.core.source_message(routing, message, now)
                    if message.type == P.FRAME and message.topic in self.core.sources:  # bounded label values
                        self.metrics.inc_in(message.topic)
                        self.metrics.observe_hop("source->broker", now - message.stamps.get("send", now))
            self.core.tick(time.time())
            self._route(self.core.take_outputs())
            if time.monotonic() - last_metrics > 1.0:
                last_metrics = time.monotonic()
                self._publish_metrics()
            self.report_progress(held=len(self.core.pending) + len(self.outbox), sent=self.sent, done=self.sent)
            if self.exit_when_done and self.core.finished and not self.outbox:
                log.info("every source ended: telling workers to stop")
                break
        self.core.shutdown_workers(self.stopping or "all sources ended")
        self._route(self.core.take_outputs())
        self._drain_outbox(5.0)
        self._publish_metrics()
        self.report_progress(force=True, held=len(self.core.pending) + len(self.outbox), sent=self.sent, done=self.sent)
        self.close()
        return 0

    def _drain_outbox(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.outbox and time.monotonic() < deadline and not self.parent_gone():
            if self.downstream.poll(100, zmq.POLLOUT):
                self._flush_outbox()
        if self.outbox:
            log.warning("%d result(s) could not be passed to the filter before exit", len(self.outbox))
