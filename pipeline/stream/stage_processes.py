"""The supervisor's stage processes: each stage started as its own process, signalled, killed or
started again, and the ordered shutdown that gives each its grace before SIGTERM and SIGKILL.

What to do when a stage exits (start it again, end the run, end a source's stream for it) is the
supervisor's (`supervisor.py`); here is how it is done, and what was done (`killed`, `restarts`,
`orphaned_sources`), which the run's summary reports.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.stream.config import ShutdownConfig
from pipeline.stream.stage_progress import StageProgress

log = logging.getLogger(__name__)

RESTART_WINDOW_S = 60.0
TIERS = ("source", "broker", "worker", "filter", "sink")  # shutdown order
SOURCE_AFTER_SINKS_S = 5.0  # a source still running this long after every sink ended is stopped


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    restarts: deque[float] = field(default_factory=deque)
    exit_code: int | None = None
    stopped: bool = False  # SIGTERM sent by us
    finish_by: float | None = None  # SIGTERM after this, unless it exits or makes progress
    kill_at: float | None = None  # SIGKILL after this
    last_done: int | None = None  # its progress counter when last looked at

    @property
    def kind(self) -> str:
        return self.name.split(":")[0]

    @property
    def tier(self) -> int:
        return TIERS.index(self.kind)

    @property
    def alive(self) -> bool:
        return self.exit_code is None


class StageProcesses:
    def __init__(self, graph_path: Path, log_level: str, progress: StageProgress, shutdown: ShutdownConfig,
                 max_restarts: int, source_grace_s: float) -> None:
        self.graph_path = graph_path
        self.log_level = log_level
        self.progress = progress
        self.shutdown = shutdown
        self.max_restarts = max_restarts  # crashes within RESTART_WINDOW_S
        self.source_grace_s = source_grace_s  # a source asked to stop: time to send its EOS
        self.children: dict[str, Child] = {}
        self.killed: dict[str, dict[str, Any]] = {}
        self.restarts: dict[str, int] = {}
        self.orphaned_sources: list[str] = []  # stopped because every sink had ended before them
        self.sinks_ended_at: float | None = None

    # -- one stage ------------------------------------------------------------------------------

    def _spawn(self, name: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "pipeline.stream.stage_main", name, "--graph", str(self.graph_path),
                   "--parent-pid", str(os.getpid()), "--log-level", self.log_level]
        # own session: the terminal's Ctrl-C goes to the supervisor only, which shuts down in order
        return subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)

    def start(self, name: str) -> None:
        self.children[name] = Child(name, self._spawn(name))

    def pids(self) -> dict[str, int]:
        return {name: child.proc.pid for name, child in self.children.items() if child.alive}

    def signal(self, child: Child, sig: int) -> None:
        if child.alive:
            try:
                child.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            if sig == signal.SIGTERM and not child.stopped:
                child.stopped = True
                child.kill_at = time.monotonic() + self.grace(child)

    def kill(self, child: Child, why: str) -> None:
        held = self.held(child)
        self.killed[child.name] = {"why": why, "held": held}
        log.error("stage %s %s; killing it (SIGKILL)%s", child.name, why,
                  f": it still held about {held} message(s), lost" if held else "")
        self.signal(child, signal.SIGKILL)
        try:
            child.exit_code = child.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("stage %s (pid %d) does not die", child.name, child.proc.pid)

    def kill_all(self, why: str) -> None:
        for child in self.children.values():
            if child.alive:
                self.kill(child, why)

    def restart(self, child: Child, why: str) -> str | None:
        """Start a crashed stage again; or, past `max_restarts` crashes in a minute, why the run must end."""
        now = time.monotonic()
        while child.restarts and now - child.restarts[0] > RESTART_WINDOW_S:
            child.restarts.popleft()
        if len(child.restarts) >= self.max_restarts:
            return f"stage {child.name} crashed {len(child.restarts) + 1} times within a minute ({why})"
        child.restarts.append(now)
        self.restarts[child.name] = self.restarts.get(child.name, 0) + 1
        log.warning("stage %s %s; starting it again", child.name, why)
        child.proc = self._spawn(child.name)
        child.exit_code = None
        child.finish_by = child.kill_at = None
        child.stopped = False
        return None

    # -- graces ---------------------------------------------------------------------------------

    def held(self, child: Child) -> int:
        """Messages the stage still has to pass on, from its own counters and its upstream's."""
        mine = self.progress.of(child.name)
        if child.kind in ("broker", "worker"):
            return int(mine.get("held", 0) or 0)
        if child.kind == "filter":
            return max(0, self.progress.count(["broker"], "sent") - int(mine.get("done", 0) or 0))
        if child.kind == "sink":
            return max(0, self.progress.count(["filter"], "sent") - int(mine.get("done", 0) or 0))
        return 0

    def grace(self, child: Child) -> float:
        return self.shutdown.stage_grace_s + self.shutdown.per_item_s * self.held(child)

    # -- the ordered shutdown -------------------------------------------------------------------

    def _upstream_done(self, child: Child) -> bool:
        if all(not c.alive for c in self.children.values() if c.kind == "sink"):
            return True  # nothing downstream is left to wait for
        return all(not c.alive for c in self.children.values() if c.tier < child.tier)

    def advance_shutdown(self, now: float, forced: bool) -> None:
        """Ask, then tell, each stage whose upstream has ended to finish; kill only past its grace."""
        broker = self.children.get("broker")
        for child in self.children.values():
            if not child.alive:
                continue
            if child.kind == "source":
                sinks = [c for c in self.children.values() if c.kind == "sink"]
                if sinks and not any(c.alive for c in sinks) and self.sinks_ended_at is None:
                    self.sinks_ended_at = now
                if (self.sinks_ended_at is not None and now > self.sinks_ended_at + SOURCE_AFTER_SINKS_S
                        and not child.stopped):
                    # still sending with nobody left to write: its frames are lost, and a run that never ends
                    # is worse (a forged or early end of stream reached the sinks before the source finished)
                    log.error("source stage %s is still running %.0f s after every sink ended; stopping it",
                              child.name, SOURCE_AFTER_SINKS_S)
                    self.orphaned_sources.append(child.name)
                    self.signal(child, signal.SIGTERM)
                if child.kill_at is not None and now > child.kill_at:
                    self.kill(child, f"did not end its stream within {self.source_grace_s:.0f} s of being "
                                     f"asked to stop")
                continue
            if child.kind == "worker" and broker is not None and not broker.alive and broker.exit_code == 0:
                # the broker handed out and took back every frame; a worker still here holds nothing of value
                self.signal(child, signal.SIGTERM)
            if not (self._upstream_done(child) or forced):
                continue
            done = int(self.progress.of(child.name).get("done", 0) or 0)
            if child.finish_by is None or done != child.last_done:
                child.last_done = done
                child.finish_by = now + self.grace(child)  # renewed while it makes progress
                if child.stopped:
                    child.kill_at = max(child.kill_at or 0.0, now + self.grace(child))
            if not child.stopped and now > child.finish_by:
                log.warning("stage %s has not finished %.0f s after its upstream ended (about %d message(s) "
                            "left); asking it to stop", child.name, self.grace(child), self.held(child))
                self.signal(child, signal.SIGTERM)
            elif child.stopped and child.kill_at is not None and now > child.kill_at:
                self.kill(child, f"did not finish within {self.grace(child):.0f} s of SIGTERM")
