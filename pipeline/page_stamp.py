"""What made a page of figures: the date (UTC), the machine, the ghostbox version and commit, and the command.

Every written result carries this `made` block and prints it as one header line, so a figure can
be traced to where and how it was measured (benchmark pages, fine-tuning seed reports, tools).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

import pipeline

REPO = Path(pipeline.__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_cores() -> int:
    """The cores this process may use (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _gpus() -> list[str]:
    """GPU names from nvidia-smi, else from torch when it is already loaded; [] for none."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            return [", ".join(part.strip() for part in line.split(",")) for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    torch = sys.modules.get("torch")  # never imported here only to look: it costs seconds
    if torch is not None and torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def commit() -> str:
    """The checkout's commit (12 hex digits), '+ uncommitted changes' when tracked files differ from it."""
    head = _git("rev-parse", "--short=12", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    # the benchmark pages themselves do not count: regenerating several pages in a row is one run
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs/benchmarks")
    return f"{head} + uncommitted changes" if dirty else head


def machine() -> dict[str, Any]:
    gpus = _gpus()
    return {
        "cpu": _cpu_model(), "cores": machine_cores(), "gpu": gpus or None,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        # other jobs on the machine move every figure: the 1-minute load average when the run ended
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
        "packages": {name: v for name in ("torch", "ultralytics-opencv-headless", "onnxruntime", "onnxruntime-gpu")
                     if (v := _version(name))},
    }


def made(command: str) -> dict[str, Any]:
    """The `made` block of a result: date (UTC), machine, ghostbox version and commit, command."""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "ghostbox": pipeline.__version__, "commit": commit(), "command": command}


def header_line(info: dict[str, Any]) -> str:
    m = info["machine"]
    gpu = "; ".join(m["gpu"]) if m["gpu"] else "no GPU"
    packages = ", ".join(f"{k.replace('-opencv-headless', '')} {v}" for k, v in m["packages"].items())
    load = f", load {m['load_1min']:g} at the end" if m.get("load_1min") is not None else ""
    return (f"Made {info['date']} on {m['cpu']} ({m['cores']} cores{load}), {gpu}, {m['ram_gib']:g} GiB RAM "
            f"({m['os']}, Python {m['python']}{', ' + packages if packages else ''}); ghostbox {info['ghostbox']} "
            f"at commit {info['commit']}; command: `{info['command']}`")
