"""Near-OoD objects: street things that borrow an ID class's parts, colours or silhouette.

Each one is meant to be mistaken for an ID class by a detector that never saw it (the class it
borrows from is named in its docstring), while staying a different object to a person: a dog
has legs and a head like a pedestrian but walks on four; a street clock is a white disc with
a dark ring on a pole like a speed-limit sign, but has hands and ticks.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.synth.canvas import Canvas, Color, Sprite, mix, pick, rgb, shade
from pipeline.synth.id_objects import CAR_PAINT, SIGN_BLUE, SIGN_GREEN, SIGN_RED, TYRE, WHITE, cloth

FUR = [rgb(120, 75, 35), rgb(30, 25, 22), rgb(235, 230, 220), rgb(205, 160, 80), rgb(130, 130, 135),
       rgb(165, 110, 60)]
METAL = rgb(170, 172, 176)


def _wheel(c: Canvas, x: float, y: float, r: float, rim: Color = METAL) -> None:
    c.circle(x, y, r, TYRE)
    c.circle(x, y, r * 0.55, rim)
    c.circle(x, y, r * 0.18, rgb(50, 50, 50))


def dog(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Pedestrian-like: legs, a round head, a coloured collar; standing or sitting upright."""
    fur = pick(rng, FUR, 12)
    patch = shade(fur, rng.uniform(0.5, 1.4))
    collar = cloth(rng)
    sitting = rng.random() < 0.35
    drawn_phase = rng.uniform(0, 2 * math.pi)
    p = drawn_phase if phase is None else phase
    facing_left = rng.random() < 0.5
    if sitting:
        c = Canvas(height, 0.72)
        c.ellipse(0.3, 0.75, 0.24, 0.22, fur)  # haunch
        c.poly([(0.25, 0.55), (0.45, 0.28), (0.62, 0.35), (0.55, 0.85), (0.25, 0.9)], fur)  # chest
        for x in (0.46, 0.56):
            c.line(x, 0.55, x + 0.01, 0.96, 0.08, shade(fur, 0.9))
            c.ellipse(x + 0.03, 0.965, 0.05, 0.03, shade(fur, 0.8))
        c.ellipse(0.2, 0.95, 0.15, 0.04, shade(fur, 0.85))  # hind paw
        c.line(0.08, 0.85, 0.01, 0.62, 0.05, fur)  # tail
        hx, hy = 0.52, 0.2
    else:
        c = Canvas(height, 1.35)
        s = math.sin(p)
        for _i, (x, sgn, tone) in enumerate(((0.33, -1, 0.75), (0.92, 1, 0.75), (0.42, 1, 1.0), (1.0, -1, 1.0))):
            swing = 0.25 * s * sgn
            kx, ky = x + 0.18 * math.sin(swing), 0.55 + 0.2 * math.cos(swing)
            c.line(x, 0.5, kx, ky, 0.09, shade(fur, tone))
            c.line(kx, ky, kx + 0.03, 0.97, 0.075, shade(fur, tone))
            c.ellipse(kx + 0.05, 0.965, 0.05, 0.03, shade(fur, tone * 0.85))
        c.ellipse(0.66, 0.45, 0.4, 0.16, fur)
        if rng.random() < 0.4:
            c.ellipse(0.6, 0.4, 0.14, 0.09, patch)
        c.line(0.28, 0.38, 0.1, rng.uniform(0.1, 0.3), 0.055, fur)  # tail
        c.poly([(0.88, 0.36), (1.0, 0.1), (1.12, 0.14), (1.08, 0.45)], fur)  # neck
        hx, hy = 1.1, 0.17
    c.circle(hx, hy, 0.13, fur)
    c.ellipse(hx + 0.13, hy + 0.05, 0.1, 0.06, shade(fur, 0.95))  # snout
    c.circle(hx + 0.22, hy + 0.03, 0.025, rgb(20, 20, 20))  # nose
    c.poly([(hx - 0.1, hy - 0.05), (hx - 0.02, hy - 0.17), (hx + 0.04, hy - 0.04)], shade(fur, 0.7))  # ear
    c.line(hx - 0.12, hy + 0.12, hx + 0.05, hy + 0.15, 0.045, collar)
    sprite = c.sprite()
    return sprite.flipped() if facing_left else sprite


def stroller(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Pedestrian- and car-like: a fabric body as tall as a child, a canopy, a handle, wheels."""
    fabric = cloth(rng)
    frame = pick(rng, [rgb(30, 30, 30), METAL, rgb(200, 200, 205)], 10)
    c = Canvas(height, 1.0)
    c.line(0.3, 0.6, 0.08, 0.05, 0.04, frame)  # push bar
    c.line(0.02, 0.05, 0.15, 0.05, 0.05, rgb(30, 30, 30))  # grip
    c.line(0.3, 0.62, 0.25, 0.85, 0.03, frame)
    c.line(0.75, 0.62, 0.8, 0.85, 0.03, frame)
    c.ellipse(0.55, 0.45, 0.34, 0.2, fabric, start=0, end=180)  # bassinet
    c.rect(0.21, 0.33, 0.89, 0.46, fabric)
    c.ellipse(0.72, 0.35, 0.22, 0.28, shade(fabric, 0.8), start=180, end=360)  # canopy
    c.line(0.5, 0.35, 0.94, 0.35, 0.02, shade(fabric, 0.6))
    r = 0.12
    _wheel(c, 0.22, 1 - r, r)
    _wheel(c, 0.84, 1 - r, r)
    sprite = c.sprite()
    return sprite.flipped() if rng.random() < 0.5 else sprite


def shopping_cart(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Car-like: a wide box on four wheels, seen from the side, in chrome or bright plastic."""
    body = pick(rng, [METAL, METAL, rgb(200, 30, 35), rgb(30, 80, 170), rgb(40, 140, 70)], 10)
    c = Canvas(height, rng.uniform(1.2, 1.45))
    a = c.aspect
    basket = [(0.12 * a, 0.08), (0.98 * a, 0.08), (0.86 * a, 0.62), (0.22 * a, 0.62)]
    c.poly(basket, body)
    mesh = 6 if height > 30 else 3
    # cut holes so the scene shows through the wire basket
    for i in range(mesh):
        for j in range(3):
            u0, u1 = (i + 0.15) / mesh, (i + 0.85) / mesh
            v0, v1 = 0.12 + j * 0.16, 0.12 + j * 0.16 + 0.12
            xl = 0.12 * a + (0.22 - 0.12) * a * (v0 - 0.08) / 0.54
            xr = 0.98 * a - (0.98 - 0.86) * a * (v1 - 0.08) / 0.54
            c.rect(xl + (xr - xl) * u0, v0, xl + (xr - xl) * u1, v1, erase=True)
    c.line(0.02 * a, 0.02, 0.14 * a, 0.12, 0.04, body)
    c.line(0.0, 0.02, 0.08 * a, 0.02, 0.06, pick(rng, [rgb(200, 30, 30), rgb(30, 30, 30), rgb(30, 90, 180)], 10))
    c.line(0.22 * a, 0.62, 0.22 * a, 0.86, 0.03, body)
    c.line(0.86 * a, 0.62, 0.86 * a, 0.86, 0.03, body)
    c.line(0.2 * a, 0.78, 0.9 * a, 0.78, 0.03, body)
    r = 0.08
    for x in (0.22 * a, 0.86 * a):
        _wheel(c, x, 1 - r, r, rgb(90, 90, 90))
    sprite = c.sprite()
    return sprite.flipped() if rng.random() < 0.5 else sprite


def bench(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Car-like: long, low, in car paint colours, with round cast-iron feet where wheels would be."""
    wood = pick(rng, CAR_PAINT + [rgb(130, 85, 45), rgb(30, 90, 50)], 10)
    iron = pick(rng, [rgb(30, 30, 30), rgb(60, 60, 65)], 8)
    c = Canvas(height, rng.uniform(2.2, 2.7))
    a = c.aspect
    for y in (0.05, 0.2, 0.35):  # backrest slats
        c.rect(0.05 * a, y, 0.95 * a, y + 0.1, wood)
    c.rect(0.0, 0.5, a, 0.64, wood)  # seat
    c.rect(0.02 * a, 0.64, 0.98 * a, 0.7, shade(wood, 0.6))
    for x in (0.14 * a, 0.86 * a):
        c.line(x, 0.02, x, 0.7, 0.07, iron)
        c.ellipse(x, 0.86, 0.16, 0.15, iron, thickness=0.06)
        c.line(x - 0.16, 1.0 - 0.03, x + 0.16, 1.0 - 0.03, 0.06, iron)
    return c.sprite()


def mailbox(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Sign-like: a flat-fronted box in sign colours with a white emblem, mounted on a post."""
    paint = pick(rng, [SIGN_BLUE, SIGN_RED, rgb(240, 190, 20), SIGN_GREEN], 10)
    c = Canvas(height, rng.uniform(0.7, 0.9))
    a = c.aspect
    c.rect(0.0, 0.25, a, 1.0, paint)
    c.ellipse(a / 2, 0.25, a / 2, 0.25, paint, start=180, end=360)  # rounded top
    c.rect(0.2 * a, 0.36, 0.8 * a, 0.43, rgb(25, 25, 25))  # letter slot
    emblem = WHITE if sum(paint) < 400 else rgb(30, 30, 30)  # dark emblem on the yellow box
    c.circle(a / 2, 0.64, 0.13, emblem)
    c.circle(a / 2, 0.64, 0.09, paint)
    c.rect(0.15 * a, 0.85, 0.85 * a, 0.9, emblem)
    return c.sprite()


def street_clock(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Sign-like: a white disc with a dark or coloured rim, like a round regulatory sign."""
    rim = pick(rng, [rgb(20, 20, 20), rgb(30, 70, 40), rgb(150, 120, 40), SIGN_RED, SIGN_BLUE], 8)
    face = pick(rng, [WHITE, rgb(240, 230, 200)], 5)
    with_cap = rng.random() < 0.5
    c = Canvas(height, 1.0 if not with_cap else 0.85)
    a = c.aspect
    cy = 0.5 if not with_cap else 0.57
    r = a / 2
    if with_cap:
        c.poly([(a / 2 - 0.1, 0.14), (a / 2, 0.0), (a / 2 + 0.1, 0.14)], rim)
    c.circle(a / 2, cy, r, rim)
    c.circle(a / 2, cy, r * 0.84, face)
    for k in range(12):
        ang = k * math.pi / 6
        c.line(a / 2 + 0.7 * r * math.cos(ang), cy + 0.7 * r * math.sin(ang),
               a / 2 + 0.8 * r * math.cos(ang), cy + 0.8 * r * math.sin(ang), 0.025, rgb(20, 20, 20))
    for length, ang in ((0.45, rng.uniform(0, 2 * math.pi)), (0.65, rng.uniform(0, 2 * math.pi))):
        c.line(a / 2, cy, a / 2 + length * r * math.sin(ang), cy - length * r * math.cos(ang), 0.04,
               rgb(20, 20, 20))
    return c.sprite()


def traffic_cone(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Traffic-light-like: a tall narrow shape in signal orange/red with bright bands."""
    body = pick(rng, [rgb(250, 110, 20), rgb(235, 60, 25), rgb(250, 150, 20)], 10)
    c = Canvas(height, 0.62)
    a = c.aspect
    c.rect(0.0, 0.9, a, 1.0, rgb(30, 30, 30))
    c.poly([(a / 2 - 0.04, 0.02), (a / 2 + 0.04, 0.02), (0.88 * a, 0.92), (0.12 * a, 0.92)], body)
    for y0 in (0.3, 0.58):
        half_top = 0.04 + (0.38 * a - 0.04) * (y0 - 0.02) / 0.9
        half_bot = 0.04 + (0.38 * a - 0.04) * (y0 + 0.13 - 0.02) / 0.9
        c.poly([(a / 2 - half_top, y0), (a / 2 + half_top, y0), (a / 2 + half_bot, y0 + 0.13),
                (a / 2 - half_bot, y0 + 0.13)], rgb(245, 245, 245))
    return c.sprite()


def lamp_head(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Traffic-light-like: a dark housing on a pole holding one or more round glowing lamps."""
    housing = pick(rng, [rgb(30, 30, 33), rgb(35, 55, 40), rgb(60, 60, 64)], 6)
    lamp = pick(rng, [rgb(255, 235, 170), rgb(255, 190, 90), rgb(230, 240, 255)], 8)
    style = int(rng.integers(3))
    if style == 0:  # lantern: roof, one glowing globe, base
        c = Canvas(height, 0.6)
        a = c.aspect
        c.poly([(a / 2, 0.0), (a, 0.22), (0.0, 0.22)], housing)
        c.rect(0.08 * a, 0.22, 0.92 * a, 0.86, housing)
        c.circle(a / 2, 0.54, 0.24, lamp, glow=True)
        c.rect(0.3 * a, 0.86, 0.7 * a, 1.0, housing)
    elif style == 1:  # globe cluster stacked on a dark bar
        c = Canvas(height, 0.42)
        a = c.aspect
        c.rect(a / 2 - 0.04, 0.0, a / 2 + 0.04, 1.0, housing)
        n = int(rng.integers(2, 4))
        for i in range(n):
            y = (i + 0.5) / n
            c.circle(a / 2, y, min(0.16, 0.45 / n), lamp, glow=True)
    else:  # box lamp head with two round lenses side by side (a pedestrian-style lamp)
        c = Canvas(height, 0.9)
        a = c.aspect
        c.round_rect(0.0, 0.0, a, 1.0, 0.08, housing)
        for x in (0.28 * a, 0.72 * a):
            c.circle(x, 0.5, 0.18, lamp, glow=True)
    return c.sprite()


def fire_hydrant(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Pedestrian-like: a head-like cap on a torso-like barrel with arm-like side outlets."""
    paint = pick(rng, [rgb(200, 25, 25), rgb(235, 190, 30), rgb(40, 110, 60), rgb(200, 200, 205)], 10)
    cap = pick(rng, [paint, rgb(240, 240, 240), rgb(30, 30, 30)], 5)
    c = Canvas(height, 0.6)
    a = c.aspect
    c.rect(a / 2 - 0.025, 0.0, a / 2 + 0.025, 0.08, cap)
    c.ellipse(a / 2, 0.2, 0.16, 0.14, cap, start=180, end=360)
    c.rect(a / 2 - 0.2, 0.2, a / 2 + 0.2, 0.26, shade(paint, 0.8))
    c.rect(a / 2 - 0.15, 0.26, a / 2 + 0.15, 0.88, paint)
    c.rect(0.0, 0.4, a, 0.52, shade(paint, 0.9))  # side outlets
    c.circle(a / 2, 0.58, 0.07, shade(paint, 0.75))
    c.rect(a / 2 - 0.22, 0.88, a / 2 + 0.22, 1.0, shade(paint, 0.7))
    return c.sprite()


def dumpster(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Car-like: a painted box the size of a car, a sloped lid, small wheels underneath."""
    paint = pick(rng, [rgb(30, 90, 50), rgb(30, 60, 130), rgb(110, 112, 118), rgb(120, 70, 35)] + CAR_PAINT[:5], 10)
    c = Canvas(height, rng.uniform(1.5, 1.9))
    a = c.aspect
    c.poly([(0.0, 0.05), (a, 0.15), (a, 0.22), (0.0, 0.22)], shade(paint, 0.75))  # lid
    c.poly([(0.0, 0.22), (a, 0.22), (0.95 * a, 0.88), (0.05 * a, 0.88)], paint)
    for x in (0.3, 0.5, 0.7):
        c.line(x * a, 0.26, x * a, 0.84, 0.03, shade(paint, 0.6))
    c.rect(0.08 * a, 0.32, 0.24 * a, 0.42, WHITE)  # operator sticker
    r = 0.07
    for x in (0.12 * a, 0.88 * a):
        _wheel(c, x, 1 - r, r, rgb(80, 80, 80))
    return c.sprite()


def billboard(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    """Sign-like: a framed rectangular panel on a pole, its ad in sign colours and white bars."""
    c = Canvas(height, rng.uniform(1.3, 2.0))
    a = c.aspect
    frame = pick(rng, [rgb(40, 40, 42), WHITE, rgb(120, 120, 125)], 6)
    bg = pick(rng, [SIGN_BLUE, SIGN_GREEN, SIGN_RED, rgb(250, 200, 30), WHITE, rgb(120, 40, 150)], 10)
    c.rect(0.0, 0.0, a, 1.0, frame)
    c.rect(0.05, 0.05, a - 0.05, 0.95, bg)
    ink = WHITE if bg != WHITE else rgb(30, 30, 30)
    c.circle(0.3, 0.5, 0.25, mix(cloth(rng), ink, 0.2))
    for y in (0.3, 0.5, 0.7):
        c.rect(0.65, y - 0.06, 0.65 + (a - 0.8) * rng.uniform(0.5, 1.0), y + 0.06, ink)
    return c.sprite()
