"""Objects in a street: placement, depth order, occlusion, truncation and tight boxes.

A box is the extent of the pixels where the object actually shows (coverage >= VISIBLE_ALPHA
after nearer objects are laid over it), in pixel-edge coordinates: an object covering pixel
columns 10..19 has x1 = 10, x2 = 20.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.synth.backgrounds import Background, street_background
from pipeline.synth.canvas import Sprite, rgb
from pipeline.synth.kinds import SPECS, ObjectSpec
from pipeline.synth.lighting import apply_conditions, sample_conditions

VISIBLE_ALPHA = 0.3  # a pixel counts towards a box when at least this much of the object shows
MIN_IN_FRAME = 0.6  # truncation limit: share of the object that must lie inside the image
MIN_VISIBLE = 0.65  # occlusion limit: share of the in-image part that nearer objects leave visible
# ID objects are held to stricter limits, so the detector learns whole-enough examples; the
# OoD kinds keep the looser ones above (their images stay as they were)
MIN_IN_FRAME_ID = 0.7
MIN_VISIBLE_ID = 0.75
MIN_BOX_PX = 5
TRUNCATED_BELOW = 0.97  # in-frame share under which an object is flagged truncated
OCCLUDED_BELOW = 0.9  # visible share under which an object is flagged occluded
POLE_COLORS = (rgb(70, 72, 75), rgb(50, 52, 54), rgb(110, 112, 115), rgb(40, 70, 50))


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for one image: depends on (seed, split, index) only, never on order."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def size_scale(width: int, height: int) -> float:
    """Object sizes are specified for a 320 px image and grow with the smaller side."""
    return min(width, height) / 320.0


@dataclass
class Placed:
    """A sprite at an integer position, with its depth (larger is nearer) and support poles."""

    name: str
    sprite: Sprite
    x0: int
    y0: int
    depth: float
    poles: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    pole_color: tuple[float, float, float] = POLE_COLORS[0]
    shadow: bool = False


@dataclass
class SceneObject:
    """One object as ground truth: class or kind name, its tier and its visible box."""

    name: str
    tier: str  # "id", "near" or "far"
    box: tuple[int, int, int, int]  # x1, y1, x2, y2
    occluded: bool
    truncated: bool
    attributes: dict = field(default_factory=dict)
    # the in-frame box of the whole object as if nothing stood in front of it
    full_box: tuple[int, int, int, int] | None = None


@dataclass
class Scene:
    image: np.ndarray  # uint8 BGR
    objects: list[SceneObject]
    timeofday: str
    weather: str


def make_sprite(rng: np.random.Generator, name: str, scale: float, phase: float | None = None) -> Sprite:
    spec = SPECS[name]
    lo, hi = spec.height_px
    height = rng.uniform(lo * scale, hi * scale)
    return spec.draw(rng, height, phase)


def place(rng: np.random.Generator, spec: ObjectSpec, sprite: Sprite, bg: Background, width: int,
          height: int) -> Placed:
    """A position that fits the object's kind: standing on the ground, up a pole, or anywhere."""
    sw, sh = sprite.width, sprite.height
    x0 = rng.uniform(-0.35 * sw, width - 0.65 * sw)
    if spec.placement == "ground":
        # pinhole camera 1.5 m above the road: an object's feet sit lower the bigger it looks
        bottom = bg.horizon + sh * (1.5 / spec.real_height_m) * rng.uniform(0.8, 1.25)
        bottom = min(bottom, height + 0.3 * sh)
        return Placed(spec.name, sprite, int(round(x0)), int(round(bottom - sh)), bottom, shadow=True)
    if spec.placement == "pole":
        cy = rng.uniform(0.06 * height, bg.horizon + 0.2 * (height - bg.horizon))
        y0 = cy - sh / 2
        base = min(height + 10.0, max(bg.horizon + 4.0, y0 + sh) + rng.uniform(0.5, 3.5) * sh)
        cx = x0 + sw / 2
        thick = max(1.5, 0.12 * min(sw, sh))
        color = POLE_COLORS[int(rng.integers(len(POLE_COLORS)))]
        if spec.name == "billboard":
            poles = [(x0 + 0.25 * sw, y0 + sh, x0 + 0.25 * sw, base, thick),
                     (x0 + 0.75 * sw, y0 + sh, x0 + 0.75 * sw, base, thick)]
        elif rng.random() < 0.25:  # mast arm reaching in from the nearer image side
            edge = 4.0 if cx < width / 2 else width - 4.0
            arm_y = y0 + 0.1 * sh
            poles = [(cx, arm_y, edge, arm_y, thick), (edge, arm_y, edge, base, thick * 1.5)]
        else:
            poles = [(cx, y0 + sh, cx, base, thick)]
        return Placed(spec.name, sprite, int(round(x0)), int(round(y0)), base, poles, color)
    y0 = rng.uniform(-0.3 * sh, height - 0.7 * sh)
    return Placed(spec.name, sprite, int(round(x0)), int(round(y0)), rng.uniform(bg.horizon, height))


# -- visibility ------------------------------------------------------------------------------
def _region(p: Placed, width: int, height: int):
    """(x0, y0, x1, y1) of the part inside the image and the matching sprite slices, or None."""
    sh, sw = p.sprite.alpha.shape
    ix0, iy0 = max(0, p.x0), max(0, p.y0)
    ix1, iy1 = min(width, p.x0 + sw), min(height, p.y0 + sh)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    return (ix0, iy0, ix1, iy1), (slice(iy0 - p.y0, iy1 - p.y0), slice(ix0 - p.x0, ix1 - p.x0))


@dataclass
class _Measured:
    box: tuple[int, int, int, int] | None
    in_frame: float
    visible: float
    full_box: tuple[int, int, int, int] | None = None


def _mask_box(mask: np.ndarray, x0: int, y0: int) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not (rows.size and cols.size):
        return None
    return (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)


def _measure(k: int, objs: Sequence[Placed], width: int, height: int) -> _Measured:
    """Box and visible shares of objs[k] with every nearer object laid over it."""
    p = objs[k]
    reg = _region(p, width, height)
    total = float(p.sprite.alpha.sum())
    if reg is None or total <= 0:
        return _Measured(None, 0.0, 0.0)
    (x0, y0, x1, y1), sl = reg
    seen = p.sprite.alpha[sl].copy()
    inside = float(seen.sum())
    key = (p.depth, k)  # depth order, ties broken by placement order, as compose() draws
    for j, q in enumerate(objs):
        if (q.depth, j) <= key:
            continue
        qreg = _region(q, width, height)
        if qreg is None:
            continue
        (qx0, qy0, qx1, qy1), qsl = qreg
        ox0, oy0, ox1, oy1 = max(x0, qx0), max(y0, qy0), min(x1, qx1), min(y1, qy1)
        if ox1 <= ox0 or oy1 <= oy0:
            continue
        cover = q.sprite.alpha[qsl][oy0 - qy0:oy1 - qy0, ox0 - qx0:ox1 - qx0]
        seen[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0] *= 1.0 - cover
    box = _mask_box(seen >= VISIBLE_ALPHA, x0, y0)
    full_box = _mask_box(p.sprite.alpha[sl] >= VISIBLE_ALPHA, x0, y0)
    return _Measured(box, inside / total, float(seen.sum()) / max(inside, 1e-6), full_box)


def _acceptable(m: _Measured, name: str) -> bool:
    is_id = SPECS[name].tier == "id"
    min_in_frame = MIN_IN_FRAME_ID if is_id else MIN_IN_FRAME
    min_visible = MIN_VISIBLE_ID if is_id else MIN_VISIBLE
    if m.box is None or m.in_frame < min_in_frame or m.visible < min_visible:
        return False
    return min(m.box[2] - m.box[0], m.box[3] - m.box[1]) >= MIN_BOX_PX


def _try_add(p: Placed, accepted: list[Placed], width: int, height: int) -> bool:
    """Add p if it stays visible enough and hides no accepted object too much."""
    trial = accepted + [p]
    n = len(trial) - 1
    if not _acceptable(_measure(n, trial, width, height), p.name):
        return False
    for k, q in enumerate(accepted):
        if (p.depth, n) > (q.depth, k) and not _acceptable(_measure(k, trial, width, height), q.name):
            return False
    accepted.append(p)
    return True


def ground_truth(objs: Sequence[Placed], width: int, height: int,
                 min_box_px: int = MIN_BOX_PX) -> list[SceneObject | None]:
    """One SceneObject per placed object (None where nothing of it shows)."""
    out: list[SceneObject | None] = []
    for k, p in enumerate(objs):
        m = _measure(k, objs, width, height)
        if m.box is None or min(m.box[2] - m.box[0], m.box[3] - m.box[1]) < min_box_px:
            out.append(None)
            continue
        out.append(SceneObject(p.name, SPECS[p.name].tier, m.box, m.visible < OCCLUDED_BELOW,
                               m.in_frame < TRUNCATED_BELOW, dict(p.sprite.attributes), m.full_box))
    return out


# -- drawing -----------------------------------------------------------------------------------
def compose(bg: Background, objs: Sequence[Placed]) -> tuple[np.ndarray, np.ndarray]:
    """Background with poles, shadows and objects (far to near): float BGR image and glow map."""
    img = bg.image.copy()
    glow = bg.glow.copy()
    height, width = glow.shape
    shadow = np.zeros_like(glow)
    for p in objs:
        for x0, y0, x1, y1, t in p.poles:
            for layer, color in ((img, p.pole_color), (glow, 0.0)):
                cv2.line(layer, (int(x0), int(y0)), (int(x1), int(y1)), color, max(1, int(round(t))), cv2.LINE_AA)
        if p.shadow:
            centre = (int(p.x0 + p.sprite.width / 2), int(p.y0 + p.sprite.height - 1))
            axes = (max(1, int(0.5 * p.sprite.width)), max(1, int(0.06 * p.sprite.height)))
            cv2.ellipse(shadow, centre, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    img *= (1.0 - 0.35 * shadow)[..., None]
    order = sorted(range(len(objs)), key=lambda k: (objs[k].depth, k))
    for k in order:
        p = objs[k]
        reg = _region(p, width, height)
        if reg is None:
            continue
        (x0, y0, x1, y1), sl = reg
        a = p.sprite.alpha[sl]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1.0 - a[..., None]) + p.sprite.color[sl]
        glow[y0:y1, x0:x1] = glow[y0:y1, x0:x1] * (1.0 - a) + p.sprite.glow[sl]
    return img, glow


def render_scene(rng: np.random.Generator, width: int, height: int, required: Sequence[str],
                 optional: Sequence[str] = ()) -> Scene:
    """A street scene holding every `required` object (tried hard) and what fits of `optional`.

    A required object is given many positions to try; if none fits (a tiny image), it is left
    out, so callers that need it must check the returned objects.
    """
    timeofday, weather = sample_conditions(rng)
    bg = street_background(rng, width, height, timeofday, weather)
    scale = size_scale(width, height)
    accepted: list[Placed] = []
    for name, tries in [(n, 40) for n in required] + [(n, 4) for n in optional]:
        sprite = make_sprite(rng, name, scale)
        for _ in range(tries):
            if _try_add(place(rng, SPECS[name], sprite, bg, width, height), accepted, width, height):
                break
    truth = ground_truth(accepted, width, height)
    img, glow = compose(bg, accepted)
    image = apply_conditions(img, glow, rng, timeofday, weather)
    return Scene(image, [t for t in truth if t is not None], timeofday, weather)
