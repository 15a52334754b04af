"""`ghostbox adapt CLIP --from FILTER`: a frames folder of a street the filter never saw, a clip without tracks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.filter.filter_file import default_filter, load_filter


def _street_frames(folder: Path, seed: int, frames: int) -> Path:
    from pipeline.synth import WorldConfig, render_stream_frame

    folder.mkdir(parents=True)
    world = WorldConfig(seed=seed, stream_frames=frames)
    for i in range(frames):
        cv2.imwrite(str(folder / f"frame-{i:04d}.png"), render_stream_frame(world, i)[0])
    return folder


@pytest.mark.skipif(default_filter() is None, reason="no bundled filter")
def test_adapt_moves_the_thresholds_on_a_new_street_and_records_what_it_did(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = _street_frames(tmp_path / "clip", seed=2, frames=150)
    out = tmp_path / "street2.filter.safetensors"
    bundled = str(default_filter())
    assert main(["adapt", str(clip), "--from", bundled, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "thresholds: drift PSI" in printed and "clip: " in printed
    adapted, original = load_filter(out), load_filter(bundled)
    info = adapted.metadata["adaptation"]
    assert info["mode"] == "thresholds" and info["asked"] == "auto" and info["tracks"] >= 1
    assert adapted.metadata["clip_frames"] == 150 and adapted.metadata["inputs_complete"] is True
    # the same score; its one overall threshold moved by one offset
    assert adapted.thresholds.offset is not None and adapted.metadata["threshold_shape"] == "overall"
    np.testing.assert_allclose(adapted.thresholds.global_threshold,
                               original.thresholds.global_threshold + adapted.thresholds.offset)
    assert adapted.thresholds.shape == "overall"
    if info["conservative"]:
        assert "conservative thresholds written" in printed
    # the review list, then the answers to it: they decide which tracks move the thresholds
    out2 = tmp_path / "answered.filter.safetensors"
    assert main(["adapt", str(clip), "--from", bundled, "--out", str(out2), "--ask", "3"]) == 0
    printed = capsys.readouterr().out
    assert "review list:" in printed
    listed = [line.split() for line in printed.split("review list:", 1)[1].splitlines()[2:] if line.strip()]
    assert 1 <= len(listed) <= 3
    first, *rest = (int(row[0]) for row in listed)
    argv = ["adapt", str(clip), "--from", bundled, "--out", str(out2), "--hallucination", str(first)]
    assert main(argv + (["--real", ",".join(map(str, rest))] if rest else [])) == 0
    answered = load_filter(out2).metadata
    assert answered["reviewed_tracks"] == {"real": len(rest), "hallucination": 1}
    assert "reviewed tracks set the thresholds" in answered["adaptation"]["reason"]
    assert main(["adapt", str(clip), "--from", bundled, "--out", str(out2), "--real", "1,2",
                 "--hallucination", "2"]) == 2
    assert "both --real and --hallucination" in capsys.readouterr().err


@pytest.mark.skipif(default_filter() is None, reason="no bundled filter")
def test_adapt_refuses_a_clip_without_tracks_and_a_half_given_refit(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(6):  # grey frames: nothing to detect, nothing to track
        cv2.imwrite(str(blank / f"{i}.png"), np.full((320, 320, 3), 127, np.uint8))
    bundled = str(default_filter())
    out = tmp_path / "x.filter.safetensors"
    assert main(["adapt", str(blank), "--from", bundled, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no track of >= 5 frames" in err and str(blank) in err and not out.exists()
    assert main(["adapt", str(blank), "--from", bundled, "--out", str(out), "--id", "somewhere"]) == 2
    assert "needs both --id SPEC and --outliers SPEC" in capsys.readouterr().err


@pytest.mark.skipif(default_filter() is None, reason="no bundled filter")
def test_a_truncated_clip_writes_the_filter_but_exits_1_for_calibrate_and_adapt(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.synth import WorldConfig, render_stream_frame

    clip = tmp_path / "cut.avi"
    world = WorldConfig(seed=2, stream_frames=160)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 320))
    for i in range(160):
        writer.write(render_stream_frame(world, i)[0])
    writer.release()
    data = clip.read_bytes()
    clip.write_bytes(data[:len(data) // 2])  # the header still announces 160 frames
    bundled = str(default_filter())
    for argv in (["calibrate", "--from", bundled, "--calibration-id", str(clip)], ["adapt", str(clip), "--from",
                                                                                   bundled]):
        out = tmp_path / f"{argv[0]}.filter.safetensors"
        assert main([*argv, "--out", str(out)]) == 1
        printed = capsys.readouterr().out
        assert "problem: " in printed and "of 160 frames read" in printed and str(clip) in printed
        written = load_filter(out).metadata
        assert written["inputs_complete"] is False
