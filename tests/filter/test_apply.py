"""HallucinationFilter.apply: flag or drop boxes below their class threshold; refuse mismatches."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.calibrate import calibrate
from pipeline.filter.hallucination_filter import HallucinationFilter
from tests.helpers.filter_fixtures import CLASS_NAMES, WORLD, detections, fitted, id_test, ood_hidden

FINGERPRINT = {"weights_sha256": "0123456789ab" + "c" * 52, "imgsz": 320, "feature_dim": 32}


def _filter(policy: str = "flag", name: str = "mahalanobis") -> HallucinationFilter:
    scorer = fitted(name)
    cal = calibrate(scorer, WORLD.id_boxes(800, seed=50), class_names=CLASS_NAMES, shape="per-bin")
    return HallucinationFilter(scorer, cal, CLASS_NAMES, FINGERPRINT, policy=policy)


def _mixed() -> Detections:
    return detections(Detections.merge([id_test()[:40], ood_hidden()[:40]]))


def test_flag_policy_marks_boxes_below_their_class_threshold():
    filt = _filter("flag")
    dets = _mixed()
    out = filt.apply(dets)
    assert len(out) == len(dets)
    score, threshold, flag = out.data["score"], out.data["threshold"], out.data["hallucination"]
    assert score.dtype == np.float32 and threshold.dtype == np.float32 and flag.dtype == bool
    np.testing.assert_array_equal(threshold, filt.thresholds.per_class[dets.class_id].astype(np.float32))
    expected = filt.scorer.score(Detections.merge([dets])) < filt.thresholds.per_class[dets.class_id]
    np.testing.assert_array_equal(flag, expected)
    assert flag[40:].mean() > 0.9 and flag[:40].mean() < 0.2  # OOD half flagged, ID half kept
    record = out.to_record()
    assert {"score", "threshold", "hallucination"} <= set(record["boxes"][0])


def test_a_drop_filter_still_returns_every_box_flagged():
    """The filter only scores and flags; dropping is the outputs' (pipeline/sinks/policy.py)."""
    dets = _mixed()
    flagged = _filter("flag").apply(dets)
    under_drop = _filter("drop").apply(dets)
    assert len(under_drop) == len(dets) and flagged.data["hallucination"].any()
    np.testing.assert_array_equal(under_drop.xyxy, dets.xyxy)
    np.testing.assert_array_equal(under_drop.data["hallucination"], flagged.data["hallucination"])
    assert (under_drop.source, under_drop.frame) == (dets.source, dets.frame)


def test_empty_frame_passes_through_with_empty_fields():
    out = _filter("drop").apply(Detections.empty(4, 32, CLASS_NAMES))
    assert len(out) == 0 and out.data["score"].shape == (0,) and out.data["hallucination"].dtype == bool


def test_mismatched_detections_are_refused():
    filt = _filter()
    wrong_d = detections(Detections.from_head(np.zeros((2, 48)), np.zeros((2, 4)), [0, 1], [0, 0]))
    with pytest.raises(GhostboxError, match="D=48 box features; the filter was fitted on 4 classes and D=32"):
        filt.apply(wrong_d)
    wrong_nc = detections(Detections.from_head(np.zeros((2, 32)), np.zeros((2, 3)), [0, 1], [0, 0]), CLASS_NAMES[:3])
    with pytest.raises(GhostboxError, match="detections have 3 classes"):
        filt.apply(wrong_nc)
    renamed = detections(id_test()[:3], ("a", "b", "c", "d"))
    with pytest.raises(GhostboxError, match="class names"):
        filt.apply(renamed)
    nan = id_test()[:3]
    feats = nan.box_features.copy()
    feats[1] = np.inf
    with pytest.raises(GhostboxError, match="inf values in 1 of 3 rows"):
        filt.apply(detections(Detections.from_head(feats, nan.logits, nan.class_id, nan.level)))


def test_logit_only_filter_accepts_any_feature_dim():
    filt = _filter(name="energy")
    boxes = id_test()[:5]
    other_d = detections(Detections.from_head(np.zeros((5, 80)), boxes.logits, boxes.class_id, boxes.level))
    assert len(filt.apply(other_d)) == 5


def test_check_detector_names_the_differing_keys():
    filt = _filter()
    filt.check_detector(dict(FINGERPRINT))  # same detector: fine
    other = {**FINGERPRINT, "weights_sha256": "fedcba987654" + "0" * 52, "imgsz": 640}
    with pytest.raises(GhostboxError) as err:
        filt.check_detector(other)
    text = str(err.value)
    assert "weights_sha256 0123456789ab vs fedcba987654" in text and "imgsz 320 vs 640" in text
    assert "feature_dim" not in text
    with pytest.raises(GhostboxError, match="end2end <absent> vs True"):
        filt.check_detector({**FINGERPRINT, "end2end": True})


def test_constructor_validates():
    scorer = fitted("energy")
    cal = calibrate(scorer, id_test())
    with pytest.raises(GhostboxError, match="policy: expected one of flag, drop"):
        HallucinationFilter(scorer, cal, CLASS_NAMES, {}, policy="hide")
    with pytest.raises(GhostboxError, match="3 class names for a scorer of 4 classes"):
        HallucinationFilter(scorer, cal, CLASS_NAMES[:3], {})
    from pipeline.filter.registry import create

    with pytest.raises(GhostboxError, match="not fitted"):
        HallucinationFilter(create("knn"), cal, CLASS_NAMES, {})


def test_fit_splits_fits_and_calibrates():
    boxes = WORLD.id_boxes(2000, seed=51)
    filt = HallucinationFilter.fit("knn", BoxSet(boxes), CLASS_NAMES, FINGERPRINT, params={"k": 10}, seed=3)
    assert filt.metadata["fit_boxes"] + filt.metadata["calibration_boxes"] == 2000
    assert filt.thresholds.num_boxes == filt.metadata["calibration_boxes"]
    out = filt.apply(detections(WORLD.id_boxes(400, seed=52)))
    assert 0.9 <= 1 - out.data["hallucination"].mean() <= 1.0  # ~95% of fresh ID boxes kept
