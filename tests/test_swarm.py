"""Docker Swarm: stack.yaml's graph with two worker replicas on a 300-frame synth source, one worker killed
mid-run; and the health check the image's HEALTHCHECK runs (pipeline/stream/health.py), which needs no Docker.

The swarm test needs root (it inits a single-node swarm and reads the outputs' volume on the host), a Docker
daemon and the image of tests/test_docker_image.py (built there, or here, the same way); it skips with the
reason where any is missing. It removes its stack and volumes, and leaves the swarm if it made it.
Time on 2 cores with the image built: about 1 minute (20 s from deploy to the first frame, model loading
on busy cores; 15 s of run; the rest waiting for Swarm to restart the killed worker and tear down).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.stream import health

REPO = Path(__file__).resolve().parents[1]
FRAMES = 300  # the run: long enough to kill a worker in, short enough for CI
KILL_AT_ROW = 30


# -- the health check, without Docker -------------------------------------------------------------------


def test_stage_command_lines_are_recognised(tmp_path: Path) -> None:
    py, gb = "/opt/ghostbox/.venv/bin/python", "/opt/ghostbox/.venv/bin/ghostbox"
    alone = health.parse_stage([py, gb, "-v", "stage", "worker:0", "--config", "/tmp/graph.yaml"], tmp_path)
    assert alone is not None and alone[0] == "worker:0"
    assert alone[1][-1] == health.config_run_dirs(Path("/tmp/graph.yaml"))[-1]
    supervised = health.parse_stage([py, "-m", "pipeline.stream.stage_main", "sink:out", "--graph",
                                     "/tmp/gbx-1/graph.json", "--parent-pid", "7"], tmp_path)
    assert supervised == ("sink:out", [Path("/tmp/gbx-1")])
    assert health.parse_stage([py, "-m", "pipeline", "stage", "broker", "-c", "g.yaml"], tmp_path) is not None
    # a command that starts a stage, a shell running a compose script, other ghostbox commands: not stages
    assert health.parse_stage(["timeout", "60", gb, "stage", "broker", "--config", "g.yaml"], tmp_path) is None
    assert health.parse_stage(["sh", "-ec", "ghostbox stage broker --config /tmp/graph.yaml"], tmp_path) is None
    assert health.parse_stage([py, gb, "run", "--source", "synth:frames=9"], tmp_path) is None
    assert health.parse_stage([py, gb, "health"], tmp_path) is None


def test_config_run_dir_is_found(tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text("version: 1\nrun_dir: runs/here  # ipc sockets\n")
    assert health.config_run_dirs(config)[0] == tmp_path / "runs" / "here"


def test_health_of_a_live_stage_then_a_stopped_one(tmp_path: Path) -> None:
    """A real broker, started alone: answering while its loop turns; stopped (SIGSTOP), its progress file
    ages and the check says so, though the process still exists."""
    config = tmp_path / "graph.yaml"
    config.write_text("version: 1\nsources: [{id: cam, uri: 'synth:frames=10'}]\nsinks: [{name: out, out: out}]\n")
    broker = subprocess.Popen([sys.executable, "-m", "pipeline", "stage", "broker", "--config", str(config)],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            mine = [s for s in health.stage_processes() if s.pid == broker.pid]
            if mine and health.progress_of(mine[0]) is not None:
                break
            assert time.monotonic() < deadline and broker.poll() is None, "the broker wrote no progress"
            time.sleep(0.2)
        ok, why = health.judge(mine[0], time.time(), max_age=5, start_grace=60)
        assert ok and "answering" in why, why
        ok, why = health.judge(mine[0], time.time(), max_age=5, start_grace=0)
        assert ok, why  # a file is there: the start grace no longer matters
        broker.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        ok, why = health.judge(mine[0], time.time(), max_age=2, start_grace=60)
        assert not ok and "stuck" in why, why
        broker.send_signal(signal.SIGCONT)
        time.sleep(1.5)
        ok, why = health.judge(mine[0], time.time(), max_age=2, start_grace=60)
        assert ok, why
    finally:
        broker.send_signal(signal.SIGCONT)
        broker.terminate()
        broker.wait(timeout=30)


def test_nothing_to_judge_is_healthy(tmp_path: Path) -> None:
    fake = tmp_path / "proc"
    (fake / "123").mkdir(parents=True)
    (fake / "123" / "cmdline").write_bytes(b"/usr/bin/python3\0-m\0pipeline\0detect\0v.mp4\0")
    os.symlink(tmp_path, fake / "123" / "cwd")
    assert health.check(proc=fake) == (True, ["no streaming stage runs here: nothing to judge"])


def test_a_stage_without_progress_is_starting_then_stuck(tmp_path: Path) -> None:
    stage = health.Stage(pid=os.getpid(), name="worker:0", run_dirs=[tmp_path])
    ok, why = health.judge(stage, time.time(), max_age=30, start_grace=1e9)
    assert ok and "starting" in why, why
    ok, why = health.judge(stage, time.time(), max_age=30, start_grace=0)
    assert not ok and "no progress file" in why, why
    source = health.Stage(pid=os.getpid(), name="source:cam", run_dirs=[tmp_path])
    assert health.judge(source, time.time(), max_age=30, start_grace=0)[0]  # waiting for credit is not stuck


# -- the stack on a single-node swarm -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def swarm_image() -> str:
    if os.geteuid() != 0:
        pytest.skip("the swarm test inits a swarm and reads the outputs' volume on the host: it needs root")
    from tests import test_docker_image as built  # skips (no daemon, no BuildKit) as that module does

    return built.build_image()


def _docker(*args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    from tests.test_docker_image import docker

    return docker(*args, timeout=timeout, check=check, **kw)


def _tasks(service: str) -> list[dict]:
    ids = _docker("service", "ps", "-q", "--no-trunc", service).stdout.split()
    return [json.loads(line) for line in
            _docker("inspect", "--format", "{{json .}}", *ids).stdout.splitlines()] if ids else []


def _rows(path: Path) -> list[dict]:
    """The rows written so far (the sink appends: a last line without its newline is still being written)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1]]


def _wait(what: str, until, timeout: float, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = until()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def swarm() -> object:
    """A single-node swarm on loopback for the test; left afterwards if the test made it."""
    state = _docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    made = state == "inactive"
    if made:
        init = _docker("swarm", "init", "--advertise-addr", "127.0.0.1", check=False)
        if init.returncode != 0:
            pytest.skip(f"docker swarm init failed: {init.stderr.strip()[-500:]}")
    elif state != "active":
        pytest.skip(f"this Docker node's swarm state is {state!r}")
    yield
    if made:
        _docker("swarm", "leave", "--force", check=False)


@pytest.mark.docker
@pytest.mark.slow
def test_stack_with_a_worker_killed_mid_run_completes_exactly_once(swarm_image: str, swarm: object,
                                                                   tmp_path: Path) -> None:
    from tests.test_docker_image import DOCKER

    assert DOCKER is not None
    shutil.copy(REPO / "stack.yaml", tmp_path / "stack.yaml")
    (tmp_path / "keys").mkdir()
    _docker("run", "--rm", "-v", f"{tmp_path / 'keys'}:/data", swarm_image, "keys", "--out", "/data", "server",
            "client")
    stack = f"gbxswarm{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "GHOSTBOX_IMAGE": swarm_image, "GHOSTBOX_WORKERS": "2",
           "GHOSTBOX_SOURCE": f"synth:seed=3,frames={FRAMES}"}
    try:
        started = time.time()
        # --resolve-image never: a local image; asking a registry for its digest only waits here
        _docker("stack", "deploy", "--resolve-image", "never", "-c", str(tmp_path / "stack.yaml"), stack,
                cwd=tmp_path, env=env)
        volume = Path(_wait("the outputs' volume", lambda: _docker(
            "volume", "inspect", "--format", "{{.Mountpoint}}", f"{stack}_data", check=False).stdout.strip(), 120))
        rows_file = volume / "out" / "detections.jsonl"
        _wait(f"{KILL_AT_ROW} rows", lambda: len(_rows(rows_file)) >= KILL_AT_ROW, 300)
        workers = _docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={stack}_worker").stdout.split()
        assert len(workers) == 2, workers
        victim = json.loads(_docker("inspect", "--format", "{{json .Config.Labels}}", workers[0]).stdout)
        killed_at = time.time()
        _docker("kill", workers[0])  # SIGKILL: no goodbye to the broker

        def graph_done() -> dict | None:
            tasks = _tasks(f"{stack}_graph")
            return tasks[0] if len(tasks) == 1 and tasks[0]["Status"]["State"] in ("complete", "failed") else None

        graph = _wait("the graph to finish", graph_done, 300)
        finished = time.time()
        assert graph["Status"]["State"] == "complete", graph["Status"]

        slot = victim["com.docker.swarm.task.name"].split(".")[1]

        def replaced() -> list[dict]:
            mine = [t for t in _tasks(f"{stack}_worker") if str(t["Slot"]) == slot]
            return mine if len(mine) >= 2 and any(t["Status"]["State"] in ("running", "complete") for t in mine
                                                   if t["ID"] != victim["com.docker.swarm.task.id"]) else []

        slot_tasks = _wait("Swarm to start the killed worker again", replaced, 90)
        dead = next(t for t in slot_tasks if t["ID"] == victim["com.docker.swarm.task.id"])
        assert dead["Status"]["State"] == "failed" and dead["Status"]["ContainerStatus"]["ExitCode"] == 137
        back = min((t for t in slot_tasks if t["ID"] != dead["ID"]), key=lambda t: t["CreatedAt"])
        back_at = _docker("inspect", "--format", "{{.State.StartedAt}}",
                          back["Status"]["ContainerStatus"]["ContainerID"]).stdout.strip()

        time.sleep(8)  # longer than the graph's restart delay (5 s): a restart would show by now
        graph_tasks = _tasks(f"{stack}_graph")
        assert len(graph_tasks) == 1 and graph_tasks[0]["Status"]["State"] == "complete", \
            f"the finished graph was started again: {[t['Status'] for t in graph_tasks]}"
        def start_lines() -> set[str]:
            logs = _docker("service", "logs", "--raw", f"{stack}_worker", check=False)
            found = {line.split("(")[1].split(")")[0] for line in (logs.stdout + logs.stderr).splitlines()
                     if "worker 0 (w0-" in line}
            return found if len(found) >= 3 else set()

        # each worker's start line names its random id and its container: the killed one, the other, its successor
        starts = _wait("the successor's start line", start_lines, 90, every=2)

        rows = _rows(rows_file)
        assert [row["frame"] for row in rows] == list(range(FRAMES)), f"{len(rows)} rows, not each frame once in order"
        summary = json.loads((volume / "out" / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["frames"] == FRAMES, summary.get("problems")
        assert summary["per_source"]["video"]["duplicates"] == 0
        assert len({s.split(" on ")[1] for s in starts}) == len(starts), f"containers not told apart: {starts}"

        after = sorted(row["t"]["broker_out"] for row in rows if row["t"]["broker_out"] >= killed_at - 1)
        gap = max(b - a for a, b in zip(after, after[1:]))
        first = min(row["t"]["sink_out"] for row in rows)
        print(f"\nswarm figures: deploy to first frame {first - started:.1f} s; run {finished - first:.1f} s "
              f"(first frame to the graph's end); failover: longest pause in results after the kill {gap:.1f} s, "
              f"{summary['per_source']['video']['resent']} frames re-sent, the killed worker's successor started "
              f"{_since(killed_at, back_at):.1f} s after the kill")
    finally:
        _docker("stack", "rm", stack, check=False)
        # the stack's containers go asynchronously; its volumes can go only after them
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _docker(
                "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack}").stdout.strip():
            time.sleep(1)
        _docker("volume", "rm", f"{stack}_data", f"{stack}_home", check=False)


def _since(then: float, iso: str) -> float:
    """Seconds from `then` (epoch) to Docker's RFC 3339 time with nanoseconds."""
    from datetime import datetime

    head, _, frac = iso.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")
    return stamp - then
