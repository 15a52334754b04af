"""`ghostbox calibrate` on a camera's own clip: --from re-calibration, recorded settings, bad calibration data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.filter.filter_file import read_filter_header
from tests.helpers.stream_helpers import IMGSZ, ghostbox, tiny_filter, tiny_model, video


def test_recalibrate_a_filter_on_a_clip_and_refuse_a_lower_conf(tmp_path: Path) -> None:
    out = tmp_path / "cam.filter.safetensors"
    proc = ghostbox("calibrate", "--from", tiny_filter(), "--calibration-id", video(60, seed=5), "--model",
                    tiny_model(), "--imgsz", IMGSZ, "--device", "cpu", "--min-track-frames", 2, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "re-calibrated on" in proc.stdout and "held-out check" in proc.stdout
    header = read_filter_header(out)
    meta = header["metadata"]
    assert meta["detector_conf"] == 0.25 and meta["imgsz"] == IMGSZ and meta["calibration_labelled"] is False
    assert meta["calibration_data"].endswith(".mp4") and "recalibrated_from" in meta
    assert header["calibration"]["conf_edges"] == [0.4, 0.6, 0.8]
    assert header["scorer"] == read_filter_header(tiny_filter())["scorer"]  # the same fitted score
    # applied below the confidence it was calibrated at: refused, with the fix in the message
    low = ghostbox("detect", video(8), "--model", tiny_model(), "--imgsz", IMGSZ, "--device", "cpu",
                   "--filter", out, "--conf", 0.1, "--out", tmp_path / "det")
    assert low.returncode == 2
    assert "calibrated on boxes at conf >= 0.25" in low.stderr and "--conf 0.1" in low.stderr


def test_a_clip_without_detections_and_missing_flags_get_clear_errors(tmp_path: Path) -> None:
    black = tmp_path / "black.mp4"
    writer = cv2.VideoWriter(str(black), cv2.VideoWriter_fourcc(*"mp4v"), 30, (160, 128))
    for _ in range(20):
        writer.write(np.zeros((128, 160, 3), np.uint8))
    writer.release()
    proc = ghostbox("calibrate", "--from", tiny_filter(), "--calibration-id", black, "--model", tiny_model(),
                    "--imgsz", IMGSZ, "--device", "cpu", "--conf", 0.9, "--out", tmp_path / "x.filter.safetensors")
    assert proc.returncode == 2 and "no detections at conf 0.9 in 20 frames" in proc.stderr
    assert not (tmp_path / "x.filter.safetensors").exists()
    proc = ghostbox("calibrate", "--from", tiny_filter(), "--out", tmp_path / "y.filter.safetensors")
    assert proc.returncode == 2 and "--calibration-id" in proc.stderr
    proc = ghostbox("calibrate", "--out", tmp_path / "z.filter.safetensors")
    assert proc.returncode == 2 and "--id SPEC and --method" in proc.stderr
