"""Strategy ``mined``: the current detector's own hallucinations on the outlier pool.

The detector runs over (a seeded sample of) the pool images at ``conf``; each box that
matches no ID ground truth of its image (IoU < 0.5 with every ID box; pool images usually
have none) is an object the detector wrongly believes in, and so the hardest negative
there is. Its crop is then pasted into ID images like any other outlier crop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.box_geometry import pixel_box
from pipeline.detect.frame_loop import detect_frames
from pipeline.errors import GhostboxError
from pipeline.proxies.outlier_sources import MIN_CROP_SIDE, BoxCrop, BoxCrops, OutlierPool, PoolImage
from pipeline.proxies.placement import box_overlaps

MATCH_IOU = 0.5
# Generator stream of the pool sample; the per-image streams of the strategies use other keys.
_SAMPLE_STREAM = 1000


@dataclass
class MiningResult:
    crops: BoxCrops
    images_run: int
    detections: int
    matched_id: int  # detections dropped: they are real ID objects of the pool image
    too_small: int

    def describe(self) -> dict[str, Any]:
        return {"images_run": self.images_run, "detections": self.detections, "kept": len(self.crops),
                "matched_id_ground_truth": self.matched_id, "too_small": self.too_small}


def sample_pool(pool: OutlierPool, max_images: int, seed: int) -> list[int]:
    """Indices of the pool images to run on: all of them, or a seeded sample in pool order."""
    n = len(pool.images)
    if n <= max_images:
        return list(range(n))
    chosen = np.random.default_rng([seed, _SAMPLE_STREAM]).choice(n, size=max_images, replace=False)
    return sorted(int(i) for i in chosen)


def mine_hard_negatives(detector: Any, pool: OutlierPool, *, conf: float, max_images: int, seed: int,
                        advance: Callable[[int], None] | None = None) -> MiningResult:
    """Run ``detector`` (a ``pipeline.detect.Detector``) over the pool and keep the boxes matching no ID object."""
    chosen = sample_pool(pool, max_images, seed)
    crops: list[BoxCrop] = []
    detections = matched = too_small = 0
    entries = (pool.images[i] for i in chosen)
    with_frames = ((entry, _read_pool_image(entry)) for entry in entries)  # read lazily: one batch in memory
    for (entry, frame), dets in detect_frames(detector, with_frames, image=lambda pair: pair[1], conf=conf,
                                              advance=advance):
        detections += len(dets)
        labels = dets.labels
        for k in range(len(dets)):
            if len(entry.id_boxes) and box_overlaps(dets.xyxy[k], entry.id_boxes)[0].max() >= MATCH_IOU:
                matched += 1
                continue
            box = pixel_box(dets.xyxy[k], frame.shape[1], frame.shape[0])
            if min(box[2] - box[0], box[3] - box[1]) < MIN_CROP_SIDE:
                too_small += 1
                continue
            crops.append(BoxCrop(entry.path, box, {
                "kind": "mined", "file": entry.file, "box": list(box), "label": labels[k],
                "conf": round(float(dets.confidence[k]), 4)}))
    return MiningResult(BoxCrops("mined", crops), len(chosen), detections, matched, too_small)


def _read_pool_image(entry: PoolImage) -> np.ndarray:
    frame = cv2.imread(str(entry.path), cv2.IMREAD_COLOR)
    if frame is None:
        raise GhostboxError(f"{entry.path}: cannot read pool image {entry.file!r}")
    return frame
