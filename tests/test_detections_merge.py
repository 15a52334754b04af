"""`Detections` as a box set over many frames: merged fields stay in step, the head-only
constructor reads confidences from the logits, and validation names the field and the count."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from tests.helpers.filter_fixtures import WORLD, detections


def test_merge_stacks_frames_and_normalises_dtypes():
    a, b = WORLD.id_boxes(5, seed=10), WORLD.id_boxes(7, seed=11)
    boxes = Detections.merge([detections(a), detections(b)])
    assert len(boxes) == 12 and boxes.feature_dim == 32 and boxes.num_classes == 4
    np.testing.assert_array_equal(boxes.box_features, np.concatenate([a.box_features, b.box_features]))
    np.testing.assert_array_equal(boxes.level, np.concatenate([a.level, b.level]))
    np.testing.assert_array_equal(boxes.xyxy, np.concatenate([detections(a).xyxy, detections(b).xyxy]))
    assert (boxes.box_features.dtype, boxes.logits.dtype, boxes.class_id.dtype, boxes.level.dtype) == \
        (np.float32, np.float32, np.int64, np.int8)
    assert boxes.class_names == detections(a).class_names


def test_merge_keeps_data_and_crops_only_when_every_part_has_them():
    a, b = detections(WORLD.id_boxes(2, seed=1)), detections(WORLD.id_boxes(3, seed=2))
    crop = np.zeros((2, 2, 3), np.uint8)
    a = a.with_data(score=np.arange(2.0), extra=np.ones(2)).with_meta(crops=[crop] * 2)
    b = b.with_data(score=np.arange(3.0)).with_meta(crops=[crop] * 3)
    both = Detections.merge([a, b])
    assert set(both.data) == {"score"} and both.data["score"].tolist() == [0, 1, 0, 1, 2]
    assert both.crops is not None and len(both.crops) == 5
    assert Detections.merge([a, b.with_meta(crops=None)]).crops is None


def test_from_head_confidence_is_the_sigmoid_of_the_class_logit():
    logits = np.array([[2.0, -1.0], [0.0, 3.0]], np.float32)
    boxes = Detections.from_head(np.ones((2, 4)), logits, [0, 0], [0, 1])
    np.testing.assert_allclose(boxes.confidence, 1 / (1 + np.exp([-2.0, 0.0])), rtol=1e-6)
    assert boxes.xyxy.shape == (2, 4) and not boxes.xyxy.any()


def test_slicing_keeps_fields_together():
    boxes = WORLD.id_boxes(20, seed=12)
    mask = boxes.class_id == 1
    sub = boxes[mask]
    assert len(sub) == mask.sum()
    np.testing.assert_array_equal(sub.logits, boxes.logits[mask])
    np.testing.assert_array_equal(sub.level, boxes.level[mask])
    assert len(boxes[3]) == 1 and boxes[3].class_id[0] == boxes.class_id[3]
    np.testing.assert_array_equal(boxes[[4, 2]].box_features, boxes.box_features[[4, 2]])
    assert len(boxes[2:5]) == 3
    with pytest.raises(GhostboxError, match="boolean mask has 3 values for 20 boxes"):
        boxes[np.array([True, False, True])]


def test_merge_refuses_mixed_dims_and_nothing():
    a = WORLD.id_boxes(3)
    other = Detections.from_head(np.zeros((2, 16)), np.zeros((2, 4)), [0, 1], [0, 0])
    with pytest.raises(GhostboxError, match="differ in"):
        Detections.merge([a, other])
    with pytest.raises(GhostboxError, match="no detections given"):
        Detections.merge([])


@pytest.mark.parametrize("field,value,kind", [("box_features", np.nan, "NaN"), ("box_features", np.inf, "inf"),
                                              ("logits", -np.inf, "inf")])
def test_validate_names_field_and_bad_row_count(field, value, kind):
    boxes = WORLD.id_boxes(10, seed=13)
    arr = getattr(boxes, field).copy()
    arr[[2, 5], 1] = value
    arr[5, 3] = value  # two bad values in one row still count as one row
    parts = {"box_features": boxes.box_features, "logits": boxes.logits, field: arr}
    bad = Detections.from_head(parts["box_features"], parts["logits"], boxes.class_id, boxes.level)
    with pytest.raises(GhostboxError, match=rf"Detections\.{field}: {kind} values in 2 of 10 rows"):
        bad.validate()


def test_shape_and_value_errors_name_the_field():
    with pytest.raises(GhostboxError, match=r"Detections\.logits: expected shape \(4, nc\), got \(3, 2\)"):
        Detections.from_head(np.zeros((4, 8)), np.zeros((3, 2)), np.zeros(4), np.zeros(4))
    with pytest.raises(GhostboxError, match=r"Detections\.box_features: expected shape \(2, D\)"):
        Detections.from_head(np.zeros(2), np.zeros((2, 2)), np.zeros(2), np.zeros(2))
    with pytest.raises(GhostboxError, match=r"Detections\.class_id: expected shape \(N\)"):
        Detections.from_head(np.zeros((4, 8)), np.zeros((4, 2)), np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(GhostboxError, match=r"Detections\.logits: cannot read as float32"):
        Detections.from_head(np.zeros((1, 8)), [["a", "b"]], [0], [0])
    with pytest.raises(GhostboxError, match=r"class_id: value 2 outside 0\.\.1"):
        Detections.from_head(np.zeros((4, 8)), np.zeros((4, 2)), [0, 1, 2, 0], np.zeros(4)).validate()
    with pytest.raises(GhostboxError, match=r"feature dimension D is 0"):
        Detections.from_head(np.zeros((1, 0)), np.zeros((1, 2)), [0], [0]).validate()
