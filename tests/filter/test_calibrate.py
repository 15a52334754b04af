"""Per-class thresholds keep the target share of ID boxes; rare classes fall back to global."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.calibrate import Calibration, calibrate
from pipeline.filter.splits import split_fit_calibration
from tests.helpers.filter_fixtures import CLASS_NAMES, WORLD, fitted


def _calibration_boxes() -> Detections:
    boxes = WORLD.id_boxes(2000, seed=40)
    rare = np.flatnonzero(boxes.class_id == 2)[:7]  # class 2: only 7 calibration boxes
    return boxes[(boxes.class_id != 2) | np.isin(np.arange(len(boxes)), rare)]


@pytest.mark.parametrize("name", ["knn", "energy", "mahalanobis"])
@pytest.mark.parametrize("tpr", [0.95, 0.8])
def test_thresholds_flag_the_nominal_share_of_new_id_boxes_per_class(name, tpr):
    scorer = fitted(name)
    boxes = _calibration_boxes()
    cal = calibrate(scorer, boxes, tpr=tpr, min_boxes=20, class_names=CLASS_NAMES, conf_edges=(), shape="per-bin")
    scores = scorer.score(boxes)
    fresh = WORLD.id_boxes(6000, seed=41)
    fresh_scores = scorer.score(fresh)
    for c in (0, 1, 3):
        mine = np.sort(scores[boxes.class_id == c])
        k = max(1, round((1 - tpr) * (len(mine) + 1)))
        assert cal.per_class[c] == mine[k - 1]  # the conformal order statistic
        assert not cal.classes[c].fell_back and cal.classes[c].num_boxes == len(mine)
        assert cal.classes[c].kept_fraction == pytest.approx(np.mean(mine >= cal.per_class[c]))
        # new boxes of the class are flagged at about the nominal rate
        new = fresh_scores[fresh.class_id == c]
        assert abs(np.mean(new < cal.per_class[c]) - (1 - tpr)) < 0.035


def test_rare_class_falls_back_to_global_threshold():
    cal = calibrate(fitted("knn"), _calibration_boxes(), min_boxes=20, class_names=CLASS_NAMES)
    rare = cal.classes[2]
    assert rare.fell_back and rare.num_boxes == 7 and rare.name == "sign"
    assert cal.per_class[2] == cal.global_threshold
    assert "global (fewer than 20 boxes)" in cal.summary()
    again = Calibration.from_json(cal.to_json())
    np.testing.assert_array_equal(again.per_class, cal.per_class)
    assert again.classes == cal.classes


def test_class_without_calibration_boxes_is_reported():
    boxes = _calibration_boxes()
    cal = calibrate(fitted("energy"), boxes[boxes.class_id != 1])
    assert cal.classes[1].num_boxes == 0 and cal.classes[1].fell_back and cal.classes[1].kept_fraction is None


def test_calibrate_refuses_empty_and_bad_settings():
    with pytest.raises(GhostboxError, match="no ID calibration boxes"):
        calibrate(fitted("energy"), Detections.empty(4, 32))
    with pytest.raises(GhostboxError, match="tpr must be in"):
        calibrate(fitted("energy"), _calibration_boxes(), tpr=1.5)


def test_split_is_seeded_disjoint_and_per_class():
    boxes = WORLD.id_boxes(1000, seed=41)
    fit_a, cal_a = split_fit_calibration(boxes, 0.3, seed=5)
    fit_b, cal_b = split_fit_calibration(boxes, 0.3, seed=5)
    _, cal_c = split_fit_calibration(boxes, 0.3, seed=6)
    np.testing.assert_array_equal(cal_a.box_features, cal_b.box_features)
    assert not np.array_equal(cal_a.box_features, cal_c.box_features)
    assert len(fit_a) + len(cal_a) == len(boxes)
    fit_rows = {r.tobytes() for r in fit_a.box_features}
    assert not any(r.tobytes() in fit_rows for r in cal_a.box_features)
    for c in range(4):
        total = (boxes.class_id == c).sum()
        assert (cal_a.class_id == c).sum() == round(total * 0.3)
    single = boxes[:1]
    fit_s, cal_s = split_fit_calibration(single, 0.5)
    assert len(fit_s) == 1 and len(cal_s) == 0
