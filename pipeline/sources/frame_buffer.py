"""The buffer between a stream's reading thread and its sending loop, where the two modes differ.

- lossless: a small blocking queue. When the broker gives no credit the buffer fills and
  the reader blocks, so backpressure slows the source and no frame is ever skipped.
- live: one slot, latest frame wins. A frame that is overwritten before it was sent is
  counted as dropped, so the pipeline always works on the newest frame and latency cannot
  build up behind a slow detector.

No sockets here: the sender wakes up through its own channel.
"""

from __future__ import annotations

import threading
from collections import deque

from pipeline.sources.frame_reader import Captured


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
