"""Shutdown faults: a sink that is behind when the rest of the graph ends is waited for, one that
never finishes is killed by name with what it lost, a second SIGTERM still exits 143, and a
graph that cannot start refuses in one line and leaves no run folder behind."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers.stream_helpers import (
    assert_exactly_once_in_order,
    base_config,
    ended_run,
    free_port_block,
    kill_run_stages,
    metric,
    records,
    short_dir,
    stage_processes,
    start_run,
    video,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow


FRAMES = 300


def _pause_sink_midway(run_dir: Path, sink_port: int, pause_s: float | None) -> None:
    """SIGSTOP the sink once it wrote half the frames (a slow disk or network share); SIGCONT after pause_s.
    The rest of the graph finishes meanwhile (150 frames/s), so the broker exits while the sink is behind."""
    assert wait_for(lambda: metric(sink_port, "ghostbox_frames_out_total") >= 0.5 * FRAMES, 120), "sink wrote nothing"
    [sink] = [p for p in stage_processes(str(run_dir)) if "sink:out" in p.cmdline()]
    sink.send_signal(signal.SIGSTOP)
    if pause_s is not None:
        time.sleep(pause_s)
        sink.send_signal(signal.SIGCONT)


def _graph(tmp_path: Path, run_dir: Path, port: int, **extra: object) -> Path:
    config = base_config(tmp_path / "out", [{"id": "clip", "uri": str(video(FRAMES)), "fps": 150}], run_dir,
                         metrics={"port": port}, sinks=[{"name": "out", "out": str(tmp_path / "out"), "video": False}],
                         **extra)
    return write_config(tmp_path / "graph.yaml", config)


def test_a_sink_paused_while_the_graph_ends_is_waited_for(tmp_path: Path) -> None:
    run_dir = short_dir()
    port = free_port_block(5)  # broker, filter, sink, worker, source
    proc = start_run(_graph(tmp_path, run_dir, port))
    with ended_run(proc, run_dir):
        _pause_sink_midway(run_dir, port + 2, pause_s=7.0)  # longer than the old graph-wide 5 s kill
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert_exactly_once_in_order(records(tmp_path / "out"), {"clip": FRAMES})
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "complete" and "killed" not in summary


def test_a_sink_stuck_past_its_grace_is_killed_by_name_with_what_it_lost(tmp_path: Path) -> None:
    run_dir = short_dir()
    port = free_port_block(5)
    proc = start_run(_graph(tmp_path, run_dir, port, shutdown={"stage_grace_s": 1.0, "per_item_s": 0.0}))
    with ended_run(proc, run_dir):
        _pause_sink_midway(run_dir, port + 2, pause_s=None)  # never comes back
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-3000:]
    assert "stage sink:out" in stderr and "SIGKILL" in stderr and "were not passed on or written" in stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "incomplete"
    assert summary["killed"]["sink:out"]["held"] > 0, summary["killed"]
    assert any("sink:out was killed" in p for p in summary["problems"])
    assert len(records(tmp_path / "out")) < FRAMES


def test_a_second_sigterm_still_exits_143(tmp_path: Path) -> None:
    run_dir = short_dir()
    out = tmp_path / "out"
    config = base_config(out, [{"id": "street", "uri": "synth:frames=100000,fps=10"}], run_dir, mode="live")
    proc = start_run(write_config(tmp_path / "graph.yaml", config))
    with ended_run(proc, run_dir) as leftovers:
        assert wait_for(lambda: len(stage_processes(str(run_dir))) == 5, 90), "the stages did not start"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-3000:]
    assert not leftovers
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"


def test_a_filter_for_another_model_is_refused_before_the_graph_starts(tmp_path: Path) -> None:
    from tests.helpers.model_factory import make_checkpoint
    from tests.helpers.stream_helpers import IMGSZ, REPO, tiny_filter

    other = tmp_path / "other.pt"  # same architecture, other weights: another detector to the filter
    make_checkpoint(str(REPO / "configs/models/ghostbox-street-n.yaml"), other, imgsz=IMGSZ, seed=7)
    run_dir = tmp_path / "r"  # not there yet: a refused run must not leave it behind
    config = base_config(tmp_path / "out", [{"id": "clip", "uri": str(video(40))}], run_dir,
                         filter={"path": str(tiny_filter())}, detector={"model": str(other)})
    proc = start_run(write_config(tmp_path / "graph.yaml", config))
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        kill_run_stages(str(run_dir))
    assert proc.returncode == 2, stderr[-3000:]
    # refused by the supervisor's preflight (the weights' sha256), before even a worker loads torch
    assert "filter" in stderr and "was fitted for another detector" in stderr and "weights_sha256" in stderr
    assert "[worker" not in stderr and "[broker]" not in stderr and "[sink:out]" not in stderr  # nothing started
    assert not run_dir.exists() and not (tmp_path / "out").exists()


def test_a_run_folder_open_to_other_users_is_refused(tmp_path: Path) -> None:
    run_dir = short_dir()
    os.chmod(run_dir, 0o755)
    config = base_config(tmp_path / "out", [{"id": "clip", "uri": str(video(40))}], run_dir)
    proc = start_run(write_config(tmp_path / "graph.yaml", config))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"run_dir '{run_dir}': mode 755" in stderr and "chmod 700" in stderr
    assert not any(psutil.pid_exists(p.pid) for p in stage_processes(str(run_dir)))
