"""The broker core's shared books: every frame it holds, the messages it has to send, and its counters.

The core is split by what each part looks after (`source_admission.py`: the sources and their credit;
`worker_pool.py`: the workers; `broker.py`: each frame's way from a source's queue to a worker and on
downstream). All three hold the same frames and answer through the same outbox, so those live here,
in one `Ledger` they share, rather than in any one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.stream import protocol as P

SOURCE, WORKER, DOWNSTREAM = "source", "worker", "downstream"
Key = tuple[str, int]  # (source id, seq): one frame


@dataclass
class Pending:
    """A frame the broker holds: queued at its source's queue, or at a worker (`worker`)."""

    source: str
    seq: int
    frame: P.Message
    t_in: float
    attempts: int = 0
    worker: bytes | None = None
    sent_at: float = 0.0  # when it was last given to a worker (the core's clock)
    tried: set[bytes] = field(default_factory=set)


@dataclass
class Out:
    """A message for the shell to send: to a source or worker (by routing id), or downstream."""

    to: str  # SOURCE | WORKER | DOWNSTREAM
    routing: bytes | None
    frames: list[Any]


class Ledger:
    def __init__(self) -> None:
        self.pending: dict[Key, Pending] = {}  # every frame held, from arrival until its result went downstream
        self.outputs: list[Out] = []
        self.events: dict[str, int] = {}
        self.rejected: dict[str, int] = {}

    def send(self, to: str, routing: bytes | None, frames: list[Any]) -> None:
        self.outputs.append(Out(to, routing, frames))

    def event(self, name: str, n: int = 1) -> None:
        self.events[name] = self.events.get(name, 0) + n

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def take_outputs(self) -> list[Out]:
        outputs, self.outputs = self.outputs, []
        return outputs
