"""Shared synthetic data for the filter tests: one toy world, fitted scorers cached per session."""

from __future__ import annotations

from functools import cache

import numpy as np

from pipeline.detections import Detections
from pipeline.filter.registry import create
from pipeline.filter.scorer import Scorer
from pipeline.filter.toy_boxes import ToyBoxWorld

CLASS_NAMES = ("car", "pedestrian", "sign", "light")
WORLD = ToyBoxWorld(num_classes=4, feature_dim=32, num_levels=3, seed=0)
FEATURE_SCORES = ("mahalanobis", "knn", "vim", "bam", "oe", "fusion")  # see features the logits cannot
LOGIT_SCORES = ("msp", "maxlogit", "energy")
# Fast settings where the defaults are meant for real data sizes.
TEST_PARAMS: dict[str, dict] = {"knn": {"k": 20}, "abet": {"epochs": 8}, "crop": {"epochs": 8, "width": 8, "size": 16}}


@cache
def fit_boxes() -> Detections:
    return WORLD.id_boxes(3000, seed=1)


@cache
def id_test() -> Detections:
    return WORLD.id_boxes(600, seed=3)


@cache
def ood_far() -> Detections:
    return WORLD.ood_boxes(600, seed=4, mode="far")


@cache
def ood_hidden() -> Detections:
    return WORLD.ood_boxes(600, seed=5, mode="hidden", distance=1.0)


@cache
def outlier_boxes() -> Detections:
    """Outliers for scores that learn from them (oe): new samples of the test sets' OOD kinds.

    A head fitted on outliers learns the kinds it is shown; test_filter_oe.py covers what it
    does with kinds it has not seen.
    """
    return Detections.merge([WORLD.ood_boxes(600, seed=4, mode="far", sample_seed=104),
                          WORLD.ood_boxes(600, seed=5, mode="hidden", distance=1.0, sample_seed=105)])


@cache
def fitted(name: str) -> Scorer:
    scorer = create(name, **TEST_PARAMS.get(name, {}))
    return scorer.fit(fit_boxes(), outlier_boxes() if scorer.needs_outliers else None)


def detections(boxes: Detections, class_names: tuple[str, ...] = CLASS_NAMES) -> Detections:
    n = len(boxes)
    xy = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    return Detections(
        xyxy=np.hstack([xy, xy + 10]), confidence=np.full(n, 0.5, np.float32), class_id=boxes.class_id,
        logits=boxes.logits, box_features=boxes.box_features, level=boxes.level, class_names=class_names,
        image_size=(640, 480), source="toy", frame=3,
    )
