"""The one detections type that flows through every ghostbox stage.

A `Detections` holds the boxes of one frame as parallel numpy arrays, in the manner of
supervision's type: indexing with a boolean mask or an index array slices every per-box
field together, so no field can fall out of step with the boxes.

Per-box fields (N boxes, nc classes, D feature channels):
    xyxy           (N, 4) float32  box corners in original-frame pixels
    confidence     (N,)   float32  the detector's confidence (max sigmoid class score)
    class_id       (N,)   int64    index into `class_names`
    logits         (N, nc) float32 pre-sigmoid class logits at the anchor of the box
    box_features   (N, D) float32  classification-branch hidden output at that anchor
    level          (N,)   int8     pyramid level (0 = P3, 1 = P4, 2 = P5, ...)
    data           dict of further (N, ...) arrays added by later stages
                   (`score`, `threshold`, `hallucination`, ...)
    crops          optional list of N BGR uint8 arrays cut from the frame

Per-frame fields: `class_names`, `image_size` (width, height), `source`, `frame`.

The same type holds the boxes of many frames stacked together (`Detections.merge`), which is
what OOD scorers fit on and score, and what the evaluation collects per set; a box set known
only by what the detection head computed (fitting data, synthetic tests) comes from
`Detections.from_head`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.errors import GhostboxError


def _as(array: Any, dtype: type, shape_tail: tuple[int, ...], name: str) -> np.ndarray:
    arr = _read(array, dtype, name)
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        want = "(N" + "".join(f", {s}" for s in shape_tail) + ")"
        raise GhostboxError(f"Detections.{name}: expected shape {want}, got {arr.shape}")
    return arr


def _read(array: Any, dtype: type, name: str) -> np.ndarray:
    try:
        return np.ascontiguousarray(np.asarray(array, dtype=dtype))
    except (TypeError, ValueError) as exc:
        raise GhostboxError(f"Detections.{name}: cannot read as {np.dtype(dtype).name} ({exc})") from exc


def _class_sigmoid(logits: np.ndarray, class_id: np.ndarray) -> np.ndarray:
    """float64 sigmoid of each row's logit at its class id (ids clipped into range)."""
    if len(class_id) == 0:
        return np.zeros(0, np.float64)
    z = logits[np.arange(len(class_id)), np.clip(class_id, 0, logits.shape[1] - 1)].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True, eq=False)
class Detections:
    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    logits: np.ndarray
    box_features: np.ndarray
    level: np.ndarray
    class_names: tuple[str, ...] = ()
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the original frame
    source: str = ""
    frame: int = 0
    crops: list[np.ndarray] | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = _as(self.xyxy, np.float32, (4,), "xyxy")
        n = len(xyxy)
        logits = _read(self.logits, np.float32, "logits")
        feats = _read(self.box_features, np.float32, "box_features")
        if logits.ndim != 2 or len(logits) != n:
            raise GhostboxError(f"Detections.logits: expected shape ({n}, nc), got {logits.shape}")
        if feats.ndim != 2 or len(feats) != n:
            raise GhostboxError(f"Detections.box_features: expected shape ({n}, D), got {feats.shape}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "logits", logits)
        object.__setattr__(self, "box_features", feats)
        for name, dtype in (("confidence", np.float32), ("class_id", np.int64), ("level", np.int8)):
            arr = _as(getattr(self, name), dtype, (), name)
            if len(arr) != n:
                raise GhostboxError(f"Detections.{name}: expected {n} values, got {len(arr)}")
            object.__setattr__(self, name, arr)
        for key, value in self.data.items():
            if len(value) != n:
                raise GhostboxError(f"Detections.data[{key!r}]: expected {n} values, got {len(value)}")
        if self.crops is not None and len(self.crops) != n:
            raise GhostboxError(f"Detections.crops: expected {n} crops, got {len(self.crops)}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    @classmethod
    def empty(
        cls,
        num_classes: int,
        feature_dim: int,
        class_names: Sequence[str] = (),
        image_size: tuple[int, int] = (0, 0),
        **meta: Any,
    ) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_id=np.zeros(0, np.int64),
            logits=np.zeros((0, num_classes), np.float32),
            box_features=np.zeros((0, feature_dim), np.float32),
            level=np.zeros(0, np.int8),
            class_names=tuple(class_names),
            image_size=image_size,
            **meta,
        )

    @classmethod
    def from_head(
        cls,
        box_features: Any,
        logits: Any,
        class_id: Any,
        level: Any,
        class_names: Sequence[str] = (),
    ) -> Detections:
        """Boxes known only by what the detection head computed (fitting sets, synthetic tests):
        corners are zeros and the confidence is the sigmoid of the class's logit."""
        logits = _read(logits, np.float32, "logits")
        class_id = _read(class_id, np.int64, "class_id")
        n = len(class_id) if class_id.ndim == 1 else len(logits) if logits.ndim else 0
        confidence = np.zeros(n)  # on a shape mismatch, which the constructor then names
        if logits.shape == (n, *logits.shape[1:]) and logits.ndim == 2 and logits.shape[1] and class_id.ndim == 1:
            confidence = _class_sigmoid(logits, class_id)
        return cls(np.zeros((len(confidence), 4), np.float32), confidence, class_id, logits, box_features, level,
                   class_names=tuple(class_names))

    @classmethod
    def merge(cls, parts: Sequence[Detections]) -> Detections:
        """The boxes of many frames as one set; every part must share the class count and
        feature dim. Per-frame fields come from the first part; crops are kept only if every
        part has them, `data` keys only if every part has them."""
        if isinstance(parts, Detections):
            return parts
        if len(parts) == 0:
            raise GhostboxError("Detections.merge: no detections given (need at least one)")
        dims = {(p.feature_dim, p.num_classes) for p in parts}
        if len(dims) > 1:
            raise GhostboxError(
                "Detections.merge: parts differ in (feature dim D, class count nc): "
                + ", ".join(str(d) for d in sorted(dims)))
        if len(parts) == 1:
            return parts[0]
        keys = set.intersection(*(set(p.data) for p in parts))
        crops = None if any(p.crops is None for p in parts) else [c for p in parts for c in p.crops or []]
        return replace(
            parts[0],
            xyxy=np.concatenate([p.xyxy for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
            class_id=np.concatenate([p.class_id for p in parts]),
            logits=np.concatenate([p.logits for p in parts]),
            box_features=np.concatenate([p.box_features for p in parts]),
            level=np.concatenate([p.level for p in parts]),
            crops=crops,
            data={k: np.concatenate([np.asarray(p.data[k]) for p in parts]) for k in sorted(keys)},
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Select boxes by boolean mask, index array, slice or int; every per-box field follows."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        if isinstance(index, np.ndarray) and index.dtype == bool and len(index) != len(self):
            raise GhostboxError(f"Detections: boolean mask has {len(index)} values for {len(self)} boxes")
        idx = np.arange(len(self))[index]
        crops = None if self.crops is None else [self.crops[i] for i in idx]
        return replace(
            self,
            xyxy=self.xyxy[idx],
            confidence=self.confidence[idx],
            class_id=self.class_id[idx],
            logits=self.logits[idx],
            box_features=self.box_features[idx],
            level=self.level[idx],
            crops=crops,
            data={k: np.asarray(v)[idx] for k, v in self.data.items()},
        )

    def __iter__(self) -> Iterator[Detections]:
        for i in range(len(self)):
            yield self[i]

    @property
    def labels(self) -> list[str]:
        names = self.class_names
        return [names[c] if 0 <= c < len(names) else str(int(c)) for c in self.class_id]

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    @property
    def feature_dim(self) -> int:
        return self.box_features.shape[1]

    def class_confidence(self) -> np.ndarray:
        """Each box's confidence in its `class_id`, from the logits (float64). Equal to `confidence`
        for detector output; for a box set whose class ids are labels it is the labelled class's."""
        return _class_sigmoid(self.logits, self.class_id)

    def class_counts(self) -> np.ndarray:
        """Boxes per class id, shape (nc,)."""
        return np.bincount(self.class_id, minlength=self.num_classes)[: self.num_classes]

    def validate(self) -> Detections:
        """What a scorer needs beyond the shapes: D and nc > 0, finite features and logits,
        class ids in 0..nc-1 and levels >= 0. Raises GhostboxError naming the field; returns self."""
        if self.feature_dim == 0:
            raise GhostboxError("Detections.box_features: feature dimension D is 0")
        if self.num_classes == 0:
            raise GhostboxError("Detections.logits: class count nc is 0")
        for name in ("box_features", "logits"):
            arr = getattr(self, name)
            finite = np.isfinite(arr)
            if not finite.all():
                bad_rows = int((~finite).any(axis=1).sum())
                kinds = [k for k, bad in (("NaN", np.isnan(arr).any()), ("inf", np.isinf(arr).any())) if bad]
                raise GhostboxError(f"Detections.{name}: {'/'.join(kinds)} values in {bad_rows} of {len(arr)} rows")
        if len(self):
            lo, hi = int(self.class_id.min()), int(self.class_id.max())
            if lo < 0 or hi >= self.num_classes:
                bad = lo if lo < 0 else hi
                raise GhostboxError(
                    f"Detections.class_id: value {bad} outside 0..{self.num_classes - 1} (nc = {self.num_classes})")
            if int(self.level.min()) < 0:
                raise GhostboxError(f"Detections.level: negative pyramid level {int(self.level.min())}")
        return self

    def verdict(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(flags, scores) the outputs act on: the track's (`track_hallucination`, `track_score`) where
        the boxes were tracked, else the frame's (`hallucination`, `score`); None where there are none."""
        if "track_hallucination" in self.data:
            return self.data["track_hallucination"], self.data.get("track_score")
        return self.data.get("hallucination"), self.data.get("score")

    def with_data(self, **arrays: np.ndarray) -> Detections:
        """A copy with further per-box arrays (e.g. score=..., hallucination=...)."""
        return replace(self, data={**self.data, **{k: np.asarray(v) for k, v in arrays.items()}})

    def with_meta(self, **meta: Any) -> Detections:
        """A copy with other per-frame fields (source, frame, ...)."""
        return replace(self, **meta)

    def to_record(self, decimals: int = 2) -> dict[str, Any]:
        """The JSON-lines record of this frame (schema in docs/detect.md, `detections.jsonl`)."""
        boxes = []
        labels = self.labels
        for i in range(len(self)):
            box: dict[str, Any] = {
                "xyxy": [round(float(v), decimals) for v in self.xyxy[i]],
                "conf": round(float(self.confidence[i]), 5),
                "cls": int(self.class_id[i]),
                "label": labels[i],
            }
            for key, value in self.data.items():
                item = np.asarray(value)[i]
                if item.ndim == 0:
                    box[key] = item.item() if not isinstance(item.item(), float) else round(item.item(), 5)
            boxes.append(box)
        width, height = self.image_size
        return {"source": self.source, "frame": int(self.frame), "width": width, "height": height, "boxes": boxes}
