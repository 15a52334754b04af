"""Faults: a detector worker killed mid-stream (lossless) loses and duplicates no frame."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.stream_helpers import (
    alive,
    assert_exactly_once_in_order,
    base_config,
    ended_run,
    free_port_block,
    guard_leftovers,
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


def test_worker_killed_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    run_dir = short_dir()
    out = tmp_path / "out"
    frames = 400
    # a source faster than the two workers, so each always holds the frames its credit allows and a frozen
    # worker:0 holds some (at 30 fps a worker was mostly idle, the freeze often caught it empty, and the
    # retries outlasted the 4 s stream: a CI flake); lossless flow control keeps the stream going meanwhile
    port = free_port_block(6)  # broker, filter, sink, worker:0, worker:1, source
    # tracks on: tracking in the sink must not change what is delivered, or its order
    config = base_config(out, [{"id": "clip", "uri": str(video(frames)), "fps": 200}], run_dir,
                         workers={"count": 2}, detector={"batch": 8}, metrics={"port": port},
                         tracks={"enabled": True})
    proc = start_run(write_config(tmp_path / "graph.yaml", config))
    with ended_run(proc, run_dir, settle=10) as leftovers:
        broker, worker0 = port, port + 3
        assert wait_for(lambda: metric(worker0, "ghostbox_frames_in_total") > 0, 90), "worker:0 took no frame"
        [victim] = [p for p in stage_processes(str(run_dir)) if "worker:0" in p.cmdline()]
        for _ in range(5):
            # freeze it while it holds frames; the broker hands it more while the other worker is busier,
            # until its heartbeats are missed and what it held goes to the other worker
            wait_for(lambda: metric(worker0, "ghostbox_frames_in_total") > metric(worker0, "ghostbox_frames_out_total"),
                     10, interval=0.01)
            victim.send_signal(signal.SIGSTOP)
            if wait_for(lambda: metric(broker, 'ghostbox_events_total{event="resent"') >= 1, 4):
                break
            victim.send_signal(signal.SIGCONT)  # it held nothing after all: let it rejoin and try again
        victim.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert not leftovers
    assert_exactly_once_in_order(records(out), {"clip": frames})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["restarts"] == {"worker:0": 1}
    assert summary["per_source"]["clip"]["resent"] >= 1  # its in-flight frames went to the other worker
    assert summary["frames"] == frames and summary["status"] == "complete"
    assert summary["per_source"]["clip"]["tracks"]["errors"] == 0
    assert all("track_id" in box for row in records(out) for box in row["boxes"])


def test_killing_the_supervisor_leaves_no_orphans(tmp_path: Path) -> None:
    """Stages watch their parent: SIGKILL on `ghostbox run` (no chance to clean up) still ends them all."""
    run_dir, start = short_dir(), time.time()
    out = tmp_path / "out"
    config = base_config(out, [{"id": "street", "uri": "synth:frames=100000,fps=10"}], run_dir, mode="live")
    proc = start_run(write_config(tmp_path / "graph.yaml", config))
    try:
        assert wait_for(lambda: len(stage_processes(str(run_dir))) == 5, 60), "the stages did not start"
        stages = stage_processes(str(run_dir))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        gone = wait_for(lambda: not any(alive(p) for p in stages), 20)
    finally:
        if proc.poll() is None:
            proc.kill()
        leftovers = guard_leftovers(start, str(run_dir))
    assert gone and not leftovers, f"orphans: {leftovers}"


def test_a_killed_supervisors_temporary_run_folder_is_removed_by_its_stages(tmp_path: Path) -> None:
    """`ghostbox run` without a run_dir makes a folder for the run alone; SIGKILLed, it cannot remove it:
    its stages, ending because their parent is gone, do."""
    start = time.time()
    out = tmp_path / "out"
    config = base_config(out, [{"id": "street", "uri": "synth:frames=100000,fps=10"}], tmp_path, mode="live")
    del config["run_dir"]
    config_path = write_config(tmp_path / "graph.yaml", config)
    proc = start_run(config_path)
    try:
        assert wait_for(lambda: len([p for p in stage_processes("pipeline.stream.stage_main")
                                     if p.ppid() == proc.pid]) == 5, 60), "the stages did not start"
        stages = [p for p in stage_processes("pipeline.stream.stage_main") if p.ppid() == proc.pid]
        cmd = stages[0].cmdline()
        run_dir = Path(cmd[cmd.index("--graph") + 1]).parent
        assert run_dir.is_dir() and run_dir != tmp_path
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_for(lambda: not any(alive(p) for p in stages), 20), "stages outlived the supervisor"
    finally:
        if proc.poll() is None:
            proc.kill()
        leftovers = guard_leftovers(start)
    assert not leftovers, f"orphans: {leftovers}"
    assert wait_for(lambda: not run_dir.exists(), 10), f"{run_dir} left behind"
