"""`ghostbox bench tracks`: frame against track verdicts on the world's stream, and tracking's cost, as a page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.bench.track_verdicts import bench_synthetic_cost, synthetic_boxes
from pipeline.cli.main import main
from tests.bench.test_bench_out import _header


def test_bench_tracks_writes_a_page_per_run_with_header_and_cost(tmp_path: Path) -> None:
    out = tmp_path / "bench"  # a folder: tracks.md and tracks.json
    code = main(["bench", "tracks", "--frames", "3,4", "--hysteresis", "0,1", "--cost-frames", "12",
                 "--objects", "5", "--out", str(out)])
    assert code == 0
    text = (out / "tracks.md").read_text()
    date, cpu, cores, gpu, ram, commit, command = _header(text).groups()
    assert int(cores) >= 1 and float(ram) > 0 and commit
    for flag in ("--frames 3,4", "--hysteresis 0,1", "--cost-frames 12", "--objects 5", f"--out {out}"):
        assert flag in command
    assert "do not edit by hand" in text
    for frames in (3, 4):  # one section per run
        assert f"## {frames} frames: `synth:seed=0,frames={frames}`" in text
    assert text.count("| frame verdict (the filter's flag) |") == 2
    assert text.count("| track verdict, hysteresis 0 |") == 2 and text.count("| track verdict, hysteresis 1 |") == 2
    assert text.count("| the box's own |") == 2
    assert "## Cost with 5 objects" in text
    assert "| tracking + track verdicts |" in text and "| detector (stream frames, same run) |" in text
    result = json.loads((out / "tracks.json").read_text())
    assert [r["frames"] for r in result["runs"]] == [3, 4]
    assert result["made"]["command"] == command
    run = result["runs"][0]
    for row in run["rows"].values():  # counts can never exceed what they are counted among
        assert row["caught"] <= run["hallucinations"] and row["wrongly_flagged"] <= run["id_detections"]
    assert result["cost"]["detect_ms_per_frame"] > 0


def test_synthetic_boxes_stay_in_frame_and_are_tracked() -> None:
    frames = synthetic_boxes(objects=6, frames=30, size=(640, 360))
    assert len(frames) == 30 and all(len(d) == 6 for d in frames)
    xyxy = np.stack([d.xyxy for d in frames])
    assert xyxy[..., 0].min() > -10 and xyxy[..., 2].max() < 650  # bounce off the edges (jitter aside)
    cost = bench_synthetic_cost(objects=6, frames=30)
    assert cost["tracked_fraction"] > 0.8 and cost["tracks"] >= 6
    assert cost["ms_per_frame"]["track_and_verdicts"] >= cost["ms_per_frame"]["verdicts"]
