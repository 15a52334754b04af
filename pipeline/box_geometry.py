"""Float boxes on integer pixels: `pixel_box` (the pixels a box covers) and `cut` (those pixels of an image).

One rounding for every crop cut from a frame (the detector's crops, the flagged-box archive, the
proxy miners): outward to whole pixels, clipped to the image, and never empty (at least 1x1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pixel_box(xyxy: Sequence[float] | np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel box (left, top, right, bottom) holding a float box, clipped to the image and at least 1 px wide."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    left, top = int(np.clip(np.floor(x1), 0, width - 1)), int(np.clip(np.floor(y1), 0, height - 1))
    right, bottom = int(np.clip(np.ceil(x2), left + 1, width)), int(np.clip(np.ceil(y2), top + 1, height))
    return left, top, right, bottom


def cut(image: np.ndarray, xyxy: Sequence[float] | np.ndarray) -> np.ndarray:
    """The pixels of `image` under the float box `xyxy` (a view; see `pixel_box`)."""
    left, top, right, bottom = pixel_box(xyxy, image.shape[1], image.shape[0])
    return image[top:bottom, left:right]


def cut_crops(frame: np.ndarray, xyxy: np.ndarray) -> list[np.ndarray]:
    """A contiguous copy of the pixels under each box (a crop outlives the frame it was cut from)."""
    return [np.ascontiguousarray(cut(frame, box)) for box in xyxy]
