"""The stages' progress counters, as the supervisor reads them.

Each stage keeps its counters (`ready`, `held`, `sent`, `done`, `refused`, `bad`, `forgers`) in a
small JSON file in the run folder, and a refusal of its configuration in a `.error` file beside it
(`config.progress_file`). Files, not messages: the supervisor speaks no ZeroMQ to its stages, and a
stage's last counters outlive it. The supervisor reads them to know when a stage is ready, how much
it still holds (its grace to finish), and, at the end, what each source sent and who was refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.stream.config import progress_file

REFRESH_S = 0.25  # the loop looks every 0.1 s; the files need not be read that often


class StageProgress:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.latest: dict[str, dict[str, Any]] = {}  # each stage's counters when last refreshed
        self._read_at = 0.0

    def read(self, name: str) -> dict[str, Any]:
        """The stage's counters now ({} when it wrote none yet, or they cannot be read)."""
        try:
            return json.loads(progress_file(self.run_dir, name).read_text())
        except (OSError, ValueError):
            return {}

    def refresh(self, names: Iterable[str], now: float, force: bool = False) -> None:
        if force or now - self._read_at >= REFRESH_S:
            self._read_at = now
            self.latest = {name: self.read(name) for name in names}

    def of(self, name: str) -> dict[str, Any]:
        return self.latest.get(name, {})

    def count(self, names: list[str], key: str) -> int:
        return sum(int(self.of(n).get(key, 0) or 0) for n in names)

    def error(self, name: str) -> str:
        """Why the stage refused its configuration, in its own words ("" if it left none)."""
        try:
            return progress_file(self.run_dir, name, ".error").read_text().strip()
        except OSError:
            return ""
