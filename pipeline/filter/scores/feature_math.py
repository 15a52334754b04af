"""Small feature transforms shared by the feature-based scores."""

from __future__ import annotations

import numpy as np


def l2_normalise(features: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows scaled to unit L2 norm; an all-zero row stays zero instead of becoming NaN."""
    features = np.asarray(features, dtype=dtype)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(dtype).tiny)
