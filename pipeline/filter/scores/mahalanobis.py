"""Mahalanobis distance to the nearest class mean (Lee et al., NeurIPS 2018).

*A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial
Attacks*, https://arxiv.org/abs/1807.03888

    mu_c = mean of the ID features of class c
    S    = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T      (shared, within-class)
    S*   = (1 - a) S + a (tr(S)/D) I                           (shrinkage towards a scaled identity)
    score(h) = -min_c (h - mu_c)^T S*^{-1} (h - mu_c)           (higher = more ID)

Shrinkage `a`: `shrinkage="ledoit-wolf"` (default) takes the Ledoit-Wolf estimate (Ledoit &
Wolf, *A well-conditioned estimator for large-dimensional covariance matrices*, J.
Multivariate Anal. 2004) computed from the within-class residuals; a float in [0, 1] fixes it.
Box features of a small YOLO head are often near rank-deficient (dead SiLU channels), which
makes the plain inverse explode; shrinkage keeps it well conditioned.

pytorch-ood's `Mahalanobis` (no shrinkage) returns 0.5 * min_c (h-mu_c)^T (N S + 1e-6 I)^{-1}
(h-mu_c), so with `shrinkage=0` ours = -2 N * theirs (up to its 1e-6 ridge).

Fallbacks (logged): a class with a single ID box keeps that box as its mean and adds nothing
to S; a class without ID boxes is left out of the min; when no class has two boxes, S is the
covariance about the global mean; a zero S becomes the identity.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer, require_arrays
from pipeline.filter.scores.feature_math import l2_normalise

log = logging.getLogger(__name__)

_ROW_CHUNK = 8192  # rows scored at once: bounds the (rows, classes) distance matrix


def ledoit_wolf_shrinkage(residuals: np.ndarray) -> float:
    """Ledoit-Wolf (2004) shrinkage intensity for S = X^T X / n towards (tr(S)/p) I.

    With <A, B> = tr(A B^T) / p:  m = tr(S)/p,  d2 = ||S - m I||^2,
    b2 = min(d2, (1/n^2) sum_k ||x_k x_k^T - S||^2);  intensity = b2 / d2.
    """
    x = np.asarray(residuals, dtype=np.float64)
    n, p = x.shape
    s = x.T @ x / n
    m = np.trace(s) / p
    d2 = (np.sum(s * s) - 2 * m * np.trace(s) + m * m * p) / p
    if d2 <= 0:
        return 1.0  # S is already a multiple of the identity
    sq_norms = np.einsum("ij,ij->i", x, x)
    # ||x x^T - S||_F^2 = |x|^4 - 2 x^T S x + ||S||_F^2, summed over the n rows
    quad = np.einsum("ij,jk,ik->i", x, s, x)
    b2_bar = (np.sum(sq_norms**2) - 2 * np.sum(quad) + n * np.sum(s * s)) / (n * n * p)
    return float(min(b2_bar, d2) / d2)


@register
class Mahalanobis(Scorer):
    """-min_c (h - mu_c)^T S*^{-1} (h - mu_c): class means, shared shrunk covariance."""

    name = "mahalanobis"

    def __init__(self, shrinkage: str | float = "ledoit-wolf", normalize: bool = False) -> None:
        if isinstance(shrinkage, str):
            if shrinkage != "ledoit-wolf":
                raise GhostboxError(
                    f"mahalanobis: shrinkage must be 'ledoit-wolf' or a number in [0, 1], got {shrinkage!r}")
        elif not 0.0 <= float(shrinkage) <= 1.0:
            raise GhostboxError(f"mahalanobis: shrinkage must be in [0, 1], got {shrinkage}")
        else:
            shrinkage = float(shrinkage)
        super().__init__(shrinkage=shrinkage, normalize=bool(normalize))
        self.shrinkage_used: float | None = None

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        if self.params["normalize"]:
            return l2_normalise(features, np.float64)
        return features.astype(np.float64)

    def _fit(self, boxes: Detections) -> None:
        h = self._prepare(boxes.box_features)
        counts = boxes.class_counts()
        classes = np.flatnonzero(counts)
        absent = np.flatnonzero(counts == 0)
        if len(absent):
            log.warning("mahalanobis: classes %s have no ID boxes; they are left out of the nearest-mean search",
                        absent.tolist())
        single = np.flatnonzero(counts == 1)
        if len(single):
            log.warning("mahalanobis: classes %s have a single ID box; that box is the class mean and the "
                        "shared covariance comes from the other classes", single.tolist())
        means = np.zeros((boxes.num_classes, h.shape[1]))
        np.add.at(means, boxes.class_id, h)
        means[classes] /= counts[classes, None]
        residuals = h - means[boxes.class_id]
        if len(h) - len(classes) < 1:
            log.warning("mahalanobis: no class has two ID boxes; using the covariance about the global mean")
            residuals = h - h.mean(axis=0)
        n, d = residuals.shape
        cov = residuals.T @ residuals / n
        scale = np.trace(cov) / d
        if scale <= 0:
            log.warning("mahalanobis: ID features do not vary; using the identity covariance")
            cov, scale, shrink = np.eye(d), 1.0, 0.0
        else:
            shrink = ledoit_wolf_shrinkage(residuals) if self.params["shrinkage"] == "ledoit-wolf" \
                else self.params["shrinkage"]
        cov = (1.0 - shrink) * cov + shrink * scale * np.eye(d)
        self.shrinkage_used = float(shrink)
        # Whitening W with W W^T = S*^{-1}; directions of zero variance (possible only with
        # shrinkage 0) are dropped, as a pseudo-inverse would.
        eigvals, eigvecs = np.linalg.eigh(cov)
        keep = eigvals > eigvals.max() * d * np.finfo(np.float64).eps
        if not keep.all():
            log.warning("mahalanobis: covariance is singular (%d of %d directions have no variance); "
                        "using its pseudo-inverse", int((~keep).sum()), d)
        # C order, as a loaded file gives it: BLAS sums in layout order, and saved filters
        # must score bit-identically
        self.whiten = np.ascontiguousarray(eigvecs[:, keep] / np.sqrt(eigvals[keep]))
        self.classes = classes.astype(np.int64)
        self.means = means[classes]

    def _score(self, boxes: Detections) -> np.ndarray:
        h = self._prepare(boxes.box_features)
        # Centre on the mean of the means first: keeps the expanded squared distance exact-ish.
        centre = self.means.mean(axis=0)
        mw = (self.means - centre) @ self.whiten
        mw_sq = np.einsum("ij,ij->i", mw, mw)
        out = np.empty(len(h))
        for start in range(0, len(h), _ROW_CHUNK):
            hw = (h[start:start + _ROW_CHUNK] - centre) @ self.whiten
            dist = np.einsum("ij,ij->i", hw, hw)[:, None] - 2 * hw @ mw.T + mw_sq
            out[start:start + _ROW_CHUNK] = -np.maximum(dist.min(axis=1), 0.0)
        return out

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"means": self.means, "classes": self.classes, "whiten": self.whiten},
                {"shrinkage_used": self.shrinkage_used})

    def _load_state(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        self.means, self.classes, self.whiten = require_arrays(arrays, self.name, "means", "classes", "whiten")
        self.shrinkage_used = fitted.get("shrinkage_used")
