"""Resizing a frame to a stream's `resize` setting: a longest side, or an exact (width, height)."""

from __future__ import annotations

import cv2
import numpy as np


def resize(image: np.ndarray, size: tuple[int, int] | int | None) -> np.ndarray:
    if size is None:
        return image
    height, width = image.shape[:2]
    if isinstance(size, int):
        scale = size / max(height, width)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
    else:
        target = (int(size[0]), int(size[1]))
    if target == (width, height):
        return image
    # area averaging when shrinking (no aliasing), bilinear when enlarging
    interpolation = cv2.INTER_AREA if target[0] < width else cv2.INTER_LINEAR
    return cv2.resize(image, target, interpolation=interpolation)
