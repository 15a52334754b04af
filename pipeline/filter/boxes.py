"""`BoxSet`: the per-box arrays a scorer reads, gathered from many frames.

A `Detections` holds one frame with everything a sink needs (corners, crops, names); fitting
and scoring need only four parallel arrays, stacked over many frames:

    features  (N, D)  float32  classification-branch hidden output at the box's anchor
    logits    (N, nc) float32  pre-sigmoid class logits at that anchor
    class_id  (N,)    int64    the predicted class; for fitting, the ID class label
    level     (N,)    int8     pyramid level the anchor sits on (0 = P3, 1 = P4, ...)

Indexing with a boolean mask, an index array or a slice slices all four together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError


@dataclass(frozen=True, eq=False)
class BoxSet:
    features: np.ndarray
    logits: np.ndarray
    class_id: np.ndarray
    level: np.ndarray

    def __post_init__(self) -> None:
        # Coerce once here, so scorers can rely on dtypes and contiguity.
        for name, dtype in (("features", np.float32), ("logits", np.float32),
                            ("class_id", np.int64), ("level", np.int8)):
            try:
                arr = np.ascontiguousarray(np.asarray(getattr(self, name), dtype=dtype))
            except (TypeError, ValueError) as exc:
                raise GhostboxError(f"BoxSet.{name}: cannot read as {np.dtype(dtype).name} ({exc})") from exc
            object.__setattr__(self, name, arr)
        self._check_shapes()

    def _check_shapes(self) -> None:
        if self.features.ndim != 2:
            raise GhostboxError(f"BoxSet.features: expected shape (N, D), got {self.features.shape}")
        if self.logits.ndim != 2:
            raise GhostboxError(f"BoxSet.logits: expected shape (N, nc), got {self.logits.shape}")
        for name in ("class_id", "level"):
            arr = getattr(self, name)
            if arr.ndim != 1:
                raise GhostboxError(f"BoxSet.{name}: expected shape (N,), got {arr.shape}")
        n = len(self.features)
        for name in ("logits", "class_id", "level"):
            if len(getattr(self, name)) != n:
                raise GhostboxError(
                    f"BoxSet.{name}: {len(getattr(self, name))} rows, but features has {n} rows")
        if self.features.shape[1] == 0:
            raise GhostboxError("BoxSet.features: feature dimension D is 0")
        if self.logits.shape[1] == 0:
            raise GhostboxError("BoxSet.logits: class count nc is 0")

    # -- construction ------------------------------------------------------------------

    @classmethod
    def empty(cls, feature_dim: int, num_classes: int) -> BoxSet:
        return cls(np.zeros((0, feature_dim), np.float32), np.zeros((0, num_classes), np.float32),
                   np.zeros(0, np.int64), np.zeros(0, np.int8))

    @classmethod
    def from_detections(cls, detections: Sequence[Detections]) -> BoxSet:
        """Stack the boxes of many frames; every frame must share D and nc."""
        if isinstance(detections, Detections):
            detections = [detections]
        if len(detections) == 0:
            raise GhostboxError("BoxSet.from_detections: no frames given (need at least one Detections)")
        return cls.concat([
            cls(d.box_features, d.logits, d.class_id, d.level) for d in detections
        ])

    @classmethod
    def concat(cls, sets: Sequence[BoxSet]) -> BoxSet:
        if len(sets) == 0:
            raise GhostboxError("BoxSet.concat: no box sets given")
        dims = {(s.feature_dim, s.num_classes) for s in sets}
        if len(dims) > 1:
            raise GhostboxError(
                "BoxSet.concat: box sets differ in (feature dim D, class count nc): "
                + ", ".join(str(d) for d in sorted(dims)))
        if len(sets) == 1:
            return sets[0]
        return cls(np.concatenate([s.features for s in sets]), np.concatenate([s.logits for s in sets]),
                   np.concatenate([s.class_id for s in sets]), np.concatenate([s.level for s in sets]))

    # -- access ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: Any) -> BoxSet:
        """Select boxes by boolean mask, index array, slice or int; all four arrays follow."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        if isinstance(index, np.ndarray) and index.dtype == bool and len(index) != len(self):
            raise GhostboxError(f"BoxSet: boolean mask has {len(index)} values for {len(self)} boxes")
        return BoxSet(self.features[index], self.logits[index], self.class_id[index], self.level[index])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    @property
    def confidence(self) -> np.ndarray:
        """The detector's confidence of each box: the sigmoid of its class's logit (float64)."""
        if len(self) == 0:
            return np.zeros(0, np.float64)
        z = self.logits[np.arange(len(self)), np.clip(self.class_id, 0, self.num_classes - 1)].astype(np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def class_counts(self) -> np.ndarray:
        """Boxes per class id, shape (nc,)."""
        return np.bincount(self.class_id, minlength=self.num_classes)[: self.num_classes]

    # -- validation --------------------------------------------------------------------

    def validate(self) -> BoxSet:
        """Raise GhostboxError on non-finite values, out-of-range class ids or levels; return self."""
        self._check_shapes()
        for name in ("features", "logits"):
            arr = getattr(self, name)
            finite = np.isfinite(arr)
            if not finite.all():
                bad_rows = int((~finite).any(axis=1).sum())
                kinds = []
                if np.isnan(arr).any():
                    kinds.append("NaN")
                if np.isinf(arr).any():
                    kinds.append("inf")
                raise GhostboxError(
                    f"BoxSet.{name}: {'/'.join(kinds)} values in {bad_rows} of {len(arr)} rows")
        if len(self):
            lo, hi = int(self.class_id.min()), int(self.class_id.max())
            if lo < 0 or hi >= self.num_classes:
                bad = lo if lo < 0 else hi
                raise GhostboxError(
                    f"BoxSet.class_id: value {bad} outside 0..{self.num_classes - 1} (nc = {self.num_classes})")
            if int(self.level.min()) < 0:
                raise GhostboxError(f"BoxSet.level: negative pyramid level {int(self.level.min())}")
        return self
