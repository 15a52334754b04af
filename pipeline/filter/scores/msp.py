"""MSP: maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

*A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural
Networks*, https://arxiv.org/abs/1610.02136

    score(z) = max_c softmax(z / T)_c                         (higher = more ID)

pytorch-ood's `MaxSoftmax` returns the negation (higher = OOD). YOLO heads are trained with
per-class sigmoids, not a softmax, so this score is a weak baseline there (REFERENCE.md §1).
"""

from __future__ import annotations

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer
from pipeline.filter.scores.logit_math import max_softmax


@register
class MaxSoftmax(Scorer):
    """max_c softmax(z / T)_c over the box's class logits z; no fitting needed."""

    name = "msp"
    uses_features = False

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise GhostboxError(f"msp: temperature must be > 0, got {temperature}")
        super().__init__(temperature=float(temperature))

    def _fit(self, boxes: Detections) -> None:
        pass

    def _score(self, boxes: Detections) -> np.ndarray:
        return max_softmax(boxes.logits / self.params["temperature"])
