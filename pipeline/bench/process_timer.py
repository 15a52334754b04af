"""Whole-process timing: a command as a user meets it, from spawn to exit.

Wall time covers imports, model loading, start-up and shutdown. CPU time and peak memory come
from `os.wait4`: the process's own plus those of every descendant it waited for, which is
every stage of `ghostbox run` (the supervisor reaps its stages). A thread-pool's or a stage's
CPU is therefore counted, where timing inside one process would miss it.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRun:
    wall_s: float
    user_s: float
    sys_s: float
    peak_mib: float  # the largest resident set of the process or any one descendant (ru_maxrss)
    code: int        # exit status; -N: killed by signal N (-9 also when the timeout killed it)
    timed_out: bool = False

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def time_process(argv: Sequence[str], log: Path, timeout_s: float) -> ProcessRun:
    """Run `argv` with stdout and stderr into `log`; its wall, CPU and peak memory. Past `timeout_s` the
    whole process group is killed (a run's stages with it) and the run is marked timed out."""
    log.parent.mkdir(parents=True, exist_ok=True)
    expired = threading.Event()
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def kill() -> None:
            expired.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    if not expired.is_set():
        try:  # stages the command left behind would skew the next run's timing
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return ProcessRun(wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode,
                      expired.is_set())


def median_range(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max: how whole-process timings are quoted (one slow run says little)."""
    return {"median": float(statistics.median(values)), "min": float(min(values)), "max": float(max(values))}
