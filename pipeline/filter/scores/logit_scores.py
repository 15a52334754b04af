"""The three scores read off a box's class logits z alone: MSP, max-logit and energy.

    msp       max_c softmax(z / T)_c        Hendrycks & Gimpel, ICLR 2017, https://arxiv.org/abs/1610.02136
    maxlogit  max_c z_c                     Hendrycks et al., ICML 2022, https://arxiv.org/abs/1911.11132
    energy    T log sum_c exp(z_c / T)      Liu et al., NeurIPS 2020, https://arxiv.org/abs/2010.03759

All: higher = more ID. pytorch-ood's `MaxSoftmax`, `MaxLogit` and `EnergyBased` return the
negations (higher = OOD); energy is the negative free energy -E(z; T).

They share one base class because they share everything but the formula: nothing to fit,
no arrays to store, any feature dim. YOLO heads are trained with per-class sigmoids, not a
softmax, so MSP is a weak baseline there (REFERENCE.md §1); for a sigmoid head the max logit
is the logit of the detector's confidence, so maxlogit ranks boxes as confidence does.

A filter file records a scorer by its registered name and constructor params only, so these
classes may move between modules without breaking stored filters.
"""

from __future__ import annotations

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer
from pipeline.filter.scores.logit_math import logsumexp, max_softmax


class LogitScore(Scorer):
    """A fixed function of the box's class logits: fitting only records nc, D is not checked."""

    uses_features = False

    def _fit(self, boxes: Detections) -> None:
        pass  # nothing to learn


class TemperedLogitScore(LogitScore):
    """A logit score with a temperature T > 0 that divides the logits."""

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise GhostboxError(f"{self.name}: temperature must be > 0, got {temperature}")
        super().__init__(temperature=float(temperature))


@register
class MaxSoftmax(TemperedLogitScore):
    """max_c softmax(z / T)_c."""

    name = "msp"

    def _score(self, boxes: Detections) -> np.ndarray:
        return max_softmax(boxes.logits / self.params["temperature"])


@register
class MaxLogit(LogitScore):
    """max_c z_c."""

    name = "maxlogit"

    def __init__(self) -> None:
        super().__init__()  # takes no parameters: `create("maxlogit", temperature=2)` is refused

    def _score(self, boxes: Detections) -> np.ndarray:
        return boxes.logits.max(axis=1).astype(np.float64)


@register
class Energy(TemperedLogitScore):
    """T * logsumexp(z / T)."""

    name = "energy"

    def _score(self, boxes: Detections) -> np.ndarray:
        t = self.params["temperature"]
        return t * logsumexp(boxes.logits / t)
