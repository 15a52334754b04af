"""Bad input gives one clear line naming the problem, and a non-zero exit code."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from pipeline.detect.detector import Detector
from pipeline.errors import GhostboxError


@pytest.fixture(scope="module")
def detector(checkpoints):
    return Detector(model=str(checkpoints["yolov8"]), imgsz=320, device="cpu")


def ghostbox(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_missing_model_file(tmp_path):
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    assert_one_line_error(ghostbox("detect", image, "--model", tmp_path / "nope.pt", "--out", tmp_path / "o"),
                          "nope.pt", "not found")


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04this is not a checkpoint")
    with pytest.raises(GhostboxError, match="bad.pt.*not a readable Ultralytics checkpoint"):
        Detector(model=str(bad), device="cpu")
    truncated = tmp_path / "bad.onnx"
    truncated.write_bytes(b"\x08\x07garbage")
    with pytest.raises(GhostboxError, match="bad.onnx.*not a readable ONNX model"):
        Detector(model=str(truncated), device="cpu")


@pytest.mark.parametrize("arch,task", [("yolov8n-seg.yaml", "segment"), ("yolov8n-cls.yaml", "classify"),
                                       ("yolov8n-pose.yaml", "pose")])
def test_non_detection_checkpoints_are_refused(tmp_path, arch, task):
    from pipeline.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics import YOLO

    model = YOLO(arch)
    path = tmp_path / f"{task}.pt"
    torch.save({"model": model.model, "train_args": {"task": task}}, path)
    with pytest.raises(GhostboxError, match=f"'{task}'"):
        Detector(model=str(path), device="cpu")
    with pytest.raises(GhostboxError, match=f"'{task}' architecture"):
        Detector(model=arch, device="cpu")


def test_frames_with_wrong_dtype_or_channels(detector):
    with pytest.raises(GhostboxError, match="frame 0: expected dtype uint8"):
        detector.detect([np.zeros((32, 32, 3), np.float32)])
    with pytest.raises(GhostboxError, match=r"frame 1: expected shape \(H, W, 3\)"):
        detector.detect([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)])
    with pytest.raises(GhostboxError, match="frame 0: expected shape"):
        detector.detect([np.zeros((32, 32, 4), np.uint8)])
    with pytest.raises(GhostboxError, match="frame 0: expected a numpy array"):
        detector.detect(["image.jpg"])
    with pytest.raises(GhostboxError, match="frame 0: empty image"):
        detector.detect([np.zeros((0, 32, 3), np.uint8)])


def test_empty_batch(detector):
    with pytest.raises(GhostboxError, match="empty batch"):
        detector.detect([])


def test_unreadable_image_named(tmp_path, checkpoints):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    assert_one_line_error(ghostbox("detect", bad, "--model", checkpoints["yolov8"], "--out", tmp_path / "o"),
                          "broken.jpg", "not a readable image")


def test_unreadable_image_in_folder_is_reported_and_others_kept(tmp_path, checkpoints):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"ok{i}.jpg"), np.full((64, 64, 3), 80 * i, np.uint8))
    (folder / "zz_broken.jpg").write_bytes(b"")
    proc = ghostbox("detect", folder, "--model", checkpoints["yolov8"], "--out", tmp_path / "o")
    # it ran, but not over everything: exit 1, the file named on its own line, then what was written
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "error:" not in proc.stderr
    assert f"ghostbox detect: '{folder / 'zz_broken.jpg'}': not a readable image" in proc.stderr
    [summary] = [line for line in proc.stderr.splitlines() if "incomplete:" in line]
    assert "1 unreadable file(s) skipped" in summary and "zz_broken.jpg" in summary
    lines = (tmp_path / "o" / "detections.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the readable images were not lost


def test_bad_flag_values(tmp_path, checkpoints):
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    assert_one_line_error(ghostbox("detect", image, "--model", checkpoints["yolov8"], "--conf", "3", "--out", tmp_path),
                          "conf")
    assert_one_line_error(
        ghostbox("detect", image, "--model", checkpoints["yolov8"], "--device", "tpu", "--out", tmp_path), "device"
    )
    assert_one_line_error(ghostbox("detect", tmp_path / "nothing.jpg", "--out", tmp_path), "nothing.jpg")


def test_bad_config_file(tmp_path, checkpoints):
    config = tmp_path / "c.yaml"
    config.write_text("detector:\n  conf: high\n")
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    assert_one_line_error(
        ghostbox("detect", image, "--model", checkpoints["yolov8"], "--config", config, "--out", tmp_path),
        "c.yaml", "conf", "high",
    )
    config.write_text("detector: [1, 2\n")
    assert_one_line_error(ghostbox("detect", image, "--config", config, "--out", tmp_path), "c.yaml", "not valid YAML")
