"""Per-frame JSON lines (schema in docs/detect.md, "detections.jsonl"): the row, and whole lines only.

`frame_row` builds a frame's row, for `ghostbox detect` and the stream sinks alike (through
`pipeline.sinks.detections_file.DetectionsFile`).

`LineFile` is the one way JSONL gets written (detections.jsonl and the crop indexes): lines
are batched in memory and written with `os.write` on an unbuffered descriptor, so the file
never ends inside a line. A failed write (a full disk, a quota, an I/O error) is cut back to
the end of the last line written whole, and the lines of that batch are counted as lost
(`lost`, and per key in `lost_by`), never dropped silently.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pipeline.sinks.free_space import free_space_note
from pipeline.sinks.output import FrameRecord
from pipeline.sinks.policy import shown

log = logging.getLogger(__name__)


def frame_row(frame: FrameRecord, policy: str | None, count_dropped: bool = False) -> str:
    """A frame's line: the record of the boxes `policy` shows (source, frame, width, height, boxes), then
    what names the frame in a stream (`stream`, `seq`), the boxes the policy left out (`dropped_boxes`,
    when `count_dropped`: a stream sink's rows), the frame's `error`, and a stream's per-stage
    timestamps `t` with `latency_ms`, capture to `sink_out`."""
    boxes, left_out = shown(frame.dets, frame.flagged, policy)
    record = boxes.to_record()
    record.update(frame.ident)
    if count_dropped and policy == "drop":
        record["dropped_boxes"] = left_out
    if frame.error:
        record["error"] = frame.error
    if frame.stamps is not None:
        t_out = frame.stamps.get("sink_out", time.time())
        record["t"] = {k: round(v, 6) for k, v in frame.stamps.items()}
        record["latency_ms"] = round((t_out - frame.stamps.get("capture", t_out)) * 1000, 3)
    return json.dumps(record, separators=(",", ":"))


class LineFile:
    """Whole lines appended to one file; `flush_s`: the longest a line waits in memory (`tail -f`)."""

    MAX_PENDING_BYTES = 4 << 20

    def __init__(self, path: str | Path, append: bool = False, flush_s: float = 0.5,
                 max_lines: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # appending reads the old tail back (a torn last line is cut off)
        flags = os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | (os.O_RDWR if append else os.O_WRONLY | os.O_TRUNC)
        fd = os.open(self.path, flags, 0o644)
        self._fd: int | None = fd  # None once closed
        self._good = os.lseek(fd, 0, os.SEEK_END)  # end of the last whole line
        if append and self._good:
            self._cut_torn_tail(fd)
        self.flush_s = flush_s
        self.max_lines = max_lines
        self._pending: list[bytes] = []
        self._keys: list[Any] = []
        self._pending_bytes = 0
        self._last_flush = time.monotonic()
        self.written = 0  # lines now in the file
        self.lost = 0  # lines that a failed write took
        self.lost_by: dict[Any, int] = {}
        self.error: str | None = None  # the first failure, naming the file
        self.reason: str | None = None  # the same without the file's name
        self._dead = False  # the file could not be cut back: nothing more may follow a torn line

    def add(self, line: str, key: Any = None) -> None:
        data = line.encode("utf-8")
        if not data.endswith(b"\n"):
            data += b"\n"
        self._pending.append(data)
        self._keys.append(key)
        self._pending_bytes += len(data)
        if (time.monotonic() - self._last_flush >= self.flush_s or self._pending_bytes >= self.MAX_PENDING_BYTES
                or (self.max_lines is not None and len(self._pending) >= self.max_lines)):
            self.flush()

    def due(self) -> bool:
        return bool(self._pending) and time.monotonic() - self._last_flush >= self.flush_s

    def flush(self) -> bool:
        """Write what is pending; False when it was lost (counted)."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return True
        lines, keys = self._pending, self._keys
        self._pending, self._keys, self._pending_bytes = [], [], 0
        if self._fd is None or self._dead:
            self._count_lost(keys, None)
            return False
        data = memoryview(b"".join(lines))
        done = 0
        try:
            while done < len(data):  # os.write may write part of it and raise on the next call
                n = os.write(self._fd, data[done:])
                if n == 0:
                    raise OSError(errno.EIO, "write wrote nothing")
                done += n
        except OSError as exc:
            self._roll_back(self._fd)
            self._count_lost(keys, exc)
            return False
        self._good += len(data)
        self.written += len(lines)
        return True

    def close(self) -> None:
        if self._fd is None:
            return
        self.flush()
        try:
            os.close(self._fd)
        except OSError as exc:  # NFS reports some write errors only here; the lines may not have landed
            self.reason = self.reason or f"closing failed ({exc.strerror or exc})"
            self.error = self.error or f"{self.path}: {self.reason}"
            log.error("%s", self.error)
        self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def figures(self, out: Path) -> dict[str, Any]:
        """Lines written and lost (summary.json `writes`), the file named relative to the run folder `out`."""
        return {"file": str(self.path.relative_to(out)), "written": self.written, "lost": self.lost,
                **({"error": self.error} if self.error else {})}

    def problem(self, name: str, what: str) -> list[str]:
        """The summary line for lines lost (naming how many per key) or a failed close; [] when neither."""
        if not (self.lost or self.error):
            return []
        if not self.lost:
            return [f"{name}: {self.reason}"]
        by_key = ", ".join(f"{key} {n}" for key, n in self.lost_by.items())
        return [f"{name}: {self.lost} {what} not written ({by_key}; {self.reason or 'write failed'})"]

    # -- internals ------------------------------------------------------------------------------

    def _roll_back(self, fd: int) -> None:
        try:
            os.ftruncate(fd, self._good)
            os.lseek(fd, self._good, os.SEEK_SET)
        except OSError as cut:
            self._dead = True
            log.error("%s: cannot cut a failed write back to byte %d (%s); writing no more lines to it",
                      self.path, self._good, cut.strerror or cut)

    def _count_lost(self, keys: list[Any], exc: OSError | None) -> None:
        first = self.lost == 0
        self.lost += len(keys)
        for key in keys:
            self.lost_by[key] = self.lost_by.get(key, 0) + 1
        if exc is not None and self.error is None:
            self.reason = f"{exc.strerror or exc}{free_space_note(self.path.parent, exc)}"
            self.error = f"{self.path}: {self.reason}"
        if first:  # once: on a full disk every batch fails the same way
            log.error("%s: %d line(s) not written (%s); the file keeps whole lines only and counts what is lost",
                      self.path, len(keys), exc.strerror if exc is not None else "writing stopped")

    def _cut_torn_tail(self, fd: int) -> None:
        """An earlier run that died mid-line left a partial line at the end: cut it off before appending."""
        end = self._good
        pos = end
        while pos > 0:
            start = max(0, pos - 65536)
            chunk = os.pread(fd, pos - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                pos = start + newline + 1
                break
            pos = start
        if pos != end:
            log.warning("%s: cutting a partial last line (%d bytes) left by an earlier run", self.path, end - pos)
            os.ftruncate(fd, pos)
            os.lseek(fd, pos, os.SEEK_SET)
            self._good = pos
