"""The broker's sources: which connection speaks for each stream, its epochs, the frames and the end of
stream it sends, and the credit that paces it.

- Only a HELLO binds a connection to a stream, and only when no other open connection holds it.
- A new epoch (the source process restarted) drops what was queued of the old one and starts its
  numbering over.
- Credit: a lossless source may have `prefetch` frames queued or on their way; a live source gets one
  credit when a worker has room and none of its frames waits, so a worker always gets its newest frame.
- An EOS is acknowledged at once and passed downstream once every frame of the stream is done.
Handing the queued frames to workers is the dispatch core's (`broker.py`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.stream import protocol as P
from pipeline.stream.broker_ledger import DOWNSTREAM, SOURCE, Ledger, Pending
from pipeline.stream.worker_pool import WorkerPool

log = logging.getLogger(__name__)


@dataclass
class SourceState:
    id: str
    live: bool
    routing: bytes | None = None
    epoch: int = 0
    queue: deque[Pending] = field(default_factory=deque)
    outstanding: int = 0  # credit granted, frame not yet here
    in_flight: int = 0  # at workers
    next_seq: int = 0
    received: int = 0
    forwarded: int = 0
    eos: dict[str, Any] | None = None
    ended: bool = False
    dropped: int = 0  # dropped at the broker (live: worker died, stale replaced)
    resent: int = 0
    gave_up: int = 0


class SourceAdmission:
    def __init__(self, sources: dict[str, bool], ledger: Ledger, pool: WorkerPool, prefetch: int,
                 reachable: Callable[[bytes], bool]) -> None:
        self.ledger = ledger
        self.pool = pool  # a live source's credit follows the workers' room
        self.prefetch = prefetch
        self.reachable = reachable  # reachable(routing): is that source connection still open?
        self.sources = {sid: SourceState(sid, live) for sid, live in sources.items()}
        self._rr: deque[str] = deque(sources)
        self._live_rr: deque[str] = deque(sid for sid, live in sources.items() if live)

    @property
    def finished(self) -> bool:
        return all(s.ended for s in self.sources.values())

    def queued(self) -> int:
        return sum(len(s.queue) for s in self.sources.values())

    def admit(self, routing: bytes, message: P.Message, now: float) -> bool:
        """Take a source's message; False when it was refused for who sent it (nothing changed)."""
        state = self.sources.get(message.topic)
        if state is None:
            self.ledger.reject("unknown-source")
            return False
        kind = message.type
        if routing != state.routing:
            # only a HELLO binds a connection to a stream, and only when no other open connection holds it:
            # a restarted source once the old one is gone, never a second peer speaking for a live one
            if kind != P.HELLO or message.header["role"] != "source":
                self.ledger.reject("not-the-stream's-source")
                return False
            if state.routing is not None and self.reachable(state.routing):
                self.ledger.reject("identity-takeover")
                return False
            if state.routing is not None:
                log.info("source %s: a new connection took over from one that is gone", state.id)
            state.routing = routing
        if kind == P.HELLO:
            epoch = int(message.header.get("epoch", 0))
            if state.epoch and epoch != state.epoch:
                self._restart(state)
            state.epoch = epoch
            state.outstanding = 0
            self.grant(state)
        elif kind == P.FRAME:
            self._frame(state, message, now)
        elif kind == P.EOS:
            self._eos(state, message)
        else:
            self.ledger.reject(f"unexpected-{kind}-from-source")
        return True

    def _restart(self, state: SourceState) -> None:
        # A live camera process restarted: its queued frames are stale; its seq starts again.
        if not state.live:
            log.warning("lossless source %s restarted: its frames may repeat", state.id)
        for pending in list(state.queue):
            self.ledger.pending.pop((state.id, pending.seq), None)
            state.dropped += 1
        state.queue.clear()
        state.next_seq = 0
        state.eos = None
        state.ended = False

    def _frame(self, state: SourceState, message: P.Message, now: float) -> None:
        if state.eos is not None:
            self.ledger.reject("frame-after-eos")
            return
        if not message.has("image"):
            self.ledger.reject("frame-without-image")
            return
        seq = message.seq
        state.outstanding = max(0, state.outstanding - 1)
        if (state.id, seq) in self.ledger.pending or (seq < state.next_seq and not state.live):
            self.ledger.reject("duplicate-frame")
            return
        state.next_seq = max(state.next_seq, seq + 1)
        state.received += 1
        message.stamps["broker_in"] = now
        pending = Pending(state.id, seq, message, now)
        if state.live and state.queue:
            # latest wins here too (it only happens when a worker vanished after the credit)
            old = state.queue.popleft()
            self.ledger.pending.pop((state.id, old.seq), None)
            state.dropped += 1
        self.ledger.pending[(state.id, seq)] = pending
        state.queue.append(pending)

    def _eos(self, state: SourceState, message: P.Message) -> None:
        header = message.header
        if state.eos is None:
            total = header.get("total")
            state.eos = {
                "total": state.next_seq if total is None else int(total), "status": header["status"],
                "dropped": int(header.get("dropped", 0)), "epoch": int(header.get("epoch", state.epoch)),
                "stats": dict(header.get("stats", {})), "detail": header.get("detail", ""),
                **({"seal": header["seal"]} if "seal" in header else {}),
            }
            if total is not None and int(total) != state.next_seq and not state.live:
                log.warning("source %s: EOS says %s frames, %d arrived", state.id, total, state.next_seq)
        self.ledger.send(SOURCE, state.routing, P.control(P.ACK, state.id, of=P.EOS, seq=state.next_seq))
        self.maybe_end(state)

    def maybe_end(self, state: SourceState) -> None:
        """Pass the stream's EOS downstream once it came and none of the stream's frames is left here."""
        if state.eos is None or state.ended or state.queue or state.in_flight:
            return
        state.ended = True
        eos = state.eos
        stats = {**eos["stats"], "broker_dropped": state.dropped, "resent": state.resent, "gave_up": state.gave_up,
                 "received": state.received}
        self.ledger.send(DOWNSTREAM, None, P.control(
            P.EOS, state.id, total=eos["total"], status=eos["status"], dropped=eos["dropped"] + state.dropped,
            epoch=eos["epoch"], stats=stats, detail=eos["detail"], **({"seal": eos["seal"]} if "seal" in eos else {})))

    def grant(self, state: SourceState) -> None:
        if state.eos is not None or state.routing is None:
            return
        if state.live:
            return self.grant_live()
        n = self.prefetch - len(state.queue) - state.outstanding
        if n > 0:
            state.outstanding += n
            self.ledger.send(SOURCE, state.routing, P.control(P.CREDIT, state.id, n=n))

    def grant_live(self) -> None:
        """A live source gets one credit when a worker has room for it and nothing of it waits."""
        room = self.pool.free_credit() - self.queued()
        room -= sum(s.outstanding for s in self.sources.values() if s.live)
        cap = max(1, len(self.pool.workers))  # frames of one camera in flight: one per worker
        for _ in range(len(self._live_rr)):
            if room <= 0:
                return
            sid = self._live_rr[0]
            self._live_rr.rotate(-1)
            state = self.sources[sid]
            if (state.routing is None or state.eos is not None or state.outstanding or state.queue
                    or state.in_flight >= cap):
                continue
            state.outstanding = 1
            room -= 1
            self.ledger.send(SOURCE, state.routing, P.control(P.CREDIT, sid, n=1))

    def next_frame(self) -> Pending | None:
        """The head of the next source's queue, round-robin across sources (a worker's batch mixes streams)."""
        for _ in range(len(self._rr)):
            sid = self._rr[0]
            self._rr.rotate(-1)
            state = self.sources[sid]
            if state.queue:
                return state.queue.popleft()
        return None
