"""BAM: box abstraction monitor (Wu, Cheng, Bensalem et al.; used by the M-Hood authors).

*Customizable Reference Runtime Monitoring of Neural Networks using Resolution Boxes*
(C. Wu, Y. Falcone, S. Bensalem, https://arxiv.org/abs/2104.14435), and in detection by
*M-Hood* (arXiv 2503.07330), REFERENCE.md §1.

Fit, per ID class c: k-means (scipy's `kmeans2`, k++ init, seeded) on the class's features;
each cluster j becomes an axis-aligned box [lo_j, hi_j] (per-dimension min and max of its
members), optionally enlarged by `margin` times its width on each side.

    dist(h, box) = sum_d max(lo_d - h_d, 0) + max(h_d - hi_d, 0)       (L1, 0 inside)
    score(h, c)  = -min_{boxes j of class c} dist(h, box_j)            (higher = more ID)

The score uses the box's predicted class_id. k is clamped to the number of distinct ID
features of the class. Fallback (logged): a class with fewer than `min_class_boxes` ID boxes
(or none) is scored against the boxes of all classes, the global abstraction.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer, require_arrays

log = logging.getLogger(__name__)

_MAX_ELEMENTS = 1 << 22  # (rows x boxes x D) values held at once when scoring


def cluster_boxes(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means the rows, then each non-empty cluster's per-dimension [min, max]: (lo, hi), (K, D) each."""
    from scipy.cluster.vq import kmeans2  # imported here: scipy.cluster costs ~1 s to import

    x = np.asarray(features, np.float64)
    k = min(k, len(x))
    if k > 1 and len(x) <= 4096:
        k = min(k, len(np.unique(x, axis=0)))  # k++ needs distinct points to seed from
    if k <= 1:
        return x.min(axis=0, keepdims=True), x.max(axis=0, keepdims=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty clusters are dropped below
            # scipy >= 1.15 takes `rng`, older releases `seed`
            rng_arg = "rng" if "rng" in inspect.signature(kmeans2).parameters else "seed"
            _, labels = kmeans2(x, k, iter=20, minit="++", **{rng_arg: np.random.default_rng(seed)})
    except (ValueError, np.linalg.LinAlgError) as exc:
        log.warning("bam: k-means failed on %d features (%s); using one box", len(x), exc)
        return x.min(axis=0, keepdims=True), x.max(axis=0, keepdims=True)
    used = np.unique(labels)
    lo = np.stack([x[labels == j].min(axis=0) for j in used])
    hi = np.stack([x[labels == j].max(axis=0) for j in used])
    return lo, hi


def l1_box_distance(features: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(N, K) L1 distance of each row to each box [lo_j, hi_j]; 0 inside."""
    h = np.asarray(features, np.float64)
    out = np.empty((len(h), len(lo)))
    rows = max(1, _MAX_ELEMENTS // max(lo.size, 1))
    for start in range(0, len(h), rows):
        x = h[start:start + rows, None, :]
        out[start:start + rows] = (np.maximum(lo - x, 0.0) + np.maximum(x - hi, 0.0)).sum(axis=2)
    return out


@register
class BoxAbstraction(Scorer):
    """-(L1 distance of h to the nearest k-means box of the predicted class); 0 inside a box."""

    name = "bam"

    def __init__(self, k: int = 10, margin: float = 0.0, min_class_boxes: int = 10, seed: int = 0) -> None:
        if int(k) < 1:
            raise GhostboxError(f"bam: k must be >= 1, got {k}")
        if not float(margin) >= 0:
            raise GhostboxError(f"bam: margin must be >= 0, got {margin}")
        if int(min_class_boxes) < 1:
            raise GhostboxError(f"bam: min_class_boxes must be >= 1, got {min_class_boxes}")
        super().__init__(k=int(k), margin=float(margin), min_class_boxes=int(min_class_boxes), seed=int(seed))

    def _fit(self, boxes: Detections) -> None:
        counts = boxes.class_counts()
        los, his, owners = [], [], []
        for c in np.flatnonzero(counts):
            lo, hi = cluster_boxes(boxes.box_features[boxes.class_id == c], self.params["k"],
                                   self.params["seed"] + int(c))
            los.append(lo)
            his.append(hi)
            owners.append(np.full(len(lo), c, np.int64))
        lo, hi = np.concatenate(los), np.concatenate(his)
        width = hi - lo
        self.lo = lo - self.params["margin"] * width
        self.hi = hi + self.params["margin"] * width
        self.box_class = np.concatenate(owners)
        self.own_class = counts >= self.params["min_class_boxes"]
        fallback = np.flatnonzero(~self.own_class)
        if len(fallback):
            log.warning("bam: classes %s have fewer than %d ID boxes (%s); they are scored against all classes' boxes",
                        fallback.tolist(), self.params["min_class_boxes"], counts[fallback].tolist())

    def _score(self, boxes: Detections) -> np.ndarray:
        out = np.empty(len(boxes))
        cls = boxes.class_id
        use_all = ~self.own_class[cls]
        if use_all.any():
            out[use_all] = -l1_box_distance(boxes.box_features[use_all], self.lo, self.hi).min(axis=1)
        for c in np.unique(cls[~use_all]):
            rows = (cls == c) & ~use_all
            mine = self.box_class == c
            out[rows] = -l1_box_distance(boxes.box_features[rows], self.lo[mine], self.hi[mine]).min(axis=1)
        return out

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"lo": self.lo, "hi": self.hi, "box_class": self.box_class, "own_class": self.own_class}, {}

    def _load_state(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        self.lo, self.hi, self.box_class, own = require_arrays(arrays, self.name, "lo", "hi", "box_class", "own_class")
        self.own_class = own.astype(bool)
