"""`HallucinationFilter`: a fitted scorer plus per-class thresholds, applied to detections.

    filt = HallucinationFilter.fit("knn", id_boxes, class_names, detector.fingerprint())
    filt.check_detector(detector.fingerprint())
    dets = filt.apply(dets)    # adds score, threshold, hallucination per box

A box is a hallucination when its score (higher = more ID) is below the threshold of its
predicted class. Policy "flag" keeps every box and marks it; "drop" returns only the boxes
that pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.boxes import BoxSet
from pipeline.filter.calibrate import Calibration, calibrate, split_fit_calibration
from pipeline.filter.registry import create
from pipeline.filter.scorer import Scorer

POLICIES = ("flag", "drop")


def _short(value: Any) -> str:
    text = str(value)
    # sha256 digests: the first 12 hex digits are enough to tell two apart
    if len(text) == 64 and all(ch in "0123456789abcdef" for ch in text.lower()):
        return text[:12]
    return text if len(text) <= 60 else text[:57] + "..."


def fingerprint_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """'key: filter value vs detector value' for every key whose values differ (or is missing on one side)."""
    diffs = []
    for key in sorted(set(expected) | set(actual)):
        a, b = expected.get(key, "<absent>"), actual.get(key, "<absent>")
        if a != b:
            diffs.append(f"{key} {_short(a)} vs {_short(b)}")
    return diffs


class HallucinationFilter:
    """Scores boxes with a fitted scorer and flags those below their class's threshold."""

    def __init__(self, scorer: Scorer, thresholds: Calibration, class_names: Sequence[str],
                 fingerprint: dict[str, Any], policy: str = "flag", metadata: dict[str, Any] | None = None) -> None:
        if not scorer.is_fitted:
            raise GhostboxError(f"HallucinationFilter: the {scorer.name} scorer is not fitted")
        if policy not in POLICIES:
            raise GhostboxError(f"policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
        nc = scorer.num_classes
        if len(thresholds.per_class) != nc:
            raise GhostboxError(
                f"HallucinationFilter: {len(thresholds.per_class)} class thresholds for a scorer of {nc} classes")
        if class_names and len(class_names) != nc:
            raise GhostboxError(f"HallucinationFilter: {len(class_names)} class names for a scorer of {nc} classes")
        self.scorer = scorer
        self.thresholds = thresholds
        self.class_names = tuple(class_names)
        self.fingerprint = dict(fingerprint)
        self.policy = policy
        self.metadata = dict(metadata or {})
        self._per_class = np.asarray(thresholds.per_class, np.float64)

    def __repr__(self) -> str:
        return (f"HallucinationFilter({self.scorer!r}, classes={len(self._per_class)}, "
                f"D={self.feature_dim}, policy={self.policy!r})")

    @classmethod
    def fit(cls, method: str, id_boxes: BoxSet, class_names: Sequence[str], fingerprint: dict[str, Any],
            params: dict[str, Any] | None = None, tpr: float = 0.95, min_boxes: int = 20,
            calibration_fraction: float = 0.3, seed: int = 0, policy: str = "flag",
            metadata: dict[str, Any] | None = None, outliers: BoxSet | None = None) -> HallucinationFilter:
        """Split ID boxes (seeded, per class), fit `method` on one part, calibrate on the other.

        `outliers`: boxes on non-ID objects, for scores that learn from them (`oe`); all of
        them go to the fit, the thresholds come from held-out ID boxes only.
        """
        fit_boxes, calib_boxes = split_fit_calibration(id_boxes, calibration_fraction, seed)
        scorer = create(method, **(params or {})).fit(fit_boxes, outliers)
        thresholds = calibrate(scorer, calib_boxes, tpr=tpr, min_boxes=min_boxes, class_names=class_names)
        info = {"fit_boxes": len(fit_boxes), "calibration_boxes": len(calib_boxes), "split_seed": seed,
                **({"outlier_boxes": len(outliers)} if outliers is not None and scorer.needs_outliers else {}),
                **(metadata or {})}
        return cls(scorer, thresholds, class_names, fingerprint, policy=policy, metadata=info)

    @property
    def method(self) -> str:
        return self.scorer.name

    @property
    def feature_dim(self) -> int:
        return int(self.scorer.feature_dim or 0)

    @property
    def num_classes(self) -> int:
        return int(self.scorer.num_classes or 0)

    def check_detector(self, fingerprint: dict[str, Any]) -> None:
        """Raise GhostboxError if the detector is not the one the filter was fitted for."""
        diffs = fingerprint_differences(self.fingerprint, fingerprint)
        if diffs:
            raise GhostboxError("filter was fitted for another detector (filter vs detector): " + "; ".join(diffs))

    def _check_detections(self, dets: Detections) -> None:
        try:
            self.scorer.check_dims(dets.feature_dim, dets.num_classes)
        except GhostboxError:
            raise GhostboxError(
                f"detections have {dets.num_classes} classes and D={dets.feature_dim} box features; "
                f"the filter was fitted on {self.num_classes} classes and D={self.feature_dim}") from None
        if dets.class_names and self.class_names and tuple(dets.class_names) != self.class_names:
            raise GhostboxError(f"detections' class names {list(dets.class_names)} differ from the filter's "
                                f"{list(self.class_names)}")

    def judge(self, boxes: BoxSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score float64, threshold float64, hallucination bool) per box."""
        scores = self.scorer.score(boxes)
        thresholds = self._per_class[boxes.class_id]
        return scores, thresholds, scores < thresholds

    def apply(self, dets: Detections) -> Detections:
        """Add `score`, `threshold`, `hallucination` per box; policy "drop" keeps only the passing boxes."""
        self._check_detections(dets)
        if len(dets) == 0:
            return dets.with_data(score=np.zeros(0, np.float32), threshold=np.zeros(0, np.float32),
                                  hallucination=np.zeros(0, bool))
        bad = (dets.class_id < 0) | (dets.class_id >= self.num_classes)
        if bad.any():
            raise GhostboxError(f"detections: class_id {int(dets.class_id[bad][0])} outside 0..{self.num_classes - 1}")
        scores, thresholds, flags = self.judge(BoxSet(dets.box_features, dets.logits, dets.class_id, dets.level))
        out = dets.with_data(score=scores.astype(np.float32), threshold=thresholds.astype(np.float32),
                             hallucination=flags)
        return out[~flags] if self.policy == "drop" else out
