"""Pasting a crop into a host image so that the paste border is not a trivial cue.

A hard rectangle edge is the easiest thing for a detector to learn ("suppress boxes with a
seam around them"), which would teach nothing about unknown objects. So the crop fades in
over a feathered border, its colour is pulled part of the way to the region it covers, and
where the crop was cut from a larger image the object's silhouette (estimated against the
surroundings) keeps most of the source's background out.
"""

from __future__ import annotations

import cv2
import numpy as np


def feather_alpha(height: int, width: int, feather: float) -> np.ndarray:
    """(H, W) float32 weights: 1 inside, easing to 0 over ``feather`` pixels at the edges."""
    if feather <= 0:
        return np.ones((height, width), np.float32)
    ys = np.minimum(np.arange(height), np.arange(height)[::-1]) + 0.5
    xs = np.minimum(np.arange(width), np.arange(width)[::-1]) + 0.5
    edge = np.minimum(ys[:, None], xs[None, :]).astype(np.float32)
    t = np.clip(edge / feather, 0.0, 1.0)
    return t * t * (3 - 2 * t)  # smoothstep: no visible ridge where the fade ends


# A silhouette covering less of the box than this is a failed estimate: an ellipse stands in.
MIN_MASK_FRACTION = 0.1
# Covering more, the object fills its box (a billboard, a sign): the whole box is the object.
MAX_MASK_FRACTION = 0.95


def silhouette(image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A soft 0..1 mask of the object in ``image[box]`` (default: all of it): pixels unlike the border.

    The border is that of ``image``: give a crop with some surroundings and the object's box
    within it, since the border of a tight box is mostly the object itself.
    """
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box if box is not None else (0, 0, width, height)
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    distance = np.linalg.norm(pixels[y1:y2, x1:x2] - np.median(border, axis=0), axis=2)
    distance = np.clip(distance * (255.0 / max(float(distance.max()), 1e-6)), 0, 255).astype(np.uint8)
    _, mask = cv2.threshold(distance, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if min(x2 - x1, y2 - y1) >= 9:  # specks of noise off, on crops big enough to have them
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    fraction = float(mask.mean())
    if fraction > MAX_MASK_FRACTION:
        mask = np.ones_like(mask)
    elif fraction < MIN_MASK_FRACTION:
        mask = np.zeros_like(mask)
        w, h = x2 - x1, y2 - y1
        cv2.ellipse(mask, (w // 2, h // 2), (max(w // 2 - 1, 1), max(h // 2 - 1, 1)), 0, 0, 360, 1, -1)
    return cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)


def resize_to(crop: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = width * height < crop.shape[0] * crop.shape[1]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def paste(image: np.ndarray, crop: np.ndarray, box: np.ndarray, *, feather_fraction: float, color_match: float,
          mask: np.ndarray | None = None) -> None:
    """Blend ``crop`` into ``image`` (in place) over the integer xyxy ``box``, resizing it to fit.

    ``feather_fraction`` and ``color_match``: ``ProxySettings.feather`` and ``.color_match``.

    ``color_match`` moves the crop's mean colour that fraction of the way to the covered
    region's (a night-time crop in a daylight street stands out for the wrong reason).
    ``mask`` (crop-sized, 0..1) narrows the blend to an object's silhouette when known.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    width, height = x2 - x1, y2 - y1
    region = image[y1:y2, x1:x2].astype(np.float32)
    patch = resize_to(crop, width, height).astype(np.float32)
    if color_match > 0:
        patch += color_match * (region.mean(axis=(0, 1)) - patch.mean(axis=(0, 1)))
    alpha = feather_alpha(height, width, feather_fraction * min(width, height))
    if mask is not None:
        alpha = alpha * resize_to(mask.astype(np.float32), width, height)
    alpha = alpha[..., None]
    blended = alpha * patch + (1 - alpha) * region
    image[y1:y2, x1:x2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
