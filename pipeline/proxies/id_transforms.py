"""Turning crops of ID objects into non-ID objects that still share their statistics.

Proxies made from ID objects sit right at the ID boundary (the near-OoD case: a thing with a
pedestrian's colours and size that is not a pedestrian):

- ``patch_shuffle``: the crop cut into a grid and the tiles permuted: local texture kept,
  the object's structure gone.
- ``cross_class_blend``: two ID crops of different classes mixed as MixOE does (Zhang et
  al., WACV 2023; it mixes ID with outliers, here both ends are ID objects of other
  classes): ``linear``, a convex mix with the weight near the middle, or ``cut``, one crop's
  part beside the other's (a chimera: top of a sign on the legs of a pedestrian).
- ``texture_swap``: the object's silhouette filled with a foreign texture, shaded by the
  object's own brightness: an ID shape with a surface no ID object has.
- ``interior_swap``: the object's outline kept (its outer band: a sign's rim, a car's body
  line) and what lies inside replaced by its own tiles or another class's, shuffled:
  the right frame around the wrong content, the hardest near-OoD look-alike (a clock face
  in a sign's rim).
- ``framed_outlier``: an ID object's outer band round a whole non-ID object (a pool crop):
  a real foreign thing in a sign's rim or a car's outline, not shuffled tiles.
- ``outline_swap``: the converse of the swaps above: the object's inside (its colours and
  emblem, without its outer band) seen through another outline, another class's silhouette
  or a plain rounded shape unlike its own: the right content in the wrong frame (a sign's
  face on a box).

``outline_swap`` and ``framed_outlier`` are opt-in (``DEFAULT_TRANSFORMS``).

Each returns the new crop and its parameters for the manifest.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pipeline.proxies.blend import resize_to, silhouette

TRANSFORMS = ("patch_shuffle", "cross_class_blend", "texture_swap", "interior_swap", "outline_swap",
              "framed_outlier")
# What `ghostbox proxies` uses unless told: the two newest were not shown to lower
# hallucinations (one street-world fine-tune, within run-to-run spread; docs/benchmarks/recorded.md),
# so they are opt-in.
DEFAULT_TRANSFORMS = ("patch_shuffle", "cross_class_blend", "texture_swap", "interior_swap")
MIN_TILE_PX = 4
MAX_GRID = 4
BLEND_WEIGHTS = (0.4, 0.6)
CUT_FRACTIONS = (0.35, 0.65)
RIM_FRACTIONS = (0.12, 0.22)  # the kept outer band, as a fraction of the object's shorter side
MIN_INTERIOR_FRACTION = 0.15  # of the silhouette; less and there is no inside worth replacing
OUTLINE_ASPECTS = (0.4, 2.5)  # width / height of a new outline
OUTLINE_EXPONENTS = (2.0, 6.0)  # superellipse |x|^n + |y|^n <= 1: an ellipse at 2, a rounded box at 6
MAX_OUTLINE_IOU = 0.75  # against the object's own outline: more and the object would be intact
OUTLINE_TRIES = 6
CONTENT_FRACTION = 0.6  # of the inside's box, per side: the part of the object that moves to the new outline


def patch_shuffle(crop: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    height, width = crop.shape[:2]
    gx = int(rng.integers(2, max(2, min(MAX_GRID, width // MIN_TILE_PX)) + 1))
    gy = int(rng.integers(2, max(2, min(MAX_GRID, height // MIN_TILE_PX)) + 1))
    tw, th = max(1, -(-width // gx)), max(1, -(-height // gy))
    grid = resize_to(crop, tw * gx, th * gy)
    tiles = [grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(gy) for c in range(gx)]
    order = rng.permutation(len(tiles))
    while np.array_equal(order, np.arange(len(tiles))):  # the identity would leave the object intact
        order = rng.permutation(len(tiles))
    rows = [np.hstack([tiles[order[r * gx + c]] for c in range(gx)]) for r in range(gy)]
    shuffled = resize_to(np.vstack(rows), width, height)
    return shuffled, {"name": "patch_shuffle", "grid": [gx, gy], "order": order.tolist()}


def cross_class_blend(crop: np.ndarray, other: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    height, width = crop.shape[:2]
    other = resize_to(other, width, height)
    if rng.uniform() < 0.5:
        weight = float(rng.uniform(*BLEND_WEIGHTS))
        mixed = weight * crop.astype(np.float32) + (1 - weight) * other.astype(np.float32)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8), {"name": "cross_class_blend", "mode": "linear",
                                                                   "weight": round(weight, 4)}
    # Cut across the longer side: that is where the two objects' parts read as one odd object.
    fraction = float(rng.uniform(*CUT_FRACTIONS))
    mixed = crop.copy()
    if height >= width:
        at = round(fraction * height)
        mixed[at:] = other[at:]
    else:
        at = round(fraction * width)
        mixed[:, at:] = other[:, at:]
    return mixed, {"name": "cross_class_blend", "mode": "cut", "axis": "y" if height >= width else "x",
                   "fraction": round(fraction, 4)}


def texture_swap(context: np.ndarray, box: tuple[int, int, int, int], texture: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The object at ``box`` of ``context`` (a crop with some surroundings) re-surfaced; returns it with its mask."""
    x1, y1, x2, y2 = box
    crop = context[y1:y2, x1:x2]
    height, width = crop.shape[:2]
    mask = silhouette(context, box)
    if rng.uniform() < 0.5:  # half the time mirrored, so one texture source gives two surfaces
        texture = texture[:, ::-1]
    surface = resize_to(np.ascontiguousarray(texture), width, height).astype(np.float32)
    # Keep the object's shading (its 3-D look) but not its colours or patterns.
    brightness = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    inside = brightness[mask > 0.5]
    mean = float(inside.mean()) if inside.size else float(brightness.mean())
    shading = np.clip(brightness / max(mean, 1.0), 0.6, 1.4)[..., None]
    alpha = mask[..., None]
    swapped = alpha * surface * shading + (1 - alpha) * crop.astype(np.float32)
    swapped = np.clip(np.rint(swapped), 0, 255).astype(np.uint8)
    return swapped, mask, {"name": "texture_swap", "mask_fraction": round(float(mask.mean()), 4)}


def interior_swap(context: np.ndarray, box: tuple[int, int, int, int], other: np.ndarray | None,
                  rng: np.random.Generator,
                  outlier: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """The object at ``box`` of ``context`` with its inside replaced and its outer band kept.

    The inside is ``other`` (an ID crop of another class) or, without one, the object itself,
    patch-shuffled either way; with ``outlier``, ``other`` is a non-ID crop and goes in whole
    (``framed_outlier``). Returns the crop, its outline mask (to paste by) and the parameters,
    or None when the object is too thin to have an inside.
    """
    x1, y1, x2, y2 = box
    crop = context[y1:y2, x1:x2]
    height, width = crop.shape[:2]
    solid = outline_of(context, box)
    rim = max(1, round(float(rng.uniform(*RIM_FRACTIONS)) * min(height, width)))
    inside = _inside(solid, rim)
    if inside is None:
        return None
    if outlier and other is not None:
        filling = resize_to(other, width, height)
        params: dict[str, Any] = {"name": "framed_outlier"}
    else:
        # An ID filling is always shuffled: a whole object of another class inside the band
        # would be an ID object labelled as background.
        filling, shuffle = patch_shuffle(resize_to(other, width, height) if other is not None else crop, rng)
        params = {"name": "interior_swap", "mode": "foreign" if other is not None else "shuffle",
                  "grid": shuffle["grid"]}
    # A soft seam: a hard one is a cue the detector would learn instead of the content.
    alpha = cv2.GaussianBlur(inside.astype(np.float32), (3, 3), 0)[..., None]
    swapped = alpha * filling.astype(np.float32) + (1 - alpha) * crop.astype(np.float32)
    swapped = np.clip(np.rint(swapped), 0, 255).astype(np.uint8)
    params.update(rim_px=rim, inside_fraction=round(float(inside.sum()) / max(int(solid.sum()), 1), 4))
    return swapped, cv2.GaussianBlur(solid.astype(np.float32), (3, 3), 0), params


def outline_swap(context: np.ndarray, box: tuple[int, int, int, int], other_outline: np.ndarray | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """The inside of the object at ``box`` of ``context`` inside another outline.

    ``other_outline`` is another class's silhouette (0..1, any size); without one, or when it
    is too like the object's own, a superellipse of random aspect is drawn. The result keeps
    the object's height; its width follows the new outline. Returns the crop, its mask and
    the parameters, or None when the object is too thin to have an inside or no outline
    unlike its own was found.
    """
    x1, y1, x2, y2 = box
    crop = context[y1:y2, x1:x2]
    height, width = crop.shape[:2]
    solid = outline_of(context, box)
    rim = max(1, round(sum(RIM_FRACTIONS) / 2 * min(height, width)))  # the middle of the band interior_swap keeps
    inside = _inside(solid, rim)
    if inside is None:
        return None
    # The middle of the inside's box: the object's colours and emblem, without its border (the
    # outline cue) or the parts that make it whole (a car's wheels, a light's other lamps).
    ys, xs = np.nonzero(inside)
    (top, bottom), (left, right) = _middle(ys.min(), ys.max() + 1), _middle(xs.min(), xs.max() + 1)
    content = crop[top:bottom, left:right]
    for attempt in range(OUTLINE_TRIES):
        foreign = other_outline if attempt == 0 else None
        if foreign is not None:
            aspect = foreign.shape[1] / foreign.shape[0]
        else:
            aspect = float(np.exp(rng.uniform(*np.log(OUTLINE_ASPECTS))))
        aspect = float(np.clip(aspect, *OUTLINE_ASPECTS))
        new_w = max(2, round(height * aspect))
        if foreign is not None:
            outline = (resize_to(foreign.astype(np.float32), new_w, height) > 0.5).astype(np.uint8)
            shape: dict[str, Any] = {"outline": "other_class"}
        else:
            exponent = float(rng.uniform(*OUTLINE_EXPONENTS))
            outline = _superellipse(new_w, height, exponent)
            shape = {"outline": "superellipse", "exponent": round(exponent, 3)}
        iou = _centred_iou(solid, outline)
        if iou <= MAX_OUTLINE_IOU and outline.sum() > 0:
            break
    else:
        return None
    filling = resize_to(content, new_w, height)
    mask = cv2.GaussianBlur(outline.astype(np.float32), (3, 3), 0)
    params = {"name": "outline_swap", **shape, "aspect": round(new_w / height, 4), "iou_with_own": round(iou, 4),
              "rim_px": rim}
    return filling, mask, params


def outline_of(context: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The filled outline (0/1, the box's size) of the object at ``box`` of ``context``."""
    return _filled((silhouette(context, box) > 0.5).astype(np.uint8))


def _inside(solid: np.ndarray, rim: int) -> np.ndarray | None:
    """The outline shrunk by ``rim`` px, or None when too little of it is left to call an inside."""
    inside = cv2.erode(solid, np.ones((2 * rim + 1, 2 * rim + 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0)
    return inside if inside.sum() >= MIN_INTERIOR_FRACTION * max(int(solid.sum()), 1) else None


def _middle(start: int, stop: int) -> tuple[int, int]:
    """The middle ``CONTENT_FRACTION`` of ``start..stop``, at least one pixel."""
    keep = max(1, round(CONTENT_FRACTION * (stop - start)))
    first = start + (stop - start - keep) // 2
    return first, first + keep


def _centred_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks of the same height, centred side by side in one frame."""
    width = max(a.shape[1], b.shape[1])
    frames = []
    for mask in (a, b):
        frame = np.zeros((a.shape[0], width), bool)
        left = (width - mask.shape[1]) // 2
        frame[:, left:left + mask.shape[1]] = mask > 0
        frames.append(frame)
    return float((frames[0] & frames[1]).sum()) / max(int((frames[0] | frames[1]).sum()), 1)


def _superellipse(width: int, height: int, exponent: float) -> np.ndarray:
    x = (np.arange(width) + 0.5) / width * 2 - 1
    y = (np.arange(height) + 0.5) / height * 2 - 1
    return ((np.abs(x)[None, :] ** exponent + np.abs(y)[:, None] ** exponent) <= 1.0).astype(np.uint8)


def _filled(mask: np.ndarray) -> np.ndarray:
    """The mask's convex hull, filled: the estimated silhouette is often in pieces (a sign's
    white face, a windscreen reading as background), but its outline is what the band keeps."""
    points = cv2.findNonZero(mask)
    filled = np.zeros_like(mask)
    if points is not None:
        cv2.fillConvexPoly(filled, cv2.convexHull(points), 1)
    return filled
