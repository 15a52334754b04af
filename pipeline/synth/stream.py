"""A video of a street where ID and test-group OoD objects cross a slowly changing scene.

Every frame is a pure function of (config, frame index): the whole stream is planned from
the seed (background, fixed objects, a schedule of moving actors with constant velocities),
and each frame only evaluates positions at its own time, so any frame renders on demand.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.errors import GhostboxError
from pipeline.synth.backgrounds import Background, street_background
from pipeline.synth.canvas import Sprite
from pipeline.synth.config import WorldConfig
from pipeline.synth.kinds import SPECS, ood_kind_names
from pipeline.synth.lighting import apply_conditions
from pipeline.synth.scene import Placed, compose, ground_truth, image_rng, make_sprite, place, size_scale
from pipeline.synth.writers import write_jsonl

STREAM_MIN_BOX_PX = 3
# kinds that move and how fast, in object heights per second
MOVING_SPEED = {"pedestrian": (0.3, 0.6), "car": (1.5, 3.5), "dog": (0.5, 1.2), "stroller": (0.3, 0.6),
                "shopping_cart": (0.3, 0.6)}
FLOATING_SPEED = (0.2, 0.6)
ANIMATED = {"pedestrian", "dog"}  # walking gait follows the distance travelled


@dataclass(frozen=True)
class _Actor:
    track_id: int
    name: str
    t0: float  # frame at which it enters
    x0: float  # left edge at t0
    y0: float
    vx: float  # px per frame
    vy: float
    depth: float
    sprite_w: int
    placed: Placed  # sprite drawn once, position overwritten per frame


@dataclass(frozen=True)
class _Plan:
    background: Background
    timeofday: str
    weather: str
    actors: tuple[_Actor, ...]


def _actor_sprite(config: WorldConfig, track_id: int, name: str, phase: float = 0.0) -> Sprite:
    """An actor's own generator gives the same object in every frame; only the gait changes."""
    rng = image_rng(config.seed, "stream-actor", track_id)
    return make_sprite(rng, name, size_scale(config.width, config.height), phase)


@functools.lru_cache(maxsize=4)
def _plan(config: WorldConfig) -> _Plan:
    rng = image_rng(config.seed, "stream", 0)
    w, h = config.width, config.height
    timeofday = ("daytime", "daytime", "dawn/dusk")[int(rng.integers(3))]
    weather = ("clear", "partly cloudy", "overcast")[int(rng.integers(3))]
    bg = street_background(rng, w, h, timeofday, weather)
    actors: list[_Actor] = []
    # fixed street furniture: lights and signs and their look-alikes stand for the whole video
    fixed = ["traffic light", "traffic sign"] + [k for k in ood_kind_names("near", "test")
                                                 if SPECS[k].placement == "pole" or k in ("bench", "traffic_cone")]
    for name in rng.choice(fixed, size=int(rng.integers(2, 5)), replace=False):
        name = str(name)
        sprite = _actor_sprite(config, len(actors), name)
        p = place(rng, SPECS[name], sprite, bg, w, h)
        actors.append(_Actor(len(actors), name, -math.inf, p.x0, p.y0, 0.0, 0.0, p.depth, sprite.width, p))
    # moving things: mostly ID, then test-group near look-alikes that walk or roll, then far kinds
    far = ood_kind_names("far", "test")
    movers = ["pedestrian", "car", "dog", "stroller", "shopping_cart"] + list(far)
    weights = np.array([0.35, 0.3, 0.1, 0.05, 0.05] + [0.15 / len(far)] * len(far))
    mean_cross = 8.0 * config.stream_fps  # typical frames an actor stays in view
    gap = mean_cross / max(config.stream_objects_on_screen, 1)
    t = -mean_cross
    while t < config.stream_frames and config.stream_objects_on_screen > 0:
        name = str(movers[int(rng.choice(len(movers), p=weights / weights.sum()))])
        sprite = _actor_sprite(config, len(actors), name)
        p = place(rng, SPECS[name], sprite, bg, w, h)
        lo, hi = MOVING_SPEED.get(name, FLOATING_SPEED)
        speed = rng.uniform(lo, hi) * sprite.height / config.stream_fps
        direction = 1.0 if rng.random() < 0.5 else -1.0
        x_enter = -sprite.width if direction > 0 else w
        vy = -speed * 0.5 if name == "balloon" else 0.0  # balloons rise as they drift
        actors.append(_Actor(len(actors), name, t, x_enter, p.y0, direction * speed, vy, p.depth, sprite.width, p))
        t += rng.exponential(gap)
    return _Plan(bg, timeofday, weather, tuple(actors))


def _position(a: _Actor, frame: int) -> tuple[float, float] | None:
    if math.isinf(a.t0):
        return a.x0, a.y0
    dt = frame - a.t0
    if dt < 0:
        return None
    return a.x0 + a.vx * dt, a.y0 + a.vy * dt


def render_stream_frame(config: WorldConfig, index: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Frame `index` of the world's stream (uint8 BGR) and its ground-truth boxes.

    Each box is {"xyxy": [x1, y1, x2, y2], "full_xyxy", "label", "ood", "kind", "tier", "track_id",
    "occluded", "truncated"}; `xyxy` is the visible pixels' box, `full_xyxy` the in-frame box of
    the whole object as if nothing stood in front of it; `label` and `kind` are the class or
    OoD kind name.
    """
    if not 0 <= index < config.stream_frames:
        raise GhostboxError(f"stream frame index={index} is outside 0..{config.stream_frames - 1}")
    plan = _plan(config)
    w, h = config.width, config.height
    placed: list[Placed] = []
    track_ids: list[int] = []
    for a in plan.actors:
        pos = _position(a, index)
        if pos is None or pos[0] > w or pos[0] + a.sprite_w < 0 or pos[1] > h:
            continue
        p = a.placed
        if a.name in ANIMATED and not math.isinf(a.t0):
            # redraw the same object (same seed) in the gait phase its travel implies
            phase = abs(a.vx) * (index - a.t0) / max(p.sprite.height, 1) * 2 * math.pi * 0.8
            sprite = _actor_sprite(config, a.track_id, a.name, phase)
            p = Placed(a.name, sprite, p.x0, p.y0, p.depth, p.poles, p.pole_color, p.shadow)
        dx, dy = pos[0] - a.placed.x0, pos[1] - a.placed.y0
        p = Placed(a.name, p.sprite, int(round(pos[0])), int(round(pos[1])), a.depth,
                   [(x0 + dx, y0 + dy, x1 + dx, y1 + dy, t) for x0, y0, x1, y1, t in p.poles],
                   p.pole_color, p.shadow)
        placed.append(p)
        track_ids.append(a.track_id)
    truth = ground_truth(placed, w, h, STREAM_MIN_BOX_PX)
    img, glow = compose(plan.background, placed)
    # one generator per video keeps exposure and noise steady; a slow drift changes the light
    drift = 1.0 + 0.12 * math.sin(2 * math.pi * index / (10.0 * config.stream_fps))
    frame = apply_conditions(img, glow, image_rng(config.seed, "stream-light", 0), plan.timeofday,
                             plan.weather, drift)
    boxes: list[dict[str, Any]] = []
    for obj, track_id in zip(truth, track_ids):
        if obj is None:
            continue
        full = obj.full_box or obj.box
        boxes.append({"xyxy": [float(v) for v in obj.box], "full_xyxy": [float(v) for v in full],
                      "label": obj.name, "kind": obj.name,
                      "ood": obj.tier != "id", "tier": obj.tier, "track_id": track_id,
                      "occluded": obj.occluded, "truncated": obj.truncated})
    boxes.sort(key=lambda b: b["track_id"])
    return frame, boxes


def write_stream(config: WorldConfig, stream_dir: Path) -> dict[str, Any]:
    """Write the video (mp4v .mp4, or MJPG .avi where mp4v cannot be written) and ground truth."""
    stream_dir.mkdir(parents=True, exist_ok=True)
    size = (config.width, config.height)
    video, fourcc = stream_dir / "stream.mp4", "mp4v"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*fourcc), config.stream_fps, size)
    if not writer.isOpened():
        video.unlink(missing_ok=True)
        video, fourcc = stream_dir / "stream.avi", "MJPG"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*fourcc), config.stream_fps, size)
        if not writer.isOpened():
            raise GhostboxError(f"cannot write a video to {stream_dir} with mp4v or MJPG")
    rows = []
    try:
        for i in range(config.stream_frames):
            frame, boxes = render_stream_frame(config, i)
            writer.write(frame)
            rows.append({"frame": i, "boxes": boxes})
    finally:
        writer.release()
    write_jsonl(stream_dir / "ground_truth.jsonl", rows)
    return {"video": video.name, "fourcc": fourcc, "frames": config.stream_frames, "fps": config.stream_fps,
            "width": config.width, "height": config.height, "ground_truth": "ground_truth.jsonl"}
