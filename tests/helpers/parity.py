"""Checks shared by the detector tests: boxes equal Ultralytics' own, a conf that leaves N boxes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.detect.detector import Detector
from pipeline.ultralytics_env import import_ultralytics


def ultralytics_predict(weights, frame, imgsz, conf, end2end):
    import_ultralytics()
    from ultralytics import YOLO

    result = YOLO(str(weights)).predict(frame, imgsz=imgsz, conf=conf, verbose=False, device="cpu",
                                        nms=False if end2end else None)[0]
    boxes = result.boxes
    return boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy().astype(int)


def assert_same_boxes(ours, xyxy, conf, cls):
    """One-to-one match: each reference box has a box of ours of the same class within 0.5 px."""
    assert len(ours) == len(xyxy), f"{len(ours)} boxes vs Ultralytics' {len(xyxy)}"
    free = np.ones(len(ours), bool)
    for box, c, k in zip(xyxy, conf, cls):
        dist = np.abs(ours.xyxy - box).max(1)
        dist[~free | (ours.class_id != k)] = np.inf
        j = int(np.argmin(dist))
        assert dist[j] <= 0.5, f"no box of ours within 0.5 px of {box} (closest {dist[j]:.3f})"
        assert abs(ours.confidence[j] - c) <= 1e-4
        free[j] = False


def conf_for(weights, frame, end2end, boxes=15):
    """A threshold that leaves about `boxes` boxes on this frame: untrained test models
    swing too much between frames for one fixed threshold."""
    probe = Detector(model=str(weights), imgsz=320, conf=1e-4, device="cpu", end2end=end2end)
    conf = np.sort(probe.detect([frame])[0].confidence)[::-1]
    return float(conf[boxes - 1] + conf[boxes]) / 2 if len(conf) > boxes else 1e-4


def forward_with_hooks(model: Any, images: Any, hooks: list[Any]) -> None:
    """One forward pass for the hooks to capture what they watch; the hooks are removed after."""
    try:
        with torch.inference_mode():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
