"""ViM: virtual-logit matching (Wang et al., CVPR 2022).

*ViM: Out-Of-Distribution with Virtual-logit Matching*, https://arxiv.org/abs/2203.10807

With the logit layer z = W h + b:

    o        = -pinv(W) b                       origin: the features that give zero logits
    P^perp   = the D - dim eigenvectors of (1/N) sum_i (h_i - o)(h_i - o)^T with the
               smallest eigenvalues (the complement of the principal subspace of size dim)
    alpha    = mean_i max_c z_ic / mean_i ||P^perp^T (h_i - o)||     (on the ID fit set)
    score(h) = logsumexp_c z_c - alpha ||P^perp^T (h - o)||          (higher = more ID)

ViM's own score, softmax probability of the virtual logit, is -log of a monotone function
of this difference; pytorch-ood's `ViM.predict_features` returns alpha ||.|| - logsumexp(z),
i.e. exactly the negation of ours.

YOLO's logit layer is a per-pyramid-level 1x1 conv, so W and b are recovered per level from
the ID boxes by least squares on [h, 1] -> z (exact when the boxes span the feature space:
needs >= D + 1 boxes on that level). Each level with enough boxes gets its own origin,
subspace and alpha; levels with fewer boxes, and levels never seen at fit, use one pooled
model fitted on all boxes (approximate, since the levels' W differ; logged).

`dim` defaults to D // 2 (the value pytorch-ood falls back to when its d exceeds D); it must be
below D or there is no residual. On sigmoid heads the mean max-logit can be <= 0 on
low-confidence ID boxes, which would flip the sign of alpha; then alpha uses the mean of
|max logit| instead (logged). `alpha` fixes it by hand.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer, require_arrays
from pipeline.filter.scores.logit_math import logsumexp

log = logging.getLogger(__name__)


def fit_logit_layer(features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares W (nc, D), b (nc,) with logits ~ features @ W.T + b, and the relative residual.

    Normal equations on standardised features (centring removes the intercept, scaling keeps
    the Gram matrix well conditioned), solved with a pseudo-inverse so that dead channels
    (zero variance) get zero weight. Several times faster than an SVD or QR of the tall
    N x (D+1) matrix, which took seconds for 20k boxes on two busy cores.
    """
    h = np.asarray(features, np.float64)
    z = np.asarray(logits, np.float64)
    h_mean, z_mean = h.mean(axis=0), z.mean(axis=0)
    h_scale = h.std(axis=0)
    h_scale[h_scale == 0] = 1.0
    x = (h - h_mean) / h_scale
    coef = np.linalg.pinv(x.T @ x, hermitian=True) @ (x.T @ (z - z_mean))  # (D, nc)
    w = (coef / h_scale[:, None]).T
    b = z_mean - w @ h_mean
    resid = h @ w.T + b - z
    spread = float(np.linalg.norm(z - z_mean)) or 1.0
    return w, b, float(np.linalg.norm(resid)) / spread


@register
class ViM(Scorer):
    """logsumexp(z) - alpha * ||residual of (h - o) outside the principal subspace||, per level."""

    name = "vim"

    def __init__(self, dim: int | None = None, alpha: float | None = None) -> None:
        if dim is not None and int(dim) < 1:
            raise GhostboxError(f"vim: dim must be >= 1, got {dim}")
        if alpha is not None and not float(alpha) > 0:
            raise GhostboxError(f"vim: alpha must be > 0, got {alpha}")
        super().__init__(dim=None if dim is None else int(dim), alpha=None if alpha is None else float(alpha))

    def _fit_model(self, h: np.ndarray, z: np.ndarray, dim: int, label: str) -> dict[str, Any]:
        w, b, rel_resid = fit_logit_layer(h, z)
        origin = -np.linalg.pinv(w) @ b
        centred = h - origin
        _, vecs = np.linalg.eigh(centred.T @ centred / len(h))  # ascending eigenvalues
        null = np.ascontiguousarray(vecs[:, : h.shape[1] - dim])  # C order, as loaded from a file
        resid = np.linalg.norm(centred @ null, axis=1)
        if self.params["alpha"] is not None:
            alpha = self.params["alpha"]
        else:
            top = z.max(axis=1).mean()
            if top <= 0:
                log.warning("vim (%s): mean max-logit %.3g <= 0 on the ID boxes; alpha uses mean |max logit|",
                            label, top)
                top = np.abs(z.max(axis=1)).mean()
            mean_resid = resid.mean()
            alpha = float(top / mean_resid) if mean_resid > 0 else 0.0
            if mean_resid <= 0:
                log.warning("vim (%s): ID features have no residual outside the principal subspace; alpha = 0", label)
        return {"origin": origin, "null": null, "alpha": float(alpha), "rel_resid": rel_resid}

    def _fit(self, boxes: Detections) -> None:
        d = boxes.feature_dim
        dim = self.params["dim"] if self.params["dim"] is not None else d // 2
        if not 1 <= dim < d:
            raise GhostboxError(f"vim: principal subspace dim must be in 1..{d - 1} for D={d}, got {dim}")
        h = boxes.box_features.astype(np.float64)
        z = boxes.logits.astype(np.float64)
        levels, counts = np.unique(boxes.level, return_counts=True)
        models: list[dict[str, Any]] = []
        level_model: dict[int, int] = {}
        pooled_levels: list[int] = []
        for lv, n in zip(levels.tolist(), counts.tolist()):
            if n < d + 1:
                pooled_levels.append(lv)
                continue
            rows = boxes.level == lv
            model = self._fit_model(h[rows], z[rows], dim, f"level {lv}")
            if model["rel_resid"] > 1e-3:
                log.warning("vim: logits at level %d are not a linear function of the features "
                            "(relative residual %.2g); is the feature layer the one before the logits?",
                            lv, model["rel_resid"])
            level_model[lv] = len(models)
            models.append(model)
        if len(boxes) < d + 1:
            log.warning("vim: %d ID boxes for D=%d: the logit layer is underdetermined (need >= %d)",
                        len(boxes), d, d + 1)
        if pooled_levels:
            log.warning("vim: levels %s have fewer than D+1=%d ID boxes; they use one model pooled over all levels",
                        pooled_levels, d + 1)
        models.append(self._fit_model(h, z, dim, "pooled"))  # last: pooled, for unseen levels too
        top_level = int(levels.max()) if len(levels) else 0
        self.level_model = np.array([level_model.get(lv, len(models) - 1) for lv in range(top_level + 1)], np.int64)
        self.origin = np.stack([m["origin"] for m in models])
        self.null = np.stack([m["null"] for m in models])
        self.alpha = np.array([m["alpha"] for m in models])
        self.logit_fit_residual = [m["rel_resid"] for m in models]
        self.dim_used = dim

    def _score(self, boxes: Detections) -> np.ndarray:
        pooled = len(self.alpha) - 1
        lv = boxes.level.astype(np.int64)
        known = lv < len(self.level_model)  # levels never seen at fit use the pooled model
        model = np.where(known, self.level_model[np.minimum(lv, len(self.level_model) - 1)], pooled)
        energy = logsumexp(boxes.logits)
        h = boxes.box_features.astype(np.float64)
        resid = np.empty(len(h))
        for m in np.unique(model):
            rows = model == m
            resid[rows] = np.linalg.norm((h[rows] - self.origin[m]) @ self.null[m], axis=1)
        return energy - self.alpha[model] * resid

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"origin": self.origin, "null": self.null, "alpha": self.alpha, "level_model": self.level_model},
                {"dim_used": self.dim_used, "logit_fit_residual": self.logit_fit_residual})

    def _load_state(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        self.origin, self.null, self.alpha, self.level_model = require_arrays(
            arrays, self.name, "origin", "null", "alpha", "level_model")
        self.dim_used = int(fitted["dim_used"])
        self.logit_fit_residual = list(fitted.get("logit_fit_residual", []))
