"""Thresholds per class at a target ID true-positive rate, from ID calibration boxes.

For each class c with at least `min_boxes` calibration boxes:

    threshold_c = the largest t with fraction(ID scores of class c >= t) >= tpr

(`ood_metrics.keep_threshold`: the (1 - tpr) quantile taken from below, so that at least
95% of the class's ID boxes are kept at the default tpr). The global threshold is the same
over all calibration boxes; classes with fewer than `min_boxes` boxes use it (`fell_back`).

The calibration boxes should be disjoint from the boxes the scorer was fitted on: scores of
fit boxes are optimistic (a KNN bank contains them, a BAM box encloses them).
`split_fit_calibration` makes a seeded, per-class split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import GhostboxError
from pipeline.filter.boxes import BoxSet
from pipeline.filter.ood_metrics import keep_threshold
from pipeline.filter.scorer import Scorer


@dataclass(frozen=True)
class ClassCalibration:
    class_id: int
    name: str
    num_boxes: int          # ID calibration boxes of this class
    threshold: float
    fell_back: bool         # True: too few boxes, the global threshold is used
    kept_fraction: float | None  # fraction of this class's calibration boxes kept (None: no boxes)


@dataclass(frozen=True)
class Calibration:
    per_class: np.ndarray   # (nc,) float64, threshold by predicted class
    global_threshold: float
    target_tpr: float
    min_boxes: int
    num_boxes: int
    classes: tuple[ClassCalibration, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "target_tpr": self.target_tpr,
            "min_boxes": self.min_boxes,
            "num_boxes": self.num_boxes,
            "global_threshold": self.global_threshold,
            "classes": [vars(c) for c in self.classes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        classes = tuple(ClassCalibration(**c) for c in data["classes"])
        return cls(per_class=np.array([c.threshold for c in classes], np.float64),
                   global_threshold=float(data["global_threshold"]), target_tpr=float(data["target_tpr"]),
                   min_boxes=int(data["min_boxes"]), num_boxes=int(data["num_boxes"]), classes=classes)

    def summary(self) -> str:
        """One line per class: boxes, threshold, kept fraction, fallback."""
        lines = [f"target ID TPR {self.target_tpr:.3f}, global threshold {self.global_threshold:.6g} "
                 f"over {self.num_boxes} boxes"]
        for c in self.classes:
            kept = "-" if c.kept_fraction is None else f"{c.kept_fraction:.3f}"
            note = f"  global (fewer than {self.min_boxes} boxes)" if c.fell_back else ""
            lines.append(f"  {c.class_id:>3} {c.name:<20} {c.num_boxes:>7} boxes  "
                         f"threshold {c.threshold:.6g}  kept {kept}{note}")
        return "\n".join(lines)


def calibrate(scorer: Scorer, boxes: BoxSet, tpr: float = 0.95, min_boxes: int = 20,
              class_names: Sequence[str] = ()) -> Calibration:
    """Per-class and global thresholds that keep `tpr` of the ID calibration boxes."""
    if not 0.0 < tpr <= 1.0:
        raise GhostboxError(f"calibrate: tpr must be in (0, 1], got {tpr}")
    if min_boxes < 1:
        raise GhostboxError(f"calibrate: min_boxes must be >= 1, got {min_boxes}")
    if len(boxes) == 0:
        raise GhostboxError("calibrate: no ID calibration boxes")
    scores = scorer.score(boxes)
    global_threshold = keep_threshold(scores, tpr)
    nc = boxes.num_classes
    per_class = np.full(nc, global_threshold)
    report = []
    for c in range(nc):
        mine = scores[boxes.class_id == c]
        fell_back = len(mine) < min_boxes
        if not fell_back:
            per_class[c] = keep_threshold(mine, tpr)
        kept = float(np.mean(mine >= per_class[c])) if len(mine) else None
        name = class_names[c] if c < len(class_names) else str(c)
        report.append(ClassCalibration(c, name, len(mine), float(per_class[c]), fell_back, kept))
    return Calibration(per_class, float(global_threshold), float(tpr), int(min_boxes), len(boxes), tuple(report))


def split_fit_calibration(boxes: BoxSet, calibration_fraction: float = 0.3,
                          seed: int = 0) -> tuple[BoxSet, BoxSet]:
    """Seeded split of ID boxes into (fit, calibration), the same fraction of every class.

    A class with a single box goes to the fit set (the scorer needs it more than the
    threshold does: its class falls back to the global threshold anyway).
    """
    if not 0.0 < calibration_fraction < 1.0:
        raise GhostboxError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    rng = np.random.default_rng(seed)
    calib = np.zeros(len(boxes), bool)
    for c in np.unique(boxes.class_id):
        rows = np.flatnonzero(boxes.class_id == c)
        take = int(round(len(rows) * calibration_fraction))
        take = min(take, len(rows) - 1)
        calib[rng.choice(rows, take, replace=False)] = True
    return boxes[~calib], boxes[calib]
