"""Street backgrounds: sky, buildings, road with lane markings, sidewalks, trees and poles.

Nothing drawn here may look like an ID class or an OoD kind: backgrounds are what the detector
must learn to ignore in every split alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.synth.canvas import Color, mix, pick, rgb, shade

BUILDING = [rgb(190, 175, 150), rgb(150, 140, 130), rgb(170, 90, 70), rgb(120, 120, 125),
            rgb(205, 200, 190), rgb(95, 85, 80), rgb(160, 150, 110)]
FOLIAGE = [rgb(40, 100, 40), rgb(60, 120, 50), rgb(30, 80, 45), rgb(90, 130, 60)]


@dataclass
class Background:
    """A drawn background and the geometry objects are placed against."""

    image: np.ndarray  # float32 BGR (h, w, 3)
    glow: np.ndarray  # float32 (h, w): 1 where a light source must keep its brightness
    horizon: int
    vanish_x: float


def sky_colors(timeofday: str, weather: str) -> tuple[Color, Color]:
    """(top, horizon) sky colours for the time of day, washed out by clouds or fog."""
    if timeofday == "night":
        top, bottom = rgb(8, 10, 28), rgb(40, 45, 70)
    elif timeofday == "dawn/dusk":
        top, bottom = rgb(70, 80, 150), rgb(250, 160, 100)
    else:
        top, bottom = rgb(70, 130, 215), rgb(190, 215, 240)
    if weather in ("overcast", "rainy", "foggy"):
        grey = rgb(150, 150, 155) if timeofday == "daytime" else rgb(70, 70, 78)
        top, bottom = mix(top, grey, 0.75), mix(bottom, grey, 0.6)
    return top, bottom


def _vgradient(img: np.ndarray, y0: int, y1: int, top: Color, bottom: Color) -> None:
    if y1 <= y0:
        return
    t = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None, None]
    img[y0:y1] = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t


def _buildings(img: np.ndarray, glow: np.ndarray, rng: np.random.Generator, horizon: int,
               night: bool) -> None:
    w = img.shape[1]
    x = -rng.uniform(0, 0.1) * w
    while x < w:
        bw = rng.uniform(0.08, 0.3) * w
        bh = rng.uniform(0.15, 0.95) * horizon
        color = pick(rng, BUILDING, 15)
        x0, x1 = int(x), int(x + bw)
        y0 = int(horizon - bh)
        cv2.rectangle(img, (x0, y0), (x1, horizon + 2), color, -1)
        win = max(2, int(rng.uniform(0.012, 0.025) * w))
        gap = win + max(1, int(win * rng.uniform(0.5, 1.2)))
        dark = shade(color, 0.45)
        for wy in range(y0 + gap // 2, horizon - win, gap):
            for wx in range(x0 + gap // 2, x1 - win, gap):
                lit = night and rng.random() < 0.4
                cv2.rectangle(img, (wx, wy), (wx + win - 1, wy + win - 1),
                              rgb(255, 220, 140) if lit else dark, -1)
                if lit:
                    cv2.rectangle(glow, (wx, wy), (wx + win - 1, wy + win - 1), 0.8, -1)
        x += bw + rng.uniform(0, 0.04) * w


def _dashes(img: np.ndarray, p_far: tuple[float, float], p_near: tuple[float, float], color: Color,
            width_near: float, rng: np.random.Generator) -> None:
    """A dashed line from the vanishing point towards the viewer, dashes shrinking with depth."""
    s = rng.uniform(0.03, 0.06)
    while s < 1.0:
        s_end = min(1.0, s * 1.18)
        pts = []
        for t, sgn in ((s, -1), (s_end, -1), (s_end, 1), (s, 1)):
            x = p_far[0] + (p_near[0] - p_far[0]) * t
            y = p_far[1] + (p_near[1] - p_far[1]) * t
            pts.append((x + sgn * width_near * t / 2, y))
        cv2.fillPoly(img, [np.array(pts, np.int32)], color, cv2.LINE_AA)
        s = s_end * 1.25


def street_background(rng: np.random.Generator, width: int, height: int, timeofday: str,
                      weather: str) -> Background:
    img = np.zeros((height, width, 3), np.float32)
    glow = np.zeros((height, width), np.float32)
    night = timeofday == "night"
    horizon = int(height * rng.uniform(0.3, 0.5))
    vx = width * rng.uniform(0.3, 0.7)
    top, bottom = sky_colors(timeofday, weather)
    _vgradient(img, 0, horizon, top, bottom)
    if weather in ("clear", "partly cloudy") and not night:
        for _ in range(int(rng.integers(0, 4 if weather == "clear" else 8))):
            cx, cy = rng.uniform(0, width), rng.uniform(0, horizon * 0.7)
            cloud = mix(bottom, rgb(250, 250, 250), 0.7)
            for _ in range(3):
                cv2.ellipse(img, (int(cx + rng.uniform(-15, 15)), int(cy + rng.uniform(-4, 4))),
                            (int(rng.uniform(10, 30)), int(rng.uniform(4, 9))), 0, 0, 360, cloud, -1, cv2.LINE_AA)
    if rng.random() < 0.85:
        _buildings(img, glow, rng, horizon, night)
    else:
        hill = pick(rng, FOLIAGE, 10)
        pts = [(0, horizon)] + [(x, horizon - rng.uniform(0.05, 0.25) * horizon)
                                for x in np.linspace(0, width, 6)] + [(width, horizon)]
        cv2.fillPoly(img, [np.array(pts, np.int32)], shade(hill, 0.8), cv2.LINE_AA)

    # ground: asphalt, then sidewalks outside the road edges
    asphalt = rgb(*([rng.uniform(70, 120)] * 3))
    _vgradient(img, horizon, height, shade(asphalt, 1.1), shade(asphalt, 0.9))
    left_b = width * rng.uniform(-0.6, 0.2)
    right_b = width * rng.uniform(0.8, 1.6)
    walk = pick(rng, [rgb(165, 160, 150), rgb(185, 175, 160), rgb(140, 140, 140), rgb(120, 150, 80)], 12)
    left = np.array([(0, horizon), (vx - 2, horizon), (left_b, height), (0, height)], np.int32)
    right = np.array([(vx + 2, horizon), (width, horizon), (width, height), (right_b, height)], np.int32)
    cv2.fillPoly(img, [left, right], walk, cv2.LINE_AA)
    curb = shade(walk, 0.6)
    cv2.line(img, (int(vx - 2), horizon), (int(left_b), height), curb, 2, cv2.LINE_AA)
    cv2.line(img, (int(vx + 2), horizon), (int(right_b), height), curb, 2, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 5))):  # stains and patches on the road
        cv2.ellipse(img, (int(rng.uniform(0, width)), int(rng.uniform(horizon, height))),
                    (int(rng.uniform(5, 30)), int(rng.uniform(2, 8))), 0, 0, 360,
                    shade(asphalt, rng.uniform(0.8, 1.15)), -1, cv2.LINE_AA)

    # lane markings converge on the vanishing point
    lanes = int(rng.integers(1, 4))
    line_w = width * rng.uniform(0.012, 0.02)
    for k in range(1, lanes + 1):
        xb = left_b + (right_b - left_b) * k / (lanes + 1)
        if k == (lanes + 1) // 2 and rng.random() < 0.4:
            for off in (-line_w, line_w):
                cv2.line(img, (int(vx), horizon), (int(xb + off), height), rgb(230, 190, 40),
                         max(1, int(line_w * 0.6)), cv2.LINE_AA)
        else:
            _dashes(img, (vx, horizon), (xb, height), rgb(235, 235, 235), line_w, rng)
    if rng.random() < 0.2:  # zebra crossing
        y0 = int(horizon + (height - horizon) * rng.uniform(0.5, 0.8))
        band = max(3, int((y0 - horizon) * 0.15))
        for xs in np.arange(left_b, right_b, width * 0.05):
            cv2.rectangle(img, (int(xs), y0), (int(xs + width * 0.025), y0 + band), rgb(225, 225, 225), -1)

    # trees and plain poles on the sidewalks, scaled by how far below the horizon they stand
    for _ in range(int(rng.integers(0, 6))):
        on_left = rng.random() < 0.5
        base = rng.uniform(horizon + 4, height + 10)
        depth = (base - horizon) / max(1, height - horizon)
        edge = vx + ((left_b if on_left else right_b) - vx) * depth
        x = edge - rng.uniform(0.02, 0.3) * width if on_left else edge + rng.uniform(0.02, 0.3) * width
        tall = (base - horizon) * rng.uniform(2.0, 4.0) + 10
        # trees and poles hide lit windows behind them, so they clear the glow they cover
        if rng.random() < 0.6:
            trunk = max(1, int(tall * 0.05))
            for layer, color in ((img, rgb(90, 60, 35)), (glow, 0.0)):
                cv2.rectangle(layer, (int(x - trunk), int(base - tall * 0.5)), (int(x + trunk), int(base)), color, -1)
            leaf = pick(rng, FOLIAGE, 12)
            for _ in range(5):
                centre = (int(x + rng.uniform(-0.2, 0.2) * tall), int(base - tall * rng.uniform(0.55, 0.9)))
                radius = max(2, int(tall * rng.uniform(0.15, 0.25)))
                tone = shade(leaf, rng.uniform(0.8, 1.1))
                for layer, color in ((img, tone), (glow, 0.0)):
                    cv2.circle(layer, centre, radius, color, -1, cv2.LINE_AA)
        else:
            for layer, color in ((img, rgb(60, 60, 62)), (glow, 0.0)):
                cv2.line(layer, (int(x), int(base)), (int(x), int(base - tall)), color,
                         max(1, int(tall * 0.025)), cv2.LINE_AA)
    return Background(img, glow, horizon, vx)
