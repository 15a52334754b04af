"""The broker's workers: who joined, the room (credit) each announced, their heartbeats and liveness,
and the frames each holds.

The pool only keeps these books and says which worker is next and which are dead; what becomes of a
lost worker's frames (sent again, given up, dropped) is the dispatch core's call (`broker.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipeline.stream import protocol as P
from pipeline.stream.broker_ledger import WORKER, Key, Ledger, Pending

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    id: bytes
    last_seen: float
    credit: int = 0
    in_flight: dict[Key, Pending] = field(default_factory=dict)


class WorkerPool:
    def __init__(self, ledger: Ledger, heartbeat_s: float, liveness: int) -> None:
        self.ledger = ledger
        self.workers: dict[bytes, WorkerState] = {}
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self._last_beat = 0.0

    def join(self, routing: bytes, now: float) -> None:
        self.workers[routing] = WorkerState(routing, now)
        self.ledger.event("worker_joined")
        log.info("worker %s joined (%d now)", routing.hex()[:8], len(self.workers))

    def reset(self, routing: bytes) -> None:
        # HELLO from the broker means: start over with a new identity and full credit
        self.ledger.send(WORKER, routing, P.control(P.HELLO, "broker", role="broker"))
        self.ledger.event("worker_reset")

    def lose(self, worker: WorkerState, why: str) -> list[Pending]:
        """Forget a worker; the frames it held, newest first (queued again one by one at the head of their
        source's queue, they end up oldest first)."""
        self.workers.pop(worker.id, None)
        log.warning("worker %s %s; %d frame(s) it held %s", worker.id.hex()[:8], why, len(worker.in_flight),
                    "go to other workers" if worker.in_flight else "")
        self.ledger.event("worker_lost")
        held = sorted(worker.in_flight.values(), key=lambda p: p.seq, reverse=True)
        worker.in_flight.clear()
        return held

    def beat(self, now: float) -> list[WorkerState]:
        """Heartbeats to every worker each `heartbeat_s`; the workers silent for `liveness` beats (dead)."""
        if now - self._last_beat >= self.heartbeat_s:
            self._last_beat = now
            for routing in self.workers:
                self.ledger.send(WORKER, routing, P.control(P.HEARTBEAT, "broker"))
        deadline = self.heartbeat_s * self.liveness
        return [w for w in self.workers.values() if now - w.last_seen > deadline]

    def overdue(self, now: float, lease_s: float) -> list[WorkerState]:
        """The workers holding a frame they were given more than `lease_s` ago (a worker returns its frames in
        order, batch after batch: its oldest one waits no longer than a batch or two)."""
        return [w for w in self.workers.values()
                if w.in_flight and now - min(p.sent_at for p in w.in_flight.values()) > lease_s]

    def free_credit(self) -> int:
        return sum(w.credit for w in self.workers.values())

    def next_worker(self) -> WorkerState | None:
        """The least busy worker with room (most room among equals)."""
        best = None
        for worker in self.workers.values():
            if worker.credit <= 0:
                continue
            if best is None or (len(worker.in_flight), -worker.credit) < (len(best.in_flight), -best.credit):
                best = worker
        return best

    def assign(self, worker: WorkerState, pending: Pending) -> None:
        pending.worker = worker.id
        pending.tried.add(worker.id)
        worker.credit -= 1
        worker.in_flight[(pending.source, pending.seq)] = pending

    def release(self, worker_id: bytes, key: Key) -> None:
        """The worker (if still known) no longer holds that frame."""
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.in_flight.pop(key, None)

    def shutdown(self, reason: str) -> None:
        for routing in self.workers:
            self.ledger.send(WORKER, routing, P.control(P.SHUTDOWN, "broker", reason=reason))
