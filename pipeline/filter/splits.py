"""Fit / calibration splits that keep related boxes on one side.

Boxes of one image share its light, background and neighbours; boxes of neighbouring video
frames are the same objects a few pixels apart. Split per box and the calibration scores
come out optimistic (the same object sits in the KNN bank), so the thresholds are too tight
for new footage. Here a split never cuts a group:

- images: a group is an image (`group_split`);
- video and frame sequences: a group is a contiguous block of frames (`time_blocks`), so
  the calibration side is whole stretches of time the fit never saw.
"""

from __future__ import annotations

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError

TIME_BLOCKS = 10  # blocks a video is cut into; ~30% of them calibrate
CALIBRATION_FRACTION = 0.3  # of the ID boxes (whole groups), held out to set the thresholds


def time_blocks(frames: np.ndarray, blocks: int = TIME_BLOCKS) -> np.ndarray:
    """Block id per box: the frame range cut into `blocks` contiguous, equally long stretches."""
    frames = np.asarray(frames, np.int64)
    if len(frames) == 0:
        return np.zeros(0, np.int64)
    lo, hi = int(frames.min()), int(frames.max()) + 1
    blocks = max(1, min(blocks, hi - lo))
    return np.minimum((frames - lo) * blocks // (hi - lo), blocks - 1)


def group_split(groups: np.ndarray, calibration_fraction: float = CALIBRATION_FRACTION,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit mask, calibration mask): a seeded choice of whole groups, about the given fraction of them."""
    if not 0.0 < calibration_fraction < 1.0:
        raise GhostboxError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    groups = np.asarray(groups)
    unique = np.unique(groups)
    if len(unique) < 2:
        raise GhostboxError(f"cannot split {len(unique)} group(s) (images or time blocks) into fit and calibration; "
                            f"give more images or a longer clip, or a separate --calibration-id set")
    take = min(max(1, int(round(len(unique) * calibration_fraction))), len(unique) - 1)
    chosen = np.random.default_rng(seed).choice(unique, take, replace=False)
    calib = np.isin(groups, chosen)
    return ~calib, calib


def split_fit_calibration(boxes: Detections, calibration_fraction: float = CALIBRATION_FRACTION, seed: int = 0,
                          groups: np.ndarray | None = None) -> tuple[Detections, Detections]:
    """(fit, calibration) boxes (`split_mask`)."""
    fit = split_mask(boxes, calibration_fraction, seed, groups)
    return boxes[fit], boxes[~fit]


def split_mask(boxes: Detections, calibration_fraction: float = CALIBRATION_FRACTION, seed: int = 0,
               groups: np.ndarray | None = None) -> np.ndarray:
    """Fit mask; with `groups` whole groups go to one side, else a seeded per-class box split.

    Without groups a class with a single box goes to the fit set (the scorer needs it more
    than the threshold does: its class falls back to the global threshold anyway).
    """
    if groups is not None:
        if len(groups) != len(boxes):
            raise GhostboxError(f"split: {len(groups)} group ids for {len(boxes)} boxes")
        fit, _ = group_split(groups, calibration_fraction, seed)
        return fit
    if not 0.0 < calibration_fraction < 1.0:
        raise GhostboxError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    rng = np.random.default_rng(seed)
    calib = np.zeros(len(boxes), bool)
    for c in np.unique(boxes.class_id):
        rows = np.flatnonzero(boxes.class_id == c)
        take = int(round(len(rows) * calibration_fraction))
        take = min(take, len(rows) - 1)
        calib[rng.choice(rows, take, replace=False)] = True
    return ~calib
