"""BoxSet: parallel arrays stay in step; validation names the field, the count and the dims."""

from __future__ import annotations

import numpy as np
import pytest
from filter_fixtures import WORLD, detections

from pipeline.errors import GhostboxError
from pipeline.filter.boxes import BoxSet


def test_from_detections_stacks_frames_and_normalises_dtypes():
    a, b = WORLD.id_boxes(5, seed=10), WORLD.id_boxes(7, seed=11)
    boxes = BoxSet.from_detections([detections(a), detections(b)])
    assert len(boxes) == 12 and boxes.feature_dim == 32 and boxes.num_classes == 4
    np.testing.assert_array_equal(boxes.features, np.concatenate([a.features, b.features]))
    np.testing.assert_array_equal(boxes.level, np.concatenate([a.level, b.level]))
    assert (boxes.features.dtype, boxes.logits.dtype, boxes.class_id.dtype, boxes.level.dtype) == \
        (np.float32, np.float32, np.int64, np.int8)


def test_slicing_keeps_fields_together():
    boxes = WORLD.id_boxes(20, seed=12)
    mask = boxes.class_id == 1
    sub = boxes[mask]
    assert len(sub) == mask.sum()
    np.testing.assert_array_equal(sub.logits, boxes.logits[mask])
    np.testing.assert_array_equal(sub.level, boxes.level[mask])
    assert len(boxes[3]) == 1 and boxes[3].class_id[0] == boxes.class_id[3]
    np.testing.assert_array_equal(boxes[[4, 2]].features, boxes.features[[4, 2]])
    assert len(boxes[2:5]) == 3
    with pytest.raises(GhostboxError, match="boolean mask has 3 values for 20 boxes"):
        boxes[np.array([True, False, True])]


def test_concat_refuses_mixed_dims():
    a = WORLD.id_boxes(3)
    other = BoxSet(np.zeros((2, 16)), np.zeros((2, 4)), [0, 1], [0, 0])
    with pytest.raises(GhostboxError, match="differ in"):
        BoxSet.concat([a, other])
    with pytest.raises(GhostboxError, match="no frames"):
        BoxSet.from_detections([])


@pytest.mark.parametrize("field,value,kind", [("features", np.nan, "NaN"), ("features", np.inf, "inf"),
                                              ("logits", -np.inf, "inf")])
def test_validate_names_field_and_bad_row_count(field, value, kind):
    boxes = WORLD.id_boxes(10, seed=13)
    arr = getattr(boxes, field).copy()
    arr[[2, 5], 1] = value
    arr[5, 3] = value  # two bad values in one row still count as one row
    bad = BoxSet(**{**vars(boxes), field: arr})
    with pytest.raises(GhostboxError, match=rf"BoxSet\.{field}: {kind} values in 2 of 10 rows"):
        bad.validate()


def test_shape_errors_name_the_field():
    with pytest.raises(GhostboxError, match=r"BoxSet\.logits: 3 rows, but features has 4 rows"):
        BoxSet(np.zeros((4, 8)), np.zeros((3, 2)), np.zeros(4), np.zeros(4))
    with pytest.raises(GhostboxError, match=r"BoxSet\.features: expected shape \(N, D\)"):
        BoxSet(np.zeros(4), np.zeros((4, 2)), np.zeros(4), np.zeros(4))
    with pytest.raises(GhostboxError, match=r"BoxSet\.class_id: expected shape \(N,\)"):
        BoxSet(np.zeros((4, 8)), np.zeros((4, 2)), np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(GhostboxError, match=r"class_id: value 2 outside 0\.\.1"):
        BoxSet(np.zeros((4, 8)), np.zeros((4, 2)), [0, 1, 2, 0], np.zeros(4)).validate()
