"""Per-frame JSON lines (schema in README, "detections.jsonl")."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.detections import Detections


class JsonlWriter:
    """Appends one JSON object per frame; flushed every `flush_every` lines and on close."""

    def __init__(self, path: str | Path, flush_every: int = 50) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "w", encoding="utf-8")
        self._flush_every = flush_every
        self.lines = 0

    def write(self, detections: Detections, **extra: Any) -> None:
        record = detections.to_record()
        record.update(extra)
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1
        if self.lines % self._flush_every == 0:
            self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
