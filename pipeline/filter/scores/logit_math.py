"""Numerically stable reductions over class logits, in float64."""

from __future__ import annotations

import numpy as np


def logsumexp(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """log sum_c exp(values_c), stable for large values (the max is factored out)."""
    values = np.asarray(values, dtype=np.float64)
    top = values.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def max_softmax(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """max_c softmax(values)_c = 1 / sum_c exp(values_c - max)."""
    values = np.asarray(values, dtype=np.float64)
    top = values.max(axis=axis, keepdims=True)
    return 1.0 / np.exp(values - top).sum(axis=axis)
