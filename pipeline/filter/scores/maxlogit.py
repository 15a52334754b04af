"""MaxLogit (Hendrycks et al., ICML 2022).

*Scaling Out-of-Distribution Detection for Real-World Settings*,
https://arxiv.org/abs/1911.11132

    score(z) = max_c z_c                                      (higher = more ID)

pytorch-ood's `MaxLogit` returns the negation. For a sigmoid head the max logit is the
logit of the detector's confidence, so this ranks boxes as confidence does.
"""

from __future__ import annotations

import numpy as np

from pipeline.detections import Detections
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer


@register
class MaxLogit(Scorer):
    """max_c z_c over the box's class logits; no fitting needed."""

    name = "maxlogit"
    uses_features = False

    def __init__(self) -> None:
        super().__init__()

    def _fit(self, boxes: Detections) -> None:
        pass

    def _score(self, boxes: Detections) -> np.ndarray:
        return boxes.logits.max(axis=1).astype(np.float64)
