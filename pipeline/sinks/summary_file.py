"""A run's summary.json, replaced whole, and the reserve that keeps room for it: `SummaryFile`.

The summary is what says whether a run is complete, so it must survive the full disk that made
the run incomplete: a small reserve file (summary.reserve, real blocks) is set aside when the
sink starts and given up for the final write, which falls back to compact JSON if even that is
short. A summary that still cannot be written is an `error`, never a silent omission.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

from pipeline.json_files import replace_text
from pipeline.sinks.free_space import free_space_note

log = logging.getLogger(__name__)

RESERVE_NAME = "summary.reserve"
RESERVE_BYTES = 64 << 10  # kept free for summary.json
_FULL = (errno.ENOSPC, errno.EDQUOT)


class SummaryFile:
    """OUT/summary.json; `save` writes a temporary file and renames it, so readers never see half of one."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path, self.tmp = out / "summary.json", out / "summary.json.tmp"
        self.error: str | None = None  # the final summary.json could not be written
        self._warned = False
        self._reserve = self._make_reserve()

    def save(self, summary: dict[str, Any], final: bool) -> bool:
        """`final`: the last write, which may use the reserve; before it a failure is only warned about (once)."""
        text = json.dumps(summary, indent=2)
        while True:
            try:
                replace_text(self.path, text, self.tmp)
                return True
            except OSError as exc:
                if final and exc.errno in _FULL:
                    if self.drop_reserve():
                        log.warning("%s: disk full; using the space set aside for it", self.path)
                        continue
                    if "\n" in text:
                        text = json.dumps(summary, separators=(",", ":"))
                        continue
                error = f"{self.path}: {exc.strerror or exc}{free_space_note(self.out, exc)}"
                if final:
                    self.error = error
                    log.error("summary.json NOT written: %s", error)
                elif not self._warned:
                    self._warned = True
                    log.warning("summary.json not updated while running: %s", error)
                return False

    def drop_reserve(self) -> bool:
        """Give the reserved space back; False when there was none."""
        if self._reserve is None:
            return False
        with contextlib.suppress(OSError):
            self._reserve.unlink()
        self._reserve = None
        return True

    def _make_reserve(self) -> Path | None:
        """Room set aside so that summary.json can still be written when the disk fills up."""
        path = self.out / RESERVE_NAME
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)  # real blocks (a sparse file frees nothing)
                except (AttributeError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno in _FULL:
                        raise
                    os.write(fd, bytes(RESERVE_BYTES))
            finally:
                os.close(fd)
            return path
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            log.warning("%s: no room set aside for summary.json (%s)", path, exc.strerror or exc)
            return None
