"""Far-OoD objects: shapes and textures with nothing in common with street objects."""

from __future__ import annotations

import colorsys
import math

import numpy as np

from pipeline.synth.canvas import Canvas, Color, Sprite, mix, rgb, shade


def _bright(rng: np.random.Generator) -> Color:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    return rgb(r * 255, g * 255, b * 255)


def balloon(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """A bunch of two to four balloons whose strings meet below: never one disc on a post."""
    n = int(rng.integers(2, 5))
    c = Canvas(height, 0.9)
    a = c.aspect
    knot = (a / 2 + rng.uniform(-0.05, 0.05), 0.98)
    centres = [(a / 2 - 0.26 + 0.52 * k / (n - 1), 0.2 + 0.1 * (k % 2)) for k in range(n)]
    for cx, cy in centres:
        c.line(cx, cy + 0.16, knot[0], knot[1], 0.012, rgb(230, 230, 230))
    for cx, cy in centres:
        color = _bright(rng)
        c.ellipse(cx, cy, 0.13, 0.17, color)
        c.ellipse(cx - 0.04, cy - 0.06, 0.03, 0.05, mix(color, rgb(255, 255, 255), 0.6))
    return c.sprite()


def spiral(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """A thin, stretched line spiral: a drawn stroke, not a filled disc."""
    color = _bright(rng)
    turns = rng.uniform(3.0, 5.0)
    aspect = rng.uniform(0.55, 1.6)
    c = Canvas(height, aspect)
    ts = np.linspace(0, 1, 200)
    offset = rng.uniform(0, 2 * math.pi)
    pts = [(aspect / 2 + 0.46 * aspect * t * math.cos(offset + t * turns * 2 * math.pi),
            0.5 + 0.46 * t * math.sin(offset + t * turns * 2 * math.pi)) for t in ts]
    c.polyline(pts, 0.03, color)
    return c.sprite()


def star(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    color = _bright(rng)
    n = int(rng.integers(5, 8))
    inner = rng.uniform(0.35, 0.5)
    rot = rng.uniform(0, 2 * math.pi)
    c = Canvas(height, 1.0)
    pts = []
    for k in range(2 * n):
        r = 0.5 if k % 2 == 0 else 0.5 * inner
        ang = rot + k * math.pi / n
        pts.append((0.5 + r * math.cos(ang), 0.5 + r * math.sin(ang)))
    c.poly(pts, shade(color, 0.6))
    c.poly([(0.5 + (x - 0.5) * 0.8, 0.5 + (y - 0.5) * 0.8) for x, y in pts], color)
    return c.sprite()


def checkerboard(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    c1, c2 = _bright(rng), shade(_bright(rng), 0.35)
    n = int(rng.integers(4, 8))
    diamond = rng.random() < 0.4
    c = Canvas(height, 1.0)
    for i in range(n):
        for j in range(n):
            col = c1 if (i + j) % 2 == 0 else c2
            corners = [(i / n, j / n), ((i + 1) / n, j / n), ((i + 1) / n, (j + 1) / n), (i / n, (j + 1) / n)]
            if diamond:  # rotate the board 45 degrees to fill the square canvas as a diamond
                corners = [(0.5 + (x - y) / 2, (x + y) / 2) for x, y in corners]
            c.poly(corners, col)
    return c.sprite()


def fruit(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    kind = int(rng.integers(4))
    c = Canvas(height, 1.0)
    if kind == 0:  # apple
        body = rgb(200, 30, 30) if rng.random() < 0.6 else rgb(120, 190, 50)
        c.circle(0.36, 0.56, 0.34, body)
        c.circle(0.64, 0.56, 0.34, body)
        c.line(0.5, 0.25, 0.55, 0.05, 0.04, rgb(90, 60, 30))
        c.ellipse(0.66, 0.12, 0.12, 0.05, rgb(60, 150, 40), angle=-30)
        c.ellipse(0.35, 0.45, 0.07, 0.1, mix(body, rgb(255, 255, 255), 0.5))
    elif kind == 1:  # banana
        c.ellipse(0.5, 0.2, 0.48, 0.62, rgb(245, 215, 40), start=20, end=160, thickness=0.22)
        c.circle(0.08, 0.42, 0.04, rgb(80, 60, 30))
    elif kind == 2:  # orange with dimples
        c.circle(0.5, 0.5, 0.48, rgb(250, 150, 20))
        for _ in range(12):
            c.circle(rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), 0.02, rgb(220, 120, 10))
        c.circle(0.5, 0.1, 0.04, rgb(60, 120, 40))
    else:  # grapes
        col = rgb(110, 40, 120) if rng.random() < 0.6 else rgb(150, 200, 80)
        for row in range(5):
            for k in range(5 - row):
                x = 0.5 + (k - (4 - row) / 2) * 0.19
                c.circle(x, 0.2 + row * 0.17, 0.1, shade(col, rng.uniform(0.8, 1.1)))
        c.line(0.5, 0.0, 0.5, 0.12, 0.04, rgb(90, 70, 30))
    return c.sprite()


def blob(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """An irregular many-lobed outline filled with a mottled camouflage texture."""
    colors = [_bright(rng) for _ in range(3)]
    c = Canvas(height, rng.uniform(0.7, 1.5))
    a = c.aspect
    k = np.arange(2, 8)
    amp = rng.uniform(0.04, 0.14, size=k.size) / np.sqrt(k)
    ph = rng.uniform(0, 2 * math.pi, size=k.size)
    pts = []
    for t in np.linspace(0, 2 * math.pi, 90, endpoint=False):
        r = 1 - float(np.sum(amp)) + float(np.sum(amp * np.cos(k * t + ph)))
        pts.append((a / 2 + 0.48 * a * r * math.cos(t), 0.5 + 0.48 * r * math.sin(t)))
    c.poly(pts, colors[0])
    for _ in range(45):
        c.circle(rng.uniform(0.0, a), rng.uniform(0.0, 1.0), rng.uniform(0.03, 0.09),
                 colors[int(rng.integers(1, 3))])
    c.keep_inside(pts)  # the mottling must not spill over the outline
    return c.sprite()


def glyph_panel(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """A tilted sheet of pastel paper covered in rows of coloured made-up glyphs."""
    paper = rgb(*(rng.uniform(200, 250, size=3)))
    ink = _bright(rng) if rng.random() < 0.5 else rgb(*(rng.uniform(10, 60, size=3)))
    tilt = math.radians(rng.uniform(12, 35)) * (1 if rng.random() < 0.5 else -1)
    c = Canvas(height, 1.0)
    # the sheet is drawn in its own (u, v) frame, rotated about the canvas centre
    side = 0.62

    def at(u: float, v: float) -> tuple[float, float]:
        x, y = (u - 0.5) * side * 1.2, (v - 0.5) * side * 1.2
        return (0.5 + x * math.cos(tilt) - y * math.sin(tilt), 0.5 + x * math.sin(tilt) + y * math.cos(tilt))

    c.poly([at(0, 0), at(1, 0), at(1, 1), at(0, 1)], paper)
    rows = int(rng.integers(4, 7))
    for r in range(rows):
        v = 0.12 + r * 0.8 / rows
        u = 0.08
        while u < 0.86:
            w = rng.uniform(0.05, 0.1)
            stroke = int(rng.integers(4))
            if stroke == 0:
                c.circle(*at(u + w / 2, v + 0.04), w * side * 0.5, ink, thickness=0.015)
            elif stroke == 1:
                c.line(*at(u, v), *at(u + w, v + 0.08), 0.015, ink)
            elif stroke == 2:
                c.line(*at(u + w / 2, v), *at(u + w / 2, v + 0.08), 0.015, ink)
                c.line(*at(u, v + 0.04), *at(u + w, v + 0.04), 0.015, ink)
            else:
                c.polyline([at(u, v + 0.08), at(u + w / 2, v), at(u + w, v + 0.08)], 0.015, ink)
            u += w + rng.uniform(0.02, 0.08)
    return c.sprite()
