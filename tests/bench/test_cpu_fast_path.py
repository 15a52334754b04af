"""`ghostbox bench cpu` (pipeline/bench/cpu_fast_path.py) and its whole-process timer."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from pipeline.bench.cpu_fast_path import FILTER_TARGET, ROWS, _ghostbox_row, summarise, table_lines
from pipeline.bench.process_timer import ProcessRun, time_process
from pipeline.cli.main import main

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4:\n    pass\n"


def test_the_timer_counts_the_cpu_of_descendants_and_the_exit_code(tmp_path: Path) -> None:
    # the child spends its time in a grandchild, as `ghostbox run` does in its stages
    parent = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BURN!r}])\nsys.exit(3)\n"
    run = time_process([sys.executable, "-c", parent], tmp_path / "log.txt", timeout_s=60)
    assert run.code == 3 and not run.timed_out
    assert run.cpu_s >= 0.35 and run.wall_s >= 0.35 and run.peak_mib > 1


def test_the_timer_kills_the_whole_group_past_its_timeout(tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    # a grandchild that would write the marker after 3 s: killed with its parent at 1 s
    late = f"import time, pathlib\ntime.sleep(3)\npathlib.Path({str(marker)!r}).write_text('x')\n"
    parent = (f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {late!r}])\n"
              "time.sleep(30)\n")
    start = time.perf_counter()
    run = time_process([sys.executable, "-c", parent], tmp_path / "log.txt", timeout_s=1.0)
    assert run.timed_out and run.code == -9 and time.perf_counter() - start < 10
    time.sleep(3)
    assert not marker.exists()


def _row(wall: float, **extra) -> dict:
    return {"wall_s": wall, "cpu_s": wall * 1.8, "peak_mib": 900.0, **extra}


def _recorded(fp32_filter_walls=(27.0, 27.5, 26.8)) -> dict:
    walls = {"ultralytics": (50.0, 52.0, 49.0), "pt": (33.0, 34.0, 33.5), "fp32": (25.0, 26.0, 24.0),
             "fp32+filter": fp32_filter_walls, "int8": (16.0, 16.5, 16.2), "int8+filter": (16.4, 16.9, 16.5)}
    runs = {name: [_row(w, boxes=80, flagged=3) if name != "ultralytics" else _row(w) for w in walls[name]]
            for name, _, _ in ROWS}
    startup = {"ultralytics": [_row(6.4), _row(6.5)], "pt": [_row(5.8), _row(6.0)]}
    return summarise(runs, startup, {"startup_frames": 10, "startup_rounds": 2})


def test_ratios_are_medians_of_per_round_ratios_and_targets_are_judged() -> None:
    r = _recorded()
    assert r["speedup"]["int8"]["median"] == pytest.approx(sorted([50 / 16, 52 / 16.5, 49 / 16.2])[1])
    assert r["speedup"]["fp32"]["median"] == pytest.approx(2.0)  # 50/25, 52/26, 49/24: all 2.0-2.04
    overhead = sorted([27 / 25, 27.5 / 26, 26.8 / 24])[1] - 1
    assert r["filter_overhead"]["fp32+filter"]["median"] == pytest.approx(overhead)
    met = {t["what"].split(":")[0]: t["met"] for t in r["targets"]}
    assert met == {"int8": True, "fp32": True, "fp32+filter": False, "int8+filter": True,
                   "start-up, 10 frames, `.pt`": True}
    assert r["filter_overhead"]["fp32+filter"]["median"] > FILTER_TARGET
    assert r["failures"] == []
    text = "\n".join(table_lines(r))
    assert "| `ghostbox run`, int8 ONNX | 16.20 (16.00-16.50) |" in text and "| no |" in text


def test_a_failed_round_is_left_out_of_the_ratios_and_reported() -> None:
    r = _recorded()
    runs = {name: list(row["runs"]) for name, row in r["rows"].items()}
    runs["fp32"][1] = {**runs["fp32"][1], "failed": "exit 1, incomplete, 150 of 200 frames"}
    again = summarise(runs, {"ultralytics": [_row(6.4)], "pt": [_row(6.0, failed="exit -9 (timed out)")]},
                      {"startup_frames": 10, "startup_rounds": 1})
    assert again["speedup"]["fp32"]["median"] == pytest.approx((50 / 25 + 49 / 24) / 2)  # round 2 left out
    assert again["failures"] == ["fp32: exit 1, incomplete, 150 of 200 frames", "start-up: exit -9 (timed out)"]
    assert again["startup"]["ghostbox_minus_ultralytics_s"] is None
    assert not next(t for t in again["targets"] if t["what"].startswith("start-up"))["met"]
    assert "Failed runs:" in "\n".join(table_lines(again))


def test_a_run_is_counted_only_when_its_summary_says_complete_with_every_frame(tmp_path: Path) -> None:
    run = ProcessRun(10.0, 15.0, 1.0, 800.0, 0)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "complete", "frames": 200, "boxes": 9,
                                                        "flagged": 1}))
    assert "failed" not in _ghostbox_row(run, tmp_path, 200)
    assert "200 of 201 frames" in _ghostbox_row(run, tmp_path, 201)["failed"]  # a frame short of the video
    assert "exit 1" in _ghostbox_row(ProcessRun(10.0, 15.0, 1.0, 800.0, 1), tmp_path, 200)["failed"]
    (tmp_path / "summary.json").write_text(json.dumps({"status": "incomplete", "frames": 200}))
    assert "incomplete" in _ghostbox_row(run, tmp_path, 200)["failed"]
    assert "no summary" in _ghostbox_row(run, tmp_path / "missing", 200)["failed"]


def test_bench_cpu_runs_every_row_and_writes_its_page(tmp_path: Path, capsys) -> None:
    work, out = tmp_path / "work", tmp_path / "cpu.md"
    code = main(["bench", "cpu", "--frames", "8", "--imgsz", "320", "--rounds", "1", "--startup-frames", "3",
                 "--startup-rounds", "1", "--calibration-frames", "8", "--workdir", str(work), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    page = out.read_text()
    for name, _, _ in ROWS:
        assert f"{name}:" in printed  # one progress line per row
    assert "| `ghostbox run`, int8 ONNX + filter |" in page and "| target (issue 27) |" in page
    assert (work / "model.int8.onnx").is_file() and (work / "int8.filter.safetensors").is_file()
    summary = json.loads((work / "out" / "r0-int8+filter" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 8


def test_a_workdir_made_with_other_settings_is_refused_not_reused(tmp_path: Path) -> None:
    from pipeline.bench.cpu_fast_path import _claim_workdir, _settings_key
    from pipeline.errors import GhostboxError

    key = _settings_key("m.pt", None, 200, 640, None, None, 10)
    assert _claim_workdir(tmp_path, key) is False  # new: the settings are written
    assert _claim_workdir(tmp_path, key) is True   # the same settings: reuse
    with pytest.raises(GhostboxError, match="imgsz 640, not 320"):
        _claim_workdir(tmp_path, {**key, "imgsz": 320})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.onnx").write_text("x")
    with pytest.raises(GhostboxError, match="not empty"):
        _claim_workdir(tmp_path / "other", key)


def test_clips_are_cut_in_one_pass_and_a_short_video_is_named(tmp_path: Path) -> None:
    import cv2

    from pipeline.bench.cpu_fast_path import cut_clips
    from pipeline.bench.stream_speed import write_synth_video
    from pipeline.errors import GhostboxError

    source = write_synth_video(tmp_path / "src.mp4", 12, size=64)
    cut_clips(source, {tmp_path / "a.mp4": 10, tmp_path / "b.mp4": 3})
    counts = [int(cv2.VideoCapture(str(tmp_path / n)).get(cv2.CAP_PROP_FRAME_COUNT)) for n in ("a.mp4", "b.mp4")]
    assert counts == [10, 3]
    with pytest.raises(GhostboxError, match=r"src.mp4': 12 frames, 20 asked for"):
        cut_clips(source, {tmp_path / "c.mp4": 20})
