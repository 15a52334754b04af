"""`ghostbox detect` writes the documented JSONL schema and annotated images/videos."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pipeline.detect.detector import Detector


@pytest.fixture(scope="module")
def media(tmp_path_factory, frames):
    root = tmp_path_factory.mktemp("media")
    for i, frame in enumerate(frames):
        cv2.imwrite(str(root / f"img{i}.png"), frame)
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(6):
        writer.write(frames[i % 2])
    writer.release()
    return root


def run_detect(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "detect", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_images_and_video(media, checkpoints, tmp_path):
    out = tmp_path / "out"
    proc = run_detect(media / "img0.png", media / "clip.mp4", "--model", checkpoints["yolov8"], "--out", out,
                      "--imgsz", 320, "--conf", 0.05, "--batch", 4)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(records) == 1 + 6
    assert [r["frame"] for r in records] == [0, 0, 1, 2, 3, 4, 5]
    assert records[0]["source"].endswith("img0.png") and records[1]["source"].endswith("clip.mp4")
    for record in records:
        assert set(record) == {"source", "frame", "width", "height", "boxes"}
        assert (record["width"], record["height"]) == (320, 240)
        for box in record["boxes"]:
            assert set(box) == {"xyxy", "conf", "cls", "label"}
            x1, y1, x2, y2 = box["xyxy"]
            assert 0 <= x1 <= x2 <= 320 and 0 <= y1 <= y2 <= 240
            assert box["conf"] >= 0.05 and box["label"] in ("pedestrian", "car", "traffic light", "traffic sign")
    assert sum(len(r["boxes"]) for r in records) > 0
    # the JSONL equals the API's detections
    [api] = Detector(model=str(checkpoints["yolov8"]), imgsz=320, conf=0.05, device="cpu").detect(
        [cv2.imread(str(media / "img0.png"))])
    assert len(api) == len(records[0]["boxes"])
    annotated = out / "annotated"
    image = cv2.imread(str(annotated / "img0.jpg"))
    assert image is not None and image.shape == (240, 320, 3)
    assert not np.array_equal(image, cv2.imread(str(media / "img0.png")))  # boxes were drawn
    capture = cv2.VideoCapture(str(annotated / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    capture.release()


def test_folder_glob_and_no_annotate(media, checkpoints, tmp_path):
    out = tmp_path / "o2"
    proc = run_detect(str(media / "img*.png"), "--model", checkpoints["yolo11"], "--out", out, "--no-annotate")
    assert proc.returncode == 0, proc.stderr
    assert len((out / "detections.jsonl").read_text().splitlines()) == 3
    assert not (out / "annotated").exists()
    proc = run_detect(media, "--model", checkpoints["yolo11"], "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert len((out / "detections.jsonl").read_text().splitlines()) == 3 + 6


def test_config_file_sets_detector(media, checkpoints, tmp_path):
    config = tmp_path / "detect.yaml"
    config.write_text(f"detector:\n  model: {checkpoints['yolov8']}\n  conf: 0.9999\n  imgsz: 320\n")
    out = tmp_path / "o3"
    proc = run_detect(media / "img0.png", "--config", config, "--out", out)
    assert proc.returncode == 0, proc.stderr
    strict = json.loads((out / "detections.jsonl").read_text())
    proc = run_detect(media / "img0.png", "--config", config, "--conf", "0.01", "--out", out)  # flags win
    loose = json.loads((out / "detections.jsonl").read_text())
    assert len(loose["boxes"]) > len(strict["boxes"])
