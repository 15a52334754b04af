"""Where a run's files live: its run folder and the stages' progress files.

Standard library only: the health check (`stream/health.py`) finds a stage's progress from
these names without importing the graph config (pydantic) in a container's probe.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path


def config_run_dir(config_path: str | Path) -> Path:
    """The run folder of stages started from one config file on one machine, so that they meet."""
    digest = hashlib.sha1(str(Path(config_path).resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"gbx-{digest}"


def progress_file(run_dir: str | Path, stage: str, suffix: str = ".json") -> Path:
    """Where a stage leaves its progress counters (.json) or its refusal (.error) for the supervisor."""
    return Path(run_dir) / "progress" / f"{stage.replace(':', '_')}{suffix}"
