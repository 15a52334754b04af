"""Are the streaming stages here still answering? A container's HEALTHCHECK: `python -m pipeline.stream.health`
(or `ghostbox health`) exits 0 when they are, 1 when one is not, with one line per stage.

"The process exists" says little: a stage whose event loop hangs (a deadlock, a socket that never
returns) still exists. Each loop turn of a stage writes its progress file (`StageShell.report_progress`,
at most twice a second, with its pid and the time), so the file's age says whether the loop still turns.
Each stage process in /proc (this container's, or this user's on a machine) is judged by it:

- a file written by that pid within `max_age` seconds: answering;
- no file yet: starting (loading a model) for up to `start_grace` seconds of the process's life;
- a source writes only when it sends a frame, so one waiting for the workers' credit looks stale while
  it is only waiting: a source is judged by its process alone;
- no stage process at all: nothing to judge (a one-shot command such as `detect`): healthy.

Only the standard library and /proc: a check every few seconds costs a few milliseconds of CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.stream.run_paths import config_run_dir, progress_file

MAX_AGE_S = 30.0  # a loop turns at least once a second (heartbeat or poll timeout); 30 s leaves room on a busy CPU
START_GRACE_S = 600.0  # model loading and warm-up on a slow CPU
PROC = Path("/proc")


@dataclass
class Stage:
    pid: int
    name: str  # worker:0, source:video, ...
    run_dirs: list[Path]  # where its progress file may be


def _option(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def parse_stage(argv: list[str], cwd: Path) -> tuple[str, list[Path]] | None:
    """(stage name, run folders to look in) from a process's command line, or None for anything else.
    A supervisor's stage: `python -m pipeline.stream.stage_main NAME --graph RUN_DIR/graph.json ...`;
    one started alone: `ghostbox [flags] stage NAME --config C` (or `python -m pipeline stage ...`). A process
    that only starts one (`timeout 60 ghostbox stage ...`, a shell) is not a stage."""
    if not argv or not (Path(argv[0]).name.startswith("python") or Path(argv[0]).name == "ghostbox"):
        return None
    if "pipeline.stream.stage_main" in argv:
        rest = argv[argv.index("pipeline.stream.stage_main") + 1:]
        graph = _option(rest, "--graph")
        config = _option(rest, "--config")
    else:
        start = next((i for i, a in enumerate(argv[:3]) if Path(a).name == "ghostbox" or
                      (a == "pipeline" and i > 0 and argv[i - 1] == "-m")), None)
        if start is None or "stage" not in argv[start + 1:]:
            return None
        rest = argv[argv.index("stage", start + 1) + 1:]
        graph, config = None, _option(rest, "--config", "-c")
    name = next((a for a in rest if not a.startswith("-")), None)
    if name is None or ":" not in name and name not in ("broker", "filter"):
        return None
    dirs = []
    if graph:
        dirs.append((cwd / graph).parent)
    if config:
        dirs += config_run_dirs(cwd / config, cwd)
    return name, dirs


def config_run_dirs(config: Path, cwd: Path | None = None) -> list[Path]:
    """The run folder a stage started with `--config` uses: the config's `run_dir`, else the folder named
    after the config's path (`run_paths.config_run_dir`, as `config.default_run_dir` gives it)."""
    dirs = []
    try:
        for line in config.read_text().splitlines():  # a top-level `run_dir: PATH` line, without a YAML parser
            if line.startswith("run_dir:"):
                value = line.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
                if value and value not in ("null", "~"):
                    # relative: to the stage's working folder, as `config.resolve` takes it (or the config's)
                    dirs += [base / value for base in (cwd or config.parent, config.parent)]
    except OSError:
        pass
    return [*dirs, config_run_dir(config)]


def stage_processes(proc: Path = PROC) -> list[Stage]:
    """Every stage process this user may judge (root: all of them)."""
    stages = []
    me = os.geteuid()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if me != 0 and entry.stat().st_uid != me:
                continue
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found = parse_stage(argv, cwd)
        if found:
            stages.append(Stage(int(entry.name), *found))
    return sorted(stages, key=lambda s: s.pid)


def process_age(pid: int, proc: Path = PROC) -> float | None:
    """Seconds since the process started (from /proc/PID/stat's start time and /proc/uptime)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in () may hold spaces
        uptime = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def progress_of(stage: Stage) -> dict | None:
    """The stage's own progress file (the one its pid wrote) in the run folders it may use."""
    dirs = list(stage.run_dirs)
    dirs += sorted(Path(tempfile.gettempdir()).glob("gbx-*"))  # a run_dir the command line does not show
    for folder in dict.fromkeys(dirs):
        try:
            counts = json.loads(progress_file(folder, stage.name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(counts, dict) and counts.get("pid") == stage.pid:
            return counts
    return None


def judge(stage: Stage, now: float, max_age: float, start_grace: float, proc: Path = PROC) -> tuple[bool, str]:
    """(answering, why) for one stage process."""
    where = f"{stage.name} (pid {stage.pid})"
    if stage.name.startswith("source:"):
        return True, f"{where}: running (a source reports only the frames it sends)"
    counts = progress_of(stage)
    if counts is None:
        age = process_age(stage.pid, proc)
        if age is not None and age <= start_grace:
            return True, f"{where}: starting, {age:.0f} s old, no progress yet"
        return False, f"{where}: no progress file after {age or 0:.0f} s"
    stale = now - float(counts.get("t", 0))
    if stale > max_age:
        return False, f"{where}: last progress {stale:.0f} s ago (more than {max_age:.0f} s): its loop is stuck"
    return True, f"{where}: answering ({stale:.1f} s ago, {counts.get('done', 0)} done)"


def check(max_age: float = MAX_AGE_S, start_grace: float = START_GRACE_S, proc: Path = PROC) -> tuple[bool, list[str]]:
    stages = stage_processes(proc)
    if not stages:
        return True, ["no streaming stage runs here: nothing to judge"]
    now = time.time()
    verdicts = [judge(stage, now, max_age, start_grace, proc) for stage in stages]
    return all(ok for ok, _ in verdicts), [line for _, line in verdicts]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-age", type=float, default=MAX_AGE_S,
                        help="seconds a stage's progress may be old (default %(default)s)")
    parser.add_argument("--start-grace", type=float, default=START_GRACE_S,
                        help="seconds a stage may run before its first progress (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    healthy, lines = check(args.max_age, args.start_grace)
    print("\n".join(lines))
    print("healthy" if healthy else "unhealthy")
    return 0 if healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stream.health", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
