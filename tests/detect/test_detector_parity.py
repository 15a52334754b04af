"""Boxes, confidences and classes equal Ultralytics' own predict, for every head family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.detect.detector import Detector
from pipeline.ultralytics_env import import_ultralytics
from tests.helpers.parity import assert_same_boxes, conf_for, forward_with_hooks, ultralytics_predict

CASES = [
    ("yolov8", False), ("yolo11", False), ("yolov10", False), ("yolov10", True), ("yolo26", False), ("yolo26", True),
]


@pytest.mark.parametrize("family,end2end", CASES)
def test_same_detections_as_ultralytics(checkpoints, frames, family, end2end):
    weights = checkpoints[family]
    for frame in frames:
        conf = conf_for(weights, frame, end2end)
        detector = Detector(model=str(weights), imgsz=320, conf=conf, device="cpu", end2end=end2end)
        [ours] = detector.detect([frame])
        assert len(ours) >= 5, "the test model should produce boxes to compare"
        assert_same_boxes(ours, *ultralytics_predict(weights, frame, 320, conf, end2end))


@pytest.mark.parametrize("family,end2end", CASES)
def test_logits_features_and_levels_belong_to_the_box(checkpoints, frames, family, end2end):
    conf = conf_for(checkpoints[family], frames[0], end2end, boxes=20)
    detector = Detector(model=str(checkpoints[family]), imgsz=320, conf=conf, device="cpu", end2end=end2end)
    [dets] = detector.detect([frames[0]], crops=True)
    n = len(dets)
    assert n > 0
    assert dets.logits.shape == (n, 4)
    assert dets.box_features.shape == (n, detector.feature_dim)
    assert detector.feature_dim >= 4
    # the confidence is the sigmoid of the logit of the chosen class at the box's anchor
    chosen = dets.logits[np.arange(n), dets.class_id]
    np.testing.assert_allclose(torch.sigmoid(torch.from_numpy(chosen)).numpy(), dets.confidence, atol=1e-5)
    if not end2end:  # NMS heads pick the best class per anchor
        np.testing.assert_array_equal(dets.logits.argmax(1), dets.class_id)
    assert set(np.unique(dets.level)) <= {0, 1, 2}
    assert np.isfinite(dets.box_features).all() and np.abs(dets.box_features).sum() > 0
    # crops are cut from the frame at the box
    assert len(dets.crops) == n
    for crop, (x1, y1, x2, y2) in zip(dets.crops, dets.xyxy):
        assert crop.dtype == np.uint8 and crop.ndim == 3
        assert abs(crop.shape[1] - (x2 - x1)) <= 2 and abs(crop.shape[0] - (y2 - y1)) <= 2


def test_features_are_the_hidden_output_at_the_anchor(checkpoints, frames):
    """Recompute one box's feature by running the classification branch by hand."""
    frame = frames[0]
    conf = conf_for(checkpoints["yolov8"], frame, False)
    detector = Detector(model=str(checkpoints["yolov8"]), imgsz=320, conf=conf, device="cpu")
    [dets] = detector.detect([frame])
    images = detector._letterbox([frame])
    model = detector.backend.model
    captured = {}
    head = model.model[-1]
    hooks = [head.cv3[i][-2].register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, out))
             for i in range(head.nl)]
    forward_with_hooks(model, images, hooks)
    dense = torch.cat([captured[i].flatten(2) for i in range(head.nl)], -1)[0].T.float().numpy()
    # every box feature is one row of the dense map
    for feature in dets.box_features:
        assert np.abs(dense - feature).max(1).min() < 1e-5


def test_result_does_not_depend_on_batch_mates(checkpoints, frames):
    weights = checkpoints["yolo11"]
    conf = max(conf_for(weights, f, False) for f in frames)
    detector = Detector(model=str(weights), imgsz=320, conf=conf, device="cpu", batch=8)
    together = detector.detect(frames)
    alone = [detector.detect([f])[0] for f in frames]
    assert sum(len(d) for d in together) > 0
    for a, b in zip(together, alone):
        assert_same_boxes(a, b.xyxy, b.confidence, b.class_id)
    assert [d.image_size for d in together] == [(f.shape[1], f.shape[0]) for f in frames]


def test_batch_size_splits_but_keeps_order(checkpoints, frames):
    detector = Detector(model=str(checkpoints["yolov8"]), imgsz=320, device="cpu", batch=1)
    many = frames * 3
    results = detector.detect(many)
    assert len(results) == len(many)
    for frame, dets in zip(many, results):
        assert dets.image_size == (frame.shape[1], frame.shape[0])


def test_conf_iou_and_max_det_are_applied(checkpoints, frames):
    weights = str(checkpoints["yolov8"])
    low, high = conf_for(weights, frames[0], False, 30), conf_for(weights, frames[0], False, 10)
    loose = Detector(model=weights, imgsz=320, conf=low, device="cpu").detect([frames[0]])[0]
    strict = Detector(model=weights, imgsz=320, conf=high, device="cpu").detect([frames[0]])[0]
    capped = Detector(model=weights, imgsz=320, conf=low, max_det=3, device="cpu").detect([frames[0]])[0]
    assert len(loose) > len(strict) and (strict.confidence >= high).all()
    assert len(capped) == 3
    assert_same_boxes(capped, *ultralytics_predict_kw(weights, frames[0], conf=low, max_det=3))
    merged = Detector(model=weights, imgsz=320, conf=low, iou=0.1, device="cpu").detect([frames[0]])[0]
    assert len(merged) < len(loose)
    assert_same_boxes(merged, *ultralytics_predict_kw(weights, frames[0], conf=low, iou=0.1))


def ultralytics_predict_kw(weights, frame, **kwargs):
    import_ultralytics()
    from ultralytics import YOLO

    boxes = YOLO(weights).predict(frame, imgsz=320, verbose=False, device="cpu", **kwargs)[0].boxes
    return boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy().astype(int)
