"""Importing, predicting, training and exporting open no network connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np

GUARD = Path(__file__).parent / "helpers" / "socket_guard.py"


def tiny_yolo_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(4):
            image = np.full((64, 64, 3), 90, np.uint8)
            x, y = int(rng.integers(5, 30)), int(rng.integers(5, 30))
            cv2.rectangle(image, (x, y), (x + 24, y + 24), (0, 0, 255), -1)
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), image)
            label = f"0 {(x + 12) / 64} {(y + 12) / 64} {24 / 64} {24 / 64}\n"
            (root / "labels" / split / f"{i}.txt").write_text(label)
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: box\n")
    return data


def test_no_network_during_import_predict_train_export(tmp_path, checkpoints, frames):
    data = tiny_yolo_dataset(tmp_path / "ds")
    frame_path = tmp_path / "frame.jpg"
    cv2.imwrite(str(frame_path), frames[0])
    code = textwrap.dedent(f"""
        import cv2, pipeline
        from pipeline.detect.detector import Detector
        from pipeline.detect.onnx_export import export_onnx
        from pipeline.ultralytics_env import import_ultralytics
        det = Detector(model={str(checkpoints["yolov8"])!r}, imgsz=320, device="cpu")
        det.detect([cv2.imread({str(frame_path)!r})])
        onnx_path = export_onnx({str(checkpoints["yolov8"])!r}, {str(tmp_path / "m.onnx")!r})
        Detector(model=str(onnx_path), device="cpu").detect([cv2.imread({str(frame_path)!r})])
        import_ultralytics()
        from ultralytics import YOLO
        YOLO("yolov8n.yaml").train(data={str(data)!r}, epochs=1, imgsz=64, batch=4, workers=0, device="cpu",
                                   project={str(tmp_path / "runs")!r}, name="t", exist_ok=True, plots=True,
                                   verbose=False, amp=False)
        print("GUARDED-RUN-OK")
    """)
    log = tmp_path / "network.jsonl"
    env = {**os.environ, "GHOSTBOX_HOME": str(tmp_path / "home")}
    env.pop("GHOSTBOX_OFFLINE", None)  # ghostbox must be offline by itself, not because the test said so
    proc = subprocess.run([sys.executable, str(GUARD), str(log), "--", code], capture_output=True, text=True,
                          timeout=600, env=env)
    assert "GUARDED-RUN-OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    attempts = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert attempts == [], f"network attempts: {attempts[:5]}"
    config_dir = tmp_path / "home" / "ultralytics" / "Ultralytics"
    assert (config_dir / "Arial.ttf").is_file()  # fonts come from matplotlib, not the web


def test_guard_catches_a_connection(tmp_path):
    """The guard itself works: a connect to a public address is recorded."""
    log = tmp_path / "network.jsonl"
    code = ("import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=0.1)\n"
            "except OSError:\n    pass\n")
    subprocess.run([sys.executable, str(GUARD), str(log), "--", code], check=True, timeout=60)
    assert "192.0.2.1" in log.read_text()
