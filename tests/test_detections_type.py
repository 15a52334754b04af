"""The Detections type: fields stay in step under indexing; validation names the field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.errors import GhostboxError


def make(n=5, nc=3, d=8):
    rng = np.random.default_rng(0)
    xy = rng.random((n, 2)) * 100
    return Detections(
        xyxy=np.hstack([xy, xy + 10]),
        confidence=np.linspace(0.3, 0.9, n),
        class_id=np.arange(n) % nc,
        logits=rng.normal(size=(n, nc)),
        box_features=rng.normal(size=(n, d)),
        level=np.arange(n) % 3,
        class_names=("car", "pedestrian", "traffic sign"),
        image_size=(640, 480),
        source="cam0",
        frame=7,
        crops=[np.full((10, 10, 3), i, np.uint8) for i in range(n)],
        data={"score": np.arange(n, dtype=np.float32)},
    )


def test_boolean_mask_slices_every_field_together():
    dets = make()
    kept = dets[dets.confidence > 0.5]
    assert len(kept) == int((dets.confidence > 0.5).sum())
    index = np.flatnonzero(dets.confidence > 0.5)
    np.testing.assert_array_equal(kept.xyxy, dets.xyxy[index])
    np.testing.assert_array_equal(kept.box_features, dets.box_features[index])
    np.testing.assert_array_equal(kept.logits, dets.logits[index])
    np.testing.assert_array_equal(kept.level, dets.level[index])
    np.testing.assert_array_equal(kept.data["score"], index.astype(np.float32))
    assert [int(c[0, 0, 0]) for c in kept.crops] == list(index)
    assert (kept.source, kept.frame, kept.image_size) == ("cam0", 7, (640, 480))


def test_int_slice_and_iteration():
    dets = make()
    assert len(dets[2]) == 1 and dets[2].class_id[0] == dets.class_id[2]
    assert len(dets[1:3]) == 2
    assert [len(d) for d in dets] == [1] * 5
    assert dets.labels[:3] == ["car", "pedestrian", "traffic sign"]


def test_dtypes_are_normalised():
    dets = make()
    assert dets.xyxy.dtype == np.float32 and dets.confidence.dtype == np.float32
    assert dets.class_id.dtype == np.int64 and dets.level.dtype == np.int8
    assert dets.box_features.dtype == np.float32


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("xyxy", np.zeros((5, 3)), "xyxy"),
        ("confidence", np.zeros(4), "confidence"),
        ("logits", np.zeros((4, 3)), "logits"),
        ("box_features", np.zeros(5), "box_features"),
        ("crops", [np.zeros((2, 2, 3), np.uint8)], "crops"),
    ],
)
def test_mismatched_fields_are_rejected(field, value, message):
    dets = make()
    kwargs = {k: getattr(dets, k) for k in ("xyxy", "confidence", "class_id", "logits", "box_features", "level")}
    kwargs[field] = value
    with pytest.raises(GhostboxError, match=message):
        Detections(**kwargs)


def test_with_data_adds_per_box_fields_and_record_carries_them():
    dets = make(n=2).with_data(hallucination=np.array([True, False]), score=np.array([0.1, 0.7]))
    record = dets.to_record()
    json.dumps(record)  # JSON-serialisable: no numpy scalars left
    assert record["source"] == "cam0" and record["frame"] == 7
    assert (record["width"], record["height"]) == (640, 480)
    assert record["boxes"][0]["hallucination"] is True and record["boxes"][1]["score"] == 0.7
    assert set(record["boxes"][0]) >= {"xyxy", "conf", "cls", "label"}
    with pytest.raises(GhostboxError, match="score"):
        dets.with_data(score=np.zeros(3))


def test_empty():
    dets = Detections.empty(4, 16, class_names=("a", "b", "c", "d"), image_size=(10, 20))
    assert len(dets) == 0 and dets.num_classes == 4 and dets.feature_dim == 16
    assert dets.to_record()["boxes"] == []
    assert len(dets[dets.confidence > 0.5]) == 0
