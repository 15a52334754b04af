"""Shared pieces of the streaming tests: a tiny model and filter, short videos, running graphs,
and making sure no stage process outlives its test.

Everything expensive is made once per pytest process (module-level cache), since the
streaming tests are spread over several files.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
_CACHE = Path(tempfile.mkdtemp(prefix="gbx-tests-"))
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
IMGSZ = 160


def tiny_model() -> Path:
    """The 0.9M-parameter street-world architecture, untrained but calibrated to give ~5 boxes a frame."""
    path = _CACHE / "tiny.pt"
    if not path.exists():
        from tests.helpers.model_factory import make_checkpoint

        make_checkpoint(str(REPO / "configs/models/ghostbox-street-n.yaml"), path, imgsz=IMGSZ)
    return path


def synth_frames(count: int, size: tuple[int, int] = (160, 128), seed: int = 0) -> list[np.ndarray]:
    from pipeline.synth import WorldConfig, render_stream_frame

    world = WorldConfig(seed=seed, stream_frames=max(count, 1))
    return [cv2.resize(render_stream_frame(world, i)[0], size, interpolation=cv2.INTER_AREA) for i in range(count)]


def video(frames: int = 40, fps: float = 30.0, seed: int = 0) -> Path:
    path = _CACHE / f"clip-{frames}-{seed}-{fps:g}.mp4"
    if not path.exists():
        images = synth_frames(frames, seed=seed)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, images[0].shape[1::-1])
        for image in images:
            writer.write(image)
        writer.release()
    return path


def image_folder(count: int = 6) -> Path:
    folder = _CACHE / f"images-{count}"
    if not folder.exists():
        folder.mkdir()
        for i, image in enumerate(synth_frames(count, size=(144, 112), seed=3)):
            cv2.imwrite(str(folder / f"img{i:02d}.jpg"), image)
    return folder


def tiny_filter() -> Path:
    """A Mahalanobis filter fitted on the tiny model's boxes, calibrated to keep 80% of them."""
    path = _CACHE / "tiny.filter.safetensors"
    if not path.exists():
        from pipeline.detect.detector import Detector
        from pipeline.detections import Detections
        from pipeline.filter import BoxSet, HallucinationFilter, save_filter

        detector = Detector(model=str(tiny_model()), imgsz=IMGSZ, device="cpu")
        dets = detector.detect(synth_frames(24, seed=5))
        boxes = Detections.merge(dets)
        filt = HallucinationFilter.fit("mahalanobis", BoxSet(boxes), detector.class_names, detector.fingerprint(),
                                       tpr=0.8, min_boxes=5)
        save_filter(filt, path)
    return path


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def free_port_block(count: int) -> int:
    """A base port with `count` free ports after it (metrics: stage k serves on base + k)."""
    rng = np.random.default_rng()
    for _ in range(50):
        base = int(rng.integers(20000, 60000))
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def metric(port: int, name: str) -> float:
    """Sum of a Prometheus metric's samples on a stage's /metrics page (0 when absent or unreachable)."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def short_dir(prefix: str = "gbx-t") -> Path:
    """A run folder short enough for ipc socket paths (pytest's tmp_path can be too long)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def base_config(out: Path, sources: list[dict[str, Any]], run_dir: Path, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "run_dir": str(run_dir),
        "sources": sources,
        "detector": {"model": str(tiny_model()), "imgsz": IMGSZ, "device": "cpu", "batch": 4},
        "workers": {"count": 1, "batch_timeout_ms": 5},
        "broker": {"heartbeat_ms": 200, "liveness": 4, "prefetch": 4},
        "sinks": [{"name": "out", "out": str(out)}],
        "shutdown_grace_s": 10,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def ghostbox(*args: Any, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env(), cwd=REPO)


def start_ghostbox(*args: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO)


# `ghostbox run` without the CLI's other commands (whose imports take seconds): the same run_cmd code
_RUN_ONLY = ("import argparse, logging, sys\n"
             "from pipeline.cli import run_cmd\n"
             "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
             "parser = argparse.ArgumentParser()\n"
             "run_cmd.add_parser(parser.add_subparsers())\n"
             "args = parser.parse_args(sys.argv[1:])\n"
             "from pipeline.errors import GhostboxError\n"
             "try:\n"
             "    sys.exit(args.handler(args))\n"
             "except GhostboxError as exc:  # as pipeline.cli.main does\n"
             "    print(f'ghostbox run: error: {exc}', file=sys.stderr)\n"
             "    sys.exit(2)\n")


def start_run(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _RUN_ONLY, "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO)


def stage_processes(tag: str) -> list[psutil.Process]:
    """Live processes whose command line mentions `tag` (a run folder or config path)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "pid"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if tag in cmd and proc.pid != os.getpid() and "pytest" not in cmd:
            found.append(proc)
    return found


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie; a process that exits between the two checks counts as gone."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pid_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def stage_processes_since(start: float) -> list[psutil.Process]:
    """Stage processes started after `start` (epoch seconds): what a test may have left behind.
    Only this PID namespace's: a container's stages (the Docker test) are not ours to kill."""
    found, ours = [], _pid_namespace("self")
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        try:
            if (
                "pipeline.stream.stage_main" in (proc.info["cmdline"] or [])
                and proc.info["create_time"] >= start - 1
                and _pid_namespace(proc.pid) == ours
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def guard_leftovers(start: float, extra_tag: str | None = None) -> list[str]:
    """Kill stage processes a test left behind (started after `start`, or naming `extra_tag`); their names."""
    procs = {p.pid: p for p in stage_processes_since(start)}
    if extra_tag:
        procs.update({p.pid: p for p in stage_processes(extra_tag)})
    names = []
    for proc in procs.values():
        try:
            names.append(" ".join(proc.cmdline()[3:5]))
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(procs.values()), timeout=5)
    return names


def kill_run_stages(tag: str) -> list[str]:
    """Kill the stage processes still alive whose command line names `tag` (a run folder): only this
    run's, unlike `guard_leftovers`, so another run on the same machine is left alone. Their names."""
    procs, names = [], []
    for proc in stage_processes(tag):
        try:
            if alive(proc):
                name = " ".join(proc.cmdline()[3:5])
                proc.kill()
                procs.append(proc)
                names.append(name)
        except psutil.NoSuchProcess:
            continue  # it exited on its own meanwhile
    psutil.wait_procs(procs, timeout=5)
    return names


@contextmanager
def ended_run(proc: subprocess.Popen, run_dir: Path | str, settle: float = 0.0) -> Iterator[list[str]]:
    """Around the wait for a `ghostbox run`: on the way out the run is killed if still alive, its
    stages get `settle` seconds to exit, and those still alive are killed (only this run's). The
    yielded list then names the stages that had to be killed."""
    leftovers: list[str] = []
    try:
        yield leftovers
    finally:
        if proc.poll() is None:
            proc.kill()
        if settle:
            wait_for(lambda: not stage_processes(str(run_dir)), settle)
        leftovers += kill_run_stages(str(run_dir))


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def records(out: Path) -> list[dict[str, Any]]:
    path = out / "detections.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_stream(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    streams: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        streams.setdefault(row["stream"], []).append(row)
    return streams


def assert_exactly_once_in_order(rows: list[dict[str, Any]], expected: dict[str, int]) -> None:
    streams = by_stream(rows)
    assert sorted(streams) == sorted(expected), f"streams {sorted(streams)} != {sorted(expected)}"
    for stream, count in expected.items():
        seqs = [r["seq"] for r in streams[stream]]
        assert seqs == list(range(count)), f"{stream}: seqs {seqs[:10]}... ({len(seqs)} of {count})"


def video_frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def sealed(graph: Any, message: list) -> list:
    """`message` sealed as the graph's own source and filter would (for tests that speak for them)."""
    from pipeline.stream import protocol as P
    from pipeline.stream.provenance import Seal, part_specs

    seal = Seal.from_file(graph.seal_path())
    decoded = P.decode(message)
    header = dict(decoded.header)
    if decoded.type == P.EOS:
        header["seal"] = seal.eos(decoded.topic, header)
    else:
        header["seal"] = seal.frame(decoded.topic, header)
        header["sealed"] = seal.result(decoded.topic, header, part_specs(decoded), decoded.parts)
    return P.reencode(decoded, header)


def cut_video(path: Path, frames: int = 60) -> Path:
    """An MJPG AVI of `frames` frames cut in half: its header still announces them all (a truncated input)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 4 % 256, np.uint8))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
