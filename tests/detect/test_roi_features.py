"""box_features="head+roi": the head vector plus RoI-aligned neck and backbone features, on both backends."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
import torch
from torchvision.ops import roi_align

from pipeline.bundled import ASSETS, default_model
from pipeline.detect.detector import ROI_GRID, Detector, box_features_for
from pipeline.detect.onnx_export import export_onnx
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.hallucination_filter import HallucinationFilter
from tests.helpers.parity import conf_for, forward_with_hooks


def test_roi_features_are_the_normalised_head_vector_and_pooled_maps():
    # the bundled model, for boxes inside the frame (an untrained one boxes the whole image)
    weights = default_model()
    frame = cv2.resize(cv2.imread(str(sorted((ASSETS / "samples").glob("*.jpg"))[0])), (360, 200))  # letterbox pads
    head = Detector(model=str(weights), device="cpu")
    roi = Detector(model=str(weights), device="cpu", box_features="head+roi")
    [a], [b] = head.detect([frame]), roi.detect([frame])
    np.testing.assert_allclose(a.xyxy, b.xyxy)
    assert len(b) >= 2
    channels = roi.info.roi_channels
    # the head's three inputs, then the backbone's last layer at strides 8, 16, 32 (YOLOv8: layers 4, 6, 9)
    assert roi.info.roi_strides == (8, 16, 32, 8, 16, 32)
    assert roi.backend.model.model[-1]._ghostbox_taps == [4, 6, 9]
    assert roi.feature_dim == head.feature_dim + ROI_GRID**2 * sum(channels)
    assert b.box_features.shape == (len(b), roi.feature_dim)
    d = head.feature_dim
    np.testing.assert_allclose(b.box_features[:, :d], a.box_features / np.linalg.norm(a.box_features, axis=1,
                                                                                       keepdims=True), atol=1e-6)
    # recompute the pooled blocks from the head's inputs and the backbone layers' outputs, captured by hooks
    captured = {}
    model = roi.backend.model
    hooks = [model.model[-1].register_forward_pre_hook(lambda m, args: captured.__setitem__("neck", args[0]))]
    hooks += [model.model[i].register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, out))
              for i in (4, 6, 9)]
    images = roi._letterbox([frame])
    forward_with_hooks(model, images, hooks)
    maps = [*captured["neck"], captured[4], captured[6], captured[9]]
    # the boxes back in letterboxed pixels (same rect letterbox: scale then centre pad)
    h, w = frame.shape[:2]
    gain = min(images.shape[2] / h, images.shape[3] / w)
    pad_x, pad_y = round((images.shape[3] - w * gain) / 2 - 0.1), round((images.shape[2] - h * gain) / 2 - 0.1)
    boxes = torch.from_numpy(b.xyxy).float() * gain + torch.tensor([pad_x, pad_y, pad_x, pad_y])
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
    start = d
    for level, (fmap, stride) in enumerate(zip(maps, roi.info.roi_strides)):
        pooled = roi_align(fmap.float(), rois, (ROI_GRID, ROI_GRID), 1 / stride, 2, aligned=True).flatten(1)
        expected = torch.nn.functional.normalize(pooled, dim=1).numpy()
        width = ROI_GRID**2 * channels[level]
        block = b.box_features[:, start : start + width]
        np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, atol=1e-5)
        # the detector pools the unclipped box; scale_boxes clips, so compare boxes inside the frame
        inside = (b.xyxy[:, :2] > 1).all(1) & (b.xyxy[:, 2] < w - 1) & (b.xyxy[:, 3] < h - 1)
        assert inside.any()
        np.testing.assert_allclose(block[inside], expected[inside], atol=1e-2, err_msg=f"level {level}")
        start += width
    assert start == roi.feature_dim


def test_fingerprints_tell_the_feature_kinds_apart(checkpoints, frames):
    head = Detector(model=str(checkpoints["yolov8"]), imgsz=320, device="cpu", conf=0.01)
    roi = Detector(model=str(checkpoints["yolov8"]), imgsz=320, device="cpu", conf=0.01, box_features="head+roi")
    assert box_features_for(head.fingerprint()) == "head" and box_features_for(roi.fingerprint()) == "head+roi"
    dets = head.detect(frames)
    boxes = Detections.merge(dets)
    filt = HallucinationFilter.fit("mahalanobis", BoxSet(boxes), head.class_names, head.fingerprint(), min_boxes=2)
    with pytest.raises(GhostboxError, match="feature_dim 32 vs|feature_dim .* vs"):
        filt.check_detector(roi.fingerprint())


def test_onnx_export_carries_the_roi_maps(checkpoints, frames, tmp_path):
    weights = checkpoints["yolov8"]
    path = export_onnx(weights, tmp_path / "m.onnx", imgsz=320)
    conf = conf_for(weights, frames[0], False)
    pt = Detector(model=str(weights), imgsz=320, conf=conf, device="cpu", box_features="head+roi")
    ox = Detector(model=str(path), imgsz=320, conf=conf, device="cpu", box_features="head+roi")
    assert ox.fingerprint() == pt.fingerprint()
    for frame in frames[:2]:
        [a], [b] = pt.detect([frame]), ox.detect([frame])
        order_a, order_b = np.lexsort((a.xyxy[:, 0], -a.confidence)), np.lexsort((b.xyxy[:, 0], -b.confidence))
        np.testing.assert_allclose(b.box_features[order_b], a.box_features[order_a], atol=2e-3)
    # an export without the RoI map outputs (older ghostbox) still runs head features, and says why not RoI
    graph = onnx.load(str(path))
    for output in [o for o in graph.graph.output if o.name.startswith("roi")]:
        graph.graph.output.remove(output)
    old = tmp_path / "old.onnx"
    onnx.save(graph, str(old))
    assert len(Detector(model=str(old), imgsz=320, device="cpu", conf=conf).detect([frames[0]])[0]) > 0
    with pytest.raises(GhostboxError, match="re-export"):
        Detector(model=str(old), imgsz=320, device="cpu", box_features="head+roi")
