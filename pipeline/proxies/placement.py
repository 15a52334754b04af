"""Where a pasted region goes: its size from the ID boxes of the dataset, its spot clear of ID objects.

A region is accepted when, against every ID box of the host (crowd regions included) and
every region pasted before it:

- IoU <= ``max_iou``, and
- their intersection is at most ``max_cover`` of the smaller of the two boxes.

The second rule matters: a large paste over a small traffic light has a tiny IoU while
hiding the light completely, and a small paste on a large car has a tiny IoU while sitting
inside a box labelled "car", teaching the detector that the pasted thing is part of a car.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.data.records import ImageRecord

# Sizes when the ID set has no boxes at all: a tenth to a third of the image side.
_FALLBACK_SIDES = (0.1, 0.33)


class PlacementRules(BaseModel):
    """Where a pasted region may go; ``model_dump()`` is the manifest's ``placement``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_iou: float = Field(0.05, ge=0.0, lt=1.0, description="largest IoU of a pasted region with an ID box or "
                           "another paste")
    max_cover: float = Field(0.1, ge=0.0, le=1.0, description="largest fraction of an ID box (or of the paste) "
                             "their intersection may be")
    tries: int = Field(50, ge=1, description="spots tried per pasted region")
    min_side: int = Field(8, ge=1, description="smallest side of a paste in pixels: smaller is noise to the "
                          "detector, not an object")
    max_fraction: float = Field(0.5, gt=0.0, le=1.0, description="largest paste side as a fraction of the host's, "
                                "so one paste cannot fill the frame")
    size_jitter: float = Field(0.25, ge=0.0, description="sigma of the log-normal factor on the sampled area")


class IdBoxPrior:
    """ID boxes as (cx, cy, w, h) fractions of their image: what sizes and spots look plausible."""

    def __init__(self, boxes: np.ndarray) -> None:
        self.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)

    @classmethod
    def from_records(cls, records: Iterable[ImageRecord]) -> IdBoxPrior:
        rows = []
        for record in records:
            if not record.width or not record.height or not len(record):
                continue
            boxes = record.boxes_xyxy[~record.crowd].astype(np.float64)
            w, h = float(record.width), float(record.height)
            rows.append(np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / w, (boxes[:, 1] + boxes[:, 3]) / 2 / h,
                                  (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h], axis=1))
        return cls(np.concatenate(rows) if rows else np.zeros((0, 4)))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def sample(self, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """(cx, cy, w, h) as fractions: one ID box, or a made-up one when there are none."""
        if len(self):
            return tuple(float(v) for v in self.boxes[rng.integers(len(self))])  # type: ignore[return-value]
        w, h = rng.uniform(*_FALLBACK_SIDES, size=2)
        return float(rng.uniform(w / 2, 1 - w / 2)), float(rng.uniform(h / 2, 1 - h / 2)), float(w), float(h)


def box_overlaps(box: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of ``box`` with each of ``others``, the fraction of each other box it covers, and of itself."""
    others = np.asarray(others, np.float64).reshape(-1, 4)
    box = np.asarray(box, np.float64)
    iw = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = iw * ih
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    other_area = np.maximum((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]), 1e-9)
    return inter / (area + other_area - inter), inter / other_area, inter / area


def fits(box: np.ndarray, id_boxes: np.ndarray, pasted: np.ndarray, rules: PlacementRules) -> bool:
    """Whether ``box`` may be pasted given the host's ID boxes and the regions pasted so far."""
    for others in (id_boxes, pasted):
        if len(others):
            iou, cover, covered = box_overlaps(box, others)
            if iou.max() > rules.max_iou or cover.max() > rules.max_cover or covered.max() > rules.max_cover:
                return False
    return True


def sample_size(rng: np.random.Generator, prior: IdBoxPrior, crop_aspect: float, host_w: int, host_h: int,
                rules: PlacementRules) -> tuple[int, int, float, float]:
    """(w, h) in host pixels for a crop of aspect w/h, and the centre of the ID box it was modelled on."""
    cx, cy, fw, fh = prior.sample(rng)
    area = fw * host_w * fh * host_h * math.exp(rng.normal(0.0, rules.size_jitter))
    id_aspect = (fw * host_w) / max(fh * host_h, 1e-9)
    # Pure ID aspect squashes a billboard into a pedestrian's shape, pure crop aspect ignores what
    # boxes look like here: a random point between the two (in log space) keeps both plausible.
    u = rng.uniform()
    aspect = math.exp((1 - u) * math.log(max(crop_aspect, 1e-3)) + u * math.log(max(id_aspect, 1e-3)))
    w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
    shrink = min(1.0, rules.max_fraction * host_w / w, rules.max_fraction * host_h / h)
    w, h = max(w * shrink, rules.min_side), max(h * shrink, rules.min_side)
    return round(min(w, host_w)), round(min(h, host_h)), cx * host_w, cy * host_h


def find_spot(rng: np.random.Generator, prior: IdBoxPrior, crop_aspect: float, host_w: int, host_h: int,
              id_boxes: np.ndarray, pasted: np.ndarray, rules: PlacementRules) -> np.ndarray | None:
    """An integer xyxy box that ``fits``, or None after ``rules.tries`` tries.

    Each try draws a new size. The first half of the tries put the box near the spot of the ID
    box its size came from (in street scenes size and height in the frame go together); the
    rest anywhere in the image, to find room in crowded frames.
    """
    if host_w < rules.min_side or host_h < rules.min_side:
        return None
    id_boxes = np.asarray(id_boxes, np.float64).reshape(-1, 4)
    pasted = np.asarray(pasted, np.float64).reshape(-1, 4)
    for attempt in range(rules.tries):
        w, h, cx, cy = sample_size(rng, prior, crop_aspect, host_w, host_h, rules)
        if attempt < rules.tries // 2:
            spread = 0.05 + 0.25 * attempt / max(rules.tries // 2, 1)
            cx += rng.normal(0.0, spread * host_w)
            cy += rng.normal(0.0, spread * host_h / 2)
            x1 = round(min(max(cx - w / 2, 0), host_w - w))
            y1 = round(min(max(cy - h / 2, 0), host_h - h))
        else:
            x1 = int(rng.integers(0, host_w - w + 1))
            y1 = int(rng.integers(0, host_h - h + 1))
        box = np.array([x1, y1, x1 + w, y1 + h], np.float64)
        if fits(box, id_boxes, pasted, rules):
            return box.astype(np.int64)
    return None
