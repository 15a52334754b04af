"""Energy score (Liu et al., NeurIPS 2020).

*Energy-based Out-of-distribution Detection*, https://arxiv.org/abs/2010.03759

    score(z) = T * log sum_c exp(z_c / T)                     (higher = more ID)

This is the negative free energy -E(z; T). pytorch-ood's `EnergyBased` returns E itself
(higher = OOD), i.e. exactly the negation.
"""

from __future__ import annotations

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer
from pipeline.filter.scores.logit_math import logsumexp


@register
class Energy(Scorer):
    """T * logsumexp(z / T) over the box's class logits; no fitting needed."""

    name = "energy"
    uses_features = False

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise GhostboxError(f"energy: temperature must be > 0, got {temperature}")
        super().__init__(temperature=float(temperature))

    def _fit(self, boxes: Detections) -> None:
        pass

    def _score(self, boxes: Detections) -> np.ndarray:
        t = self.params["temperature"]
        return t * logsumexp(boxes.logits / t)
