"""`ghostbox run` and `ghostbox demo` end to end: real processes, a tiny model, short videos."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.stream_helpers import (
    assert_exactly_once_in_order,
    base_config,
    by_stream,
    ended_run,
    free_ports,
    ghostbox,
    guard_leftovers,
    image_folder,
    records,
    short_dir,
    stage_processes,
    stage_processes_since,
    start_ghostbox,
    tiny_filter,
    tiny_model,
    video,
    video_frame_count,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def run_dir():
    path, start = short_dir(), time.time()
    yield path
    # give a finished run's stages a moment to go, then kill whatever is left: a hang fails, never blocks CI
    wait_for(lambda: not stage_processes_since(start), 10)
    leftovers = guard_leftovers(start, str(path))
    assert not leftovers, f"processes outlived the run: {leftovers}"


def test_lossless_two_sources_two_workers_filter_and_fan_out(tmp_path: Path, run_dir: Path) -> None:
    clip, folder = video(40), image_folder(6)
    out, copy = tmp_path / "out", tmp_path / "copy"
    config = base_config(out, [{"id": "clip", "uri": str(clip)}, {"id": "stills", "uri": str(folder)}], run_dir,
                         workers={"count": 2}, filter={"path": str(tiny_filter())},
                         sinks=[{"name": "out", "out": str(out)},
                                {"name": "copy", "out": str(copy), "video": False, "crops": False,
                                 "calibration_clip_frames": 25}])
    proc = ghostbox("run", write_config(tmp_path / "graph.yaml", config), timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for folder_out in (out, copy):  # every sink gets every frame, once, in order
        assert_exactly_once_in_order(records(folder_out), {"clip": 40, "stills": 6})
    rows = records(out)
    streams = by_stream(rows)
    assert [r["frame"] for r in streams["clip"]] == list(range(40))
    assert all(r["source"] == str(clip) for r in streams["clip"])
    assert [Path(r["source"]).name for r in streams["stills"]] == [f"img{i:02d}.jpg" for i in range(6)]
    row = streams["clip"][0]
    assert {"source", "frame", "width", "height", "boxes", "stream", "seq", "t", "latency_ms"} <= set(row)
    assert (row["width"], row["height"]) == (160, 128)
    assert {"capture", "broker_in", "detect_start", "detect_end", "filter_in", "sink_out"} <= set(row["t"])
    boxes = [b for r in rows for b in r["boxes"]]
    assert boxes and all({"xyxy", "conf", "cls", "label", "score", "threshold", "hallucination"} <= set(b)
                         for b in boxes)
    def acted(box: dict) -> bool:  # the verdict the sink acts on: the track's for the (tracked) clip
        return box.get("track_hallucination", box["hallucination"])

    flagged = sum(acted(b) for b in boxes)
    assert all("track_id" in b for r in streams["clip"] for b in r["boxes"])  # video: tracked by default
    assert not any("track_id" in b for r in streams["stills"] for b in r["boxes"])  # a folder of photos: not
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 46 and summary["dropped"] == 0
    assert summary["boxes"] == len(boxes) and summary["flagged"] == flagged > 0
    assert set(summary["latency_ms"]) >= {"p50", "p95", "p99"} and summary["fps"] > 0
    assert summary["per_source"]["clip"]["frames"] == 40 and summary["per_source"]["stills"]["status"] == "ok"
    drift = summary["per_source"]["clip"]["drift"]  # the filter's rolling figures reach the summary
    assert 0.0 <= drift["flag_rate"] <= 1.0 and drift["boxes"] > 0 and isinstance(drift["alarm"], bool)
    index = [json.loads(line) for line in (out / "flagged" / "index.jsonl").read_text().splitlines()]
    assert all((out / "flagged" / c["file"]).is_file() for c in index)
    assert summary["writes"]["crops"]["written"] == len(index)
    # a flagged photo: its crop; a flagged track: a few crops (3 at most), whatever the frames it is flagged in
    assert sum(c["stream"] == "stills" for c in index) == sum(acted(b) for r in streams["stills"] for b in r["boxes"])
    flagged_tracks = {b["track_id"] for r in streams["clip"] for b in r["boxes"] if acted(b) and b["track_id"] >= 0}
    per_track = Counter(c["track_id"] for c in index if c["stream"] == "clip" and c["track_id"] >= 0)
    assert set(per_track) == flagged_tracks and max(per_track.values(), default=0) <= 3
    gallery = [json.loads(line) for line in (out / "tracks" / "index.jsonl").read_text().splitlines()]
    assert gallery and {g["stream"] for g in gallery} == {"clip"} and all(len(g["box_features"]) for g in gallery)
    assert video_frame_count(out / "annotated" / "clip.mp4") == 40
    assert video_frame_count(out / "annotated" / "stills.mp4") == 6
    assert not (copy / "annotated").exists()
    # the copy sink saved each camera's first 25 frames, as captured, for re-calibration
    assert video_frame_count(copy / "calibration" / "clip.avi") == 25
    assert video_frame_count(copy / "calibration" / "stills.avi") == 6
    clips = json.loads((copy / "summary.json").read_text())["outputs"]["calibration_clips"]
    assert clips["clip"]["frames"] == 25 and not (out / "calibration").exists()


def test_live_video_with_a_dead_camera_then_ctrl_c(tmp_path: Path, run_dir: Path) -> None:
    """A live file source plays at 30 fps beside an RTSP camera that never answers; the camera
    keeps reconnecting while the file streams; Ctrl-C then drains and stops everything."""
    out = tmp_path / "out"
    [port] = free_ports(1)
    config = base_config(out, [{"id": "clip", "uri": str(video(60))},
                               {"id": "gate", "uri": f"rtsp://127.0.0.1:{port}/none", "reconnect_initial_s": 0.2,
                                "reconnect_max_s": 1.0}], run_dir, mode="live")
    proc = start_ghostbox("run", write_config(tmp_path / "graph.yaml", config))
    with ended_run(proc, run_dir):
        def clip_source_done() -> bool:
            return bool(records(out)) and not any("source:clip" in " ".join(p.cmdline())
                                                  for p in stage_processes(str(run_dir)))
        assert wait_for(clip_source_done, 90), "the file source did not finish"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "retrying" in stderr  # the camera's reconnect attempts are logged
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["mode"] == "live"
    clip = summary["per_source"]["clip"]
    assert clip["status"] == "ok" and clip["frames"] >= 10
    # every frame the clip had is accounted for: delivered, dropped for being stale, or skipped
    assert clip["frames"] + clip["dropped"] + clip["skipped"] + clip["late"] == 60
    seqs = [r["seq"] for r in by_stream(records(out))["clip"]]
    assert seqs == sorted(set(seqs))  # in order, no repeats
    assert summary["per_source"]["gate"]["frames"] == 0
    assert summary["per_source"]["gate"]["status"] == "interrupted"


def test_demo_scores_against_ground_truth(tmp_path: Path, run_dir: Path) -> None:  # noqa: ARG001 - leftover guard
    out = tmp_path / "demo"
    proc = ghostbox("demo", "--frames", 16, "--model", tiny_model(), "--filter", tiny_filter(), "--imgsz", 160,
                    "--batch", 4, "--out", out, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hallucinations" in proc.stdout and "wrongly flagged" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    demo = summary["demo"]
    assert demo["frames"] == 16 and demo["caught"] <= demo["hallucinations"]
    assert demo["wrongly_flagged"] <= demo["id_detections"] <= demo["detections"]
    assert video_frame_count(out / "annotated" / "street.mp4") == 16
