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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.errors import GhostboxError


def _as(array: Any, dtype: type, shape_tail: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(array, dtype=dtype))
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        want = "(N" + "".join(f", {s}" for s in shape_tail) + ")"
        raise GhostboxError(f"Detections.{name}: expected shape {want}, got {arr.shape}")
    return arr


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
        logits = np.asarray(self.logits, dtype=np.float32)
        feats = np.asarray(self.box_features, dtype=np.float32)
        if logits.ndim != 2 or len(logits) != n:
            raise GhostboxError(f"Detections.logits: expected shape ({n}, nc), got {logits.shape}")
        if feats.ndim != 2 or len(feats) != n:
            raise GhostboxError(f"Detections.box_features: expected shape ({n}, D), got {feats.shape}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "logits", np.ascontiguousarray(logits))
        object.__setattr__(self, "box_features", np.ascontiguousarray(feats))
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

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Select boxes by boolean mask, index array, slice or int; every per-box field follows."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
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

    def with_data(self, **arrays: np.ndarray) -> Detections:
        """A copy with further per-box arrays (e.g. score=..., hallucination=...)."""
        return replace(self, data={**self.data, **{k: np.asarray(v) for k, v in arrays.items()}})

    def with_meta(self, **meta: Any) -> Detections:
        """A copy with other per-frame fields (source, frame, ...)."""
        return replace(self, **meta)

    def to_record(self, decimals: int = 2) -> dict[str, Any]:
        """The JSON-lines record of this frame (schema in README, `ghostbox detect`)."""
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
