"""Put frames back in order per source, and drop duplicates, before the sinks.

Parallel workers finish frames out of order, and after a worker death the broker sends its
frames again, so a frame can arrive twice. `Resequencer.push(source, seq, item)` returns the
items that are now deliverable, in order, each (source, seq) at most once.

- lossless: a missing frame is waited for (the broker guarantees it comes); a source is
  done when its EOS said how many frames it had and all of them were delivered.
- live: a missing frame is waited for at most `max_wait_s` (the broker may drop frames of
  a dead worker), then skipped; a frame older than what was delivered is dropped as late.
  A new epoch (the camera process restarted) starts the numbering over.

Memory is bounded, in frames and in bytes: only frames less than `max_buffer` ahead of the
next one to deliver are held. Further ahead, a lossless frame is refused (the broker never has
that many in flight, so it is not a real frame; `out_of_window`), and a live stream jumps
forward to it (counted as skipped). Likewise each push says what its item weighs (`nbytes`):
a frame that would take a stream's held bytes past `max_bytes` is refused by a lossless stream
(`over_budget`), while a live stream hands over what it holds and jumps forward to it. A frame
that is delivered at once is never held, so it is never refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Ready = tuple[str, int, Any]


@dataclass
class _Stream:
    live: bool
    next_seq: int = 0
    epoch: int | None = None
    buffer: dict[int, tuple[float, Any, int]] = field(default_factory=dict)  # seq -> (arrived, item, nbytes)
    held_bytes: int = 0
    total: int | None = None
    ended_at: float | None = None
    delivered: int = 0
    duplicates: int = 0
    late: int = 0
    skipped: int = 0
    beyond_end: int = 0
    out_of_window: int = 0
    over_budget: int = 0


class Resequencer:
    def __init__(self, live: dict[str, bool], max_wait_s: float = 0.5, max_buffer: int = 10_000,
                 max_bytes: int | None = None) -> None:
        self.streams = {source: _Stream(is_live) for source, is_live in live.items()}
        self.max_wait_s = max_wait_s
        self.max_buffer = max_buffer
        self.max_bytes = max_bytes  # per stream; None: bounded in frames only
        self.total_bytes = 0  # held by all streams

    def known(self, source: str) -> bool:
        return source in self.streams

    def push(self, source: str, seq: int, item: Any, now: float, epoch: int | None = None,
             nbytes: int = 0) -> list[Ready]:
        if nbytes < 0:
            raise ValueError(f"Resequencer.push: nbytes={nbytes}")
        stream = self.streams[source]
        ready: list[Ready] = []
        if epoch is not None and stream.epoch is not None and epoch != stream.epoch and stream.live:
            # the camera came back as a new process: hand over what is left, then number afresh
            ready.extend(self._flush(source, stream))
            stream.next_seq, stream.total, stream.ended_at = 0, None, None
        if epoch is not None:
            stream.epoch = epoch
        if seq < stream.next_seq:
            if stream.live:
                stream.late += 1
            else:
                stream.duplicates += 1
            return ready
        if seq in stream.buffer:
            stream.duplicates += 1
            return ready
        if stream.total is not None and seq >= stream.total:
            stream.beyond_end += 1
            return ready
        if seq >= stream.next_seq + self.max_buffer:
            if not stream.live:
                stream.out_of_window += 1
                return ready
            ready.extend(self._jump(source, stream, seq))
        if (self.max_bytes is not None and seq != stream.next_seq
                and stream.held_bytes + nbytes > self.max_bytes):
            if not stream.live:
                stream.over_budget += 1
                return ready
            ready.extend(self._jump(source, stream, seq))
        stream.buffer[seq] = (now, item, nbytes)
        stream.held_bytes += nbytes
        self.total_bytes += nbytes
        ready.extend(self._release(source, stream))
        return ready

    def end(self, source: str, total: int, now: float) -> list[Ready]:
        stream = self.streams[source]
        stream.total = total
        stream.ended_at = now
        for seq in [s for s in stream.buffer if s >= total]:
            self._forget(stream, stream.buffer.pop(seq)[2])
            stream.beyond_end += 1
        return self._release(source, stream)

    def poll(self, now: float) -> list[Ready]:
        """Live streams: give up on frames that did not come within `max_wait_s`."""
        ready: list[Ready] = []
        for source, stream in self.streams.items():
            if not stream.live:
                continue
            while stream.buffer and now - min(t for t, _, _ in stream.buffer.values()) > self.max_wait_s:
                ready.extend(self._skip_gap(source, stream))
            if (stream.total is not None and stream.next_seq < stream.total and not stream.buffer
                    and stream.ended_at is not None and now - stream.ended_at > self.max_wait_s):
                stream.skipped += stream.total - stream.next_seq
                stream.next_seq = stream.total
        return ready

    def flush(self) -> list[Ready]:
        """Everything still waiting, in order, gaps skipped (at shutdown)."""
        ready: list[Ready] = []
        for source, stream in self.streams.items():
            ready.extend(self._flush(source, stream))
        return ready

    def done(self, source: str) -> bool:
        stream = self.streams[source]
        return stream.total is not None and stream.next_seq >= stream.total and not stream.buffer

    def waiting(self, source: str) -> int:
        return len(self.streams[source].buffer)

    def held_bytes(self, source: str | None = None) -> int:
        """Bytes held for one stream, or for all of them."""
        return self.total_bytes if source is None else self.streams[source].held_bytes

    def missing(self, source: str) -> int | None:
        """The seq a lossless stream is waiting for, if it waits."""
        stream = self.streams[source]
        return stream.next_seq if stream.buffer else None

    def stats(self, source: str) -> dict[str, int]:
        s = self.streams[source]
        return {"delivered": s.delivered, "duplicates": s.duplicates, "late": s.late, "skipped": s.skipped,
                "beyond_end": s.beyond_end, "out_of_window": s.out_of_window, "over_budget": s.over_budget}

    # -- internals ------------------------------------------------------------------------------

    def _release(self, source: str, stream: _Stream) -> list[Ready]:
        ready = []
        while stream.next_seq in stream.buffer:
            _, item, nbytes = stream.buffer.pop(stream.next_seq)
            self._forget(stream, nbytes)
            ready.append((source, stream.next_seq, item))
            stream.next_seq += 1
            stream.delivered += 1
        return ready

    def _forget(self, stream: _Stream, nbytes: int) -> None:
        stream.held_bytes -= nbytes
        self.total_bytes -= nbytes

    def _jump(self, source: str, stream: _Stream, seq: int) -> list[Ready]:
        """Live: hand over everything held and go on from `seq` (what lies between is skipped)."""
        ready = self._flush(source, stream)
        stream.skipped += seq - stream.next_seq
        stream.next_seq = seq
        return ready

    def _skip_gap(self, source: str, stream: _Stream) -> list[Ready]:
        first = min(stream.buffer)
        stream.skipped += first - stream.next_seq
        stream.next_seq = first
        return self._release(source, stream)

    def _flush(self, source: str, stream: _Stream) -> list[Ready]:
        ready = []
        while stream.buffer:
            ready.extend(self._skip_gap(source, stream))
        return ready
