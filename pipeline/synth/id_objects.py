"""The four in-distribution classes, drawn so each class keeps one structure across many looks.

A detector has to learn these from ~1500 images, so every class has a fixed skeleton
(pedestrian: head, torso, two arms, two legs; car: body, glass, wheels, lights; traffic light:
dark housing with three round lamps; traffic sign: a flat plate with a bold border) and the
variety lives in pose, view, colour and detail.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

from pipeline.synth.canvas import Canvas, Color, Sprite, mix, pick, rgb, shade

ID_CLASSES: tuple[str, ...] = ("pedestrian", "car", "traffic light", "traffic sign")

SKIN = [rgb(255, 219, 172), rgb(241, 194, 125), rgb(224, 172, 105), rgb(198, 134, 66),
        rgb(141, 85, 36), rgb(94, 60, 40)]
HAIR = [rgb(20, 18, 18), rgb(60, 40, 25), rgb(110, 75, 40), rgb(200, 170, 100),
        rgb(150, 150, 150), rgb(120, 45, 20)]
PANTS = [rgb(35, 45, 85), rgb(22, 22, 26), rgb(90, 90, 96), rgb(150, 130, 100), rgb(60, 50, 40),
         rgb(45, 65, 115), rgb(110, 30, 35)]
CAR_PAINT = [rgb(236, 236, 236), rgb(26, 26, 30), rgb(182, 185, 190), rgb(110, 112, 118),
             rgb(170, 25, 30), rgb(30, 60, 140), rgb(22, 32, 70), rgb(30, 80, 52),
             rgb(232, 190, 40), rgb(200, 185, 150), rgb(210, 100, 30), rgb(100, 22, 32),
             rgb(120, 160, 205)]
GLASS = [rgb(60, 76, 92), rgb(38, 48, 58), rgb(105, 135, 160), rgb(24, 28, 34), rgb(80, 100, 110)]
TYRE = rgb(24, 24, 24)
RIM = rgb(175, 178, 182)

LAMP_ON = {"R": rgb(255, 45, 35), "Y": rgb(255, 200, 35), "G": rgb(60, 255, 150)}
LAMP_OFF = {"R": rgb(75, 22, 22), "Y": rgb(75, 62, 18), "G": rgb(18, 58, 34)}

SIGN_RED = rgb(205, 25, 30)
SIGN_BLUE = rgb(20, 70, 170)
SIGN_GREEN = rgb(10, 110, 60)
SIGN_YELLOW = rgb(250, 205, 20)
WHITE = rgb(245, 245, 245)
BLACK = rgb(15, 15, 15)


def cloth(rng: np.random.Generator) -> Color:
    """Any hue: clothing is where pedestrians differ most."""
    h = rng.uniform(0, 1)
    s = rng.uniform(0.1, 0.85)
    v = rng.uniform(0.25, 0.95)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return rgb(r * 255, g * 255, b * 255)


# ---------------------------------------------------------------------------------------
# pedestrian
# ---------------------------------------------------------------------------------------
def _limb(c: Canvas, x: float, y: float, a1: float, l1: float, a2: float, l2: float, t: float,
          upper: Color, lower: Color) -> tuple[float, float]:
    """Two segments from (x, y); angles are from straight down, positive towards +x."""
    kx, ky = x + l1 * math.sin(a1), y + l1 * math.cos(a1)
    ex, ey = kx + l2 * math.sin(a2), ky + l2 * math.cos(a2)
    c.line(x, y, kx, ky, t, upper)
    c.line(kx, ky, ex, ey, t * 0.9, lower)
    return ex, ey


def pedestrian(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    view = ("side", "front", "back")[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    skin, hair = pick(rng, SKIN, 8), pick(rng, HAIR, 10)
    shirt, pants, shoes = (cloth(rng), pick(rng, PANTS),
                           pick(rng, [rgb(25, 25, 25), rgb(90, 60, 40), rgb(230, 230, 230)]))
    long_sleeves = rng.random() < 0.5
    dress = rng.random() < 0.15
    bag = rng.random() < 0.3
    bag_color = cloth(rng)
    hat = rng.random() < 0.15
    build = rng.uniform(0.85, 1.15)
    drawn_phase = rng.uniform(0, 2 * math.pi)
    p = drawn_phase if phase is None else phase
    stride = rng.uniform(0.22, 0.5) if view == "side" else rng.uniform(0.05, 0.15)
    facing_left = rng.random() < 0.5
    lean = rng.uniform(-0.01, 0.03)

    aspect = 0.6
    c = Canvas(height, aspect)
    cx = aspect / 2
    head_r, head_y = 0.062, 0.072
    sh_y, hip_y = 0.17, 0.52
    thigh, shin = 0.245, 0.215
    leg_t, arm_t = 0.064 * build, 0.047 * build
    sleeve = shirt if long_sleeves else skin
    s = math.sin(p)

    if view == "side":
        a_near, a_far = stride * s, -stride * s
        bend_near = 1.2 * stride * max(0.0, -s)
        bend_far = 1.2 * stride * max(0.0, s)
        hip = (cx, hip_y)
        shoulder = (cx + lean, sh_y + 0.02)
        far_pants = shade(pants, 0.75)
        # far arm and far leg sit behind the torso
        _limb(c, *shoulder, -0.8 * a_far, 0.165, -0.8 * a_far + 0.35, 0.15, arm_t,
              shade(shirt, 0.75), shade(sleeve, 0.75))
        fx, fy = _limb(c, *hip, a_far, thigh, a_far - bend_far, shin, leg_t, far_pants, far_pants)
        c.ellipse(fx + 0.02, fy - 0.005, 0.038, 0.018, shade(shoes, 0.8))
        if bag:
            c.round_rect(cx - 0.13 + lean, sh_y + 0.02, cx - 0.05 + lean, sh_y + 0.22, 0.02, bag_color)
        c.poly([(cx - 0.058 + lean, sh_y), (cx + 0.05 + lean, sh_y), (cx + 0.062, hip_y + 0.01),
                (cx - 0.062, hip_y + 0.01)], shirt)
        fx, fy = _limb(c, *hip, a_near, thigh, a_near - bend_near, shin, leg_t, pants, pants)
        c.ellipse(fx + 0.02, fy - 0.005, 0.038, 0.018, shoes)
        if dress:
            c.poly([(cx - 0.07, hip_y - 0.03), (cx + 0.07, hip_y - 0.03), (cx + 0.12, 0.73),
                    (cx - 0.11, 0.73)], shirt)
        hx, hy = _limb(c, *shoulder, -0.8 * a_near, 0.165, -0.8 * a_near + 0.35, 0.15, arm_t,
                       shirt, sleeve)
        c.circle(hx, hy, 0.026, skin)
        head_x = cx + lean + 0.012
    else:
        hw = 0.047 * build
        lift_l = 0.45 * stride * max(0.0, s)
        lift_r = 0.45 * stride * max(0.0, -s)
        for side, lift in ((-1, lift_l), (1, lift_r)):
            x0 = cx + side * hw
            foot_y = hip_y + thigh + shin - lift
            c.line(x0, hip_y, x0 + side * 0.012, foot_y, leg_t, pants)
            c.ellipse(x0 + side * 0.012, foot_y + 0.005, 0.03, 0.02, shoes)
        sw, ww = 0.105 * build, 0.088 * build
        if bag and view == "back":
            c.round_rect(cx - 0.075, sh_y + 0.03, cx + 0.075, sh_y + 0.25, 0.03, bag_color)
        for side in (-1, 1):
            spread = rng.uniform(0.08, 0.25)
            swing = side * stride * s * 0.6
            hx, hy = _limb(c, cx + side * (sw - 0.02), sh_y + 0.025, side * spread, 0.165,
                           side * spread * 0.6 + swing, 0.15, arm_t, shirt, sleeve)
            c.circle(hx, hy, 0.025, skin)
        c.poly([(cx - sw, sh_y + 0.01), (cx + sw, sh_y + 0.01), (cx + ww, hip_y + 0.01),
                (cx - ww, hip_y + 0.01)], shirt)
        for side in (-1, 1):
            c.circle(cx + side * (sw - 0.025), sh_y + 0.025, 0.03, shirt)
        if bag and view == "back":
            c.round_rect(cx - 0.07, sh_y + 0.04, cx + 0.07, sh_y + 0.24, 0.03, bag_color)
        if dress:
            c.poly([(cx - ww, hip_y - 0.03), (cx + ww, hip_y - 0.03), (cx + 0.14, 0.73),
                    (cx - 0.14, 0.73)], shirt)
        head_x = cx
    # neck and head
    c.rect(head_x - 0.022, head_y + head_r - 0.015, head_x + 0.022, sh_y + 0.015, skin)
    if view == "back":
        c.circle(head_x, head_y, head_r * 1.04, hair)
    else:
        c.circle(head_x, head_y, head_r, skin)
        c.ellipse(head_x, head_y - 0.01, head_r * 1.04, head_r * 0.8, hair, start=180, end=360)
        if view == "side":
            c.ellipse(head_x - 0.025, head_y, head_r * 0.7, head_r * 0.85, hair, start=90, end=270)
    if hat:
        hat_color = cloth(rng)
        c.ellipse(head_x, head_y - 0.02, head_r * 1.1, head_r * 0.75, hat_color, start=180, end=360)
        c.rect(head_x - head_r * 1.1, head_y - 0.025, head_x + head_r * 1.5, head_y - 0.01, hat_color)
    sprite = c.sprite()
    return sprite.flipped() if facing_left and view == "side" else sprite


# ---------------------------------------------------------------------------------------
# car
# ---------------------------------------------------------------------------------------
def _centroid_inset(pts: list[tuple[float, float]], k: float) -> list[tuple[float, float]]:
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return [(mx + (x - mx) * k, my + (y - my) * k) for x, y in pts]


def _car_side(c: Canvas, rng: np.random.Generator, body_style: str, paint: Color, glass: Color) -> None:
    a = c.aspect
    r = 0.19 if body_style != "suv" else 0.21
    body_top = {"sedan": 0.45, "hatch": 0.45, "suv": 0.40, "van": 0.40}[body_style]
    cabin = {
        "sedan": [(0.17, body_top), (0.30, 0.03), (0.62, 0.03), (0.79, body_top)],
        "hatch": [(0.06, body_top), (0.10, 0.04), (0.58, 0.04), (0.77, body_top)],
        "suv": [(0.04, body_top), (0.06, 0.02), (0.68, 0.02), (0.81, body_top)],
        "van": [(0.02, body_top), (0.03, 0.02), (0.80, 0.02), (0.93, body_top - 0.02)],
    }[body_style]
    cabin = [(x * a, y) for x, y in cabin]
    c.poly(cabin, paint)
    win = _centroid_inset(cabin, 0.8)
    win = [(x, min(y, body_top - 0.02)) for x, y in win]
    c.poly(win, glass)
    pillar_x = (win[1][0] + win[2][0]) / 2 + rng.uniform(-0.04, 0.04) * a
    c.rect(pillar_x - 0.025, 0.0, pillar_x + 0.025, body_top, paint)
    c.poly([(0.0, body_top + 0.08), (0.03 * a, body_top), (0.90 * a, body_top + 0.01),
            (0.995 * a, body_top + 0.1), (a, 0.8), (0.99 * a, 0.86), (0.01 * a, 0.86)], paint)
    c.rect(0.0, 0.74, a, 0.86, shade(paint, 0.55))
    c.line(0.48 * a, body_top + 0.03, 0.48 * a, 0.74, 0.012, shade(paint, 0.6))
    c.rect(0.52 * a, body_top + 0.09, 0.58 * a, body_top + 0.11, shade(paint, 0.5))
    c.rect(0.94 * a, body_top + 0.08, 0.995 * a, body_top + 0.16, rgb(255, 245, 200), glow=True)
    c.rect(0.003 * a, body_top + 0.07, 0.035 * a, body_top + 0.16, rgb(210, 20, 20), glow=True)
    for wx in (0.2 * a, 0.8 * a):
        c.circle(wx, 1 - r, r * 1.18, rgb(18, 18, 18))
        c.circle(wx, 1 - r, r, TYRE)
        c.circle(wx, 1 - r, r * 0.58, RIM)
        c.circle(wx, 1 - r, r * 0.2, rgb(60, 60, 60))


def _car_front_rear(c: Canvas, rng: np.random.Generator, rear: bool, paint: Color, glass: Color) -> None:
    a = c.aspect
    for x0 in (0.06, 0.76):
        c.rect(x0 * a, 0.78, (x0 + 0.18) * a, 1.0, TYRE)
    c.poly([(0.12 * a, 0.43), (0.22 * a, 0.03), (0.78 * a, 0.03), (0.88 * a, 0.43)], paint)
    c.poly([(0.18 * a, 0.41), (0.26 * a, 0.09), (0.74 * a, 0.09), (0.82 * a, 0.41)],
           shade(glass, 0.7) if rear else glass)
    c.round_rect(0.0, 0.40, a, 0.9, 0.07, paint)
    c.rect(0.02 * a, 0.8, 0.98 * a, 0.88, shade(paint, 0.5))
    if rear:
        for x0 in (0.05, 0.73):
            c.rect(x0 * a, 0.48, (x0 + 0.22) * a, 0.6, rgb(215, 25, 25), glow=True)
        c.line(0.3 * a, 0.47, 0.7 * a, 0.47, 0.015, shade(paint, 0.6))
        c.rect(0.38 * a, 0.66, 0.62 * a, 0.76, WHITE)
    else:
        for x0 in (0.06, 0.72):
            c.ellipse((x0 + 0.11) * a, 0.55, 0.11 * a, 0.055, rgb(255, 248, 215), glow=True)
        c.rect(0.33 * a, 0.52, 0.67 * a, 0.66, rgb(30, 30, 32))
        for y in (0.56, 0.61):
            c.line(0.35 * a, y, 0.65 * a, y, 0.01, rgb(90, 90, 95))
        c.rect(0.4 * a, 0.7, 0.6 * a, 0.78, pick(rng, [WHITE, rgb(240, 210, 60)], 5))
    for side in (0, 1):
        x = 0.02 * a if side == 0 else 0.9 * a
        c.rect(x, 0.33, x + 0.08 * a, 0.4, paint)


def car(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    view = ("side", "front", "rear")[int(rng.choice(3, p=[0.5, 0.22, 0.28]))]
    body_style = ("sedan", "hatch", "suv", "van")[int(rng.choice(4, p=[0.4, 0.25, 0.25, 0.1]))]
    paint = pick(rng, CAR_PAINT, 10)
    glass = pick(rng, GLASS, 8)
    facing_left = rng.random() < 0.5
    if view == "side":
        aspect = {"sedan": 2.5, "hatch": 2.2, "suv": 2.25, "van": 2.3}[body_style] * rng.uniform(0.95, 1.05)
        c = Canvas(height, aspect)
        _car_side(c, rng, body_style, paint, glass)
        sprite = c.sprite()
        return sprite.flipped() if facing_left else sprite
    c = Canvas(height, rng.uniform(1.2, 1.4))
    _car_front_rear(c, rng, view == "rear", paint, glass)
    return c.sprite()


# ---------------------------------------------------------------------------------------
# traffic light
# ---------------------------------------------------------------------------------------
def traffic_light(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    horizontal = rng.random() < 0.1
    state = ("R", "G", "Y", "NA")[int(rng.choice(4, p=[0.42, 0.38, 0.15, 0.05]))]
    housing = pick(rng, [rgb(30, 30, 33)] * 6 + [rgb(205, 170, 40), rgb(40, 72, 48)], 6)
    backplate = rng.random() < 0.3
    long_side = 1.0
    short_side = 0.42 + (0.16 if backplate else 0.0)
    # `height` is the long side either way, so horizontal lights are not oversized
    if horizontal:
        c = Canvas(height * short_side, long_side / short_side)
    else:
        c = Canvas(height, short_side / long_side)
    a = c.aspect
    unit = a if horizontal else 1.0  # the long side in canvas units

    def at(u: float, v: float) -> tuple[float, float]:
        """(along, across) in the housing frame -> canvas x, y."""
        return (u * a, v) if horizontal else (v * a, u)

    if backplate:
        x0, y0 = at(0, 0)
        x1, y1 = at(1, 1)
        c.rect(x0, y0, x1, y1, rgb(15, 15, 15))
        border = pick(rng, [WHITE, rgb(240, 200, 40)], 5)
        c.polyline([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], 0.02 * unit, border, closed=True)
        inset = 0.08 / short_side
    else:
        inset = 0.02 / short_side
    hx0, hy0 = at(0.0, inset)
    hx1, hy1 = at(1.0, 1 - inset)
    c.round_rect(min(hx0, hx1), min(hy0, hy1), max(hx0, hx1), max(hy0, hy1), 0.06 * unit, housing)
    r = 0.13 * unit
    for i, color in enumerate(("R", "Y", "G")):
        x, y = at(0.03 + 0.94 * (i + 0.5) / 3, 0.5)
        c.ellipse(x, y - 0.01 * unit, r * 1.18, r * 1.18, shade(housing, 0.55),
                  start=180, end=360, thickness=0.04 * unit)
        if color == state:
            c.circle(x, y, r, LAMP_ON[color], glow=True)
            c.circle(x, y, r * 0.5, mix(LAMP_ON[color], WHITE, 0.55), glow=True)
        else:
            c.circle(x, y, r, LAMP_OFF[color])
    return c.sprite({"trafficLightColor": state})


# ---------------------------------------------------------------------------------------
# traffic sign
# ---------------------------------------------------------------------------------------
def _arrow(c: Canvas, x: float, y: float, size: float, angle: float, color: Color) -> None:
    """A bold arrow centred on (x, y) pointing at `angle` radians (0 = up)."""
    pts = [(-0.12, 0.45), (-0.12, -0.05), (-0.3, -0.05), (0.0, -0.45), (0.3, -0.05), (0.12, -0.05), (0.12, 0.45)]
    ca, sa = math.cos(angle), math.sin(angle)
    c.poly([(x + size * (px * ca - py * sa), y + size * (px * sa + py * ca)) for px, py in pts], color)


def _centered_text(c: Canvas, s: str, x: float, y: float, h: float, color: Color) -> None:
    w = c.text_width(s, h, 0.16)
    c.text(s, x - w / 2, y + h / 2, h, color, 0.16)


def traffic_sign(rng: np.random.Generator, height: float, phase: float | None = None) -> Sprite:
    shape = ("prohibit", "mandatory", "warning", "yield", "stop", "info", "direction",
             "diamond", "speed")[int(rng.integers(9))]
    aspect = {"direction": rng.uniform(1.5, 2.2), "speed": 0.8}.get(shape, 1.0)
    c = Canvas(height, aspect)
    a = c.aspect
    if shape == "prohibit":
        content = int(rng.integers(3))
        if content == 0:  # speed limit disc
            c.circle(0.5, 0.5, 0.5, SIGN_RED)
            c.circle(0.5, 0.5, 0.38, WHITE)
            _centered_text(c, str(int(rng.choice([20, 30, 40, 50, 60, 70, 80]))), 0.5, 0.5, 0.3, BLACK)
        elif content == 1:  # no entry
            c.circle(0.5, 0.5, 0.5, SIGN_RED)
            c.rect(0.18, 0.41, 0.82, 0.59, WHITE)
        else:  # no parking
            c.circle(0.5, 0.5, 0.5, SIGN_RED)
            c.circle(0.5, 0.5, 0.38, SIGN_BLUE)
            c.line(0.25, 0.25, 0.75, 0.75, 0.1, SIGN_RED)
    elif shape == "mandatory":
        c.circle(0.5, 0.5, 0.5, SIGN_BLUE)
        c.circle(0.5, 0.5, 0.47, shade(SIGN_BLUE, 1.15), thickness=0.03)
        _arrow(c, 0.5, 0.5, 0.7, float(rng.choice([0, math.pi / 2, -math.pi / 2, math.pi / 4])), WHITE)
    elif shape in ("warning", "yield"):
        up = shape == "warning"
        outer = [(0.5, 0.03), (1.0, 0.95), (0.0, 0.95)] if up else [(0.0, 0.05), (1.0, 0.05), (0.5, 0.97)]
        c.poly(outer, SIGN_RED)
        c.poly(_centroid_inset(outer, 0.66), pick(rng, [WHITE, rgb(250, 215, 60)], 4))
        if up:
            c.line(0.5, 0.42, 0.5, 0.68, 0.07, BLACK)
            c.circle(0.5, 0.78, 0.04, BLACK)
    elif shape == "stop":
        octo = [(0.5 + 0.5 * math.cos(math.pi / 8 + k * math.pi / 4),
                 0.5 + 0.5 * math.sin(math.pi / 8 + k * math.pi / 4)) for k in range(8)]
        c.poly(octo, WHITE)
        c.poly(_centroid_inset(octo, 0.9), SIGN_RED)
        _centered_text(c, "STOP", 0.5, 0.5, 0.22, WHITE)
    elif shape == "info":
        c.round_rect(0.0, 0.0, 1.0, 1.0, 0.08, WHITE)
        c.round_rect(0.05, 0.05, 0.95, 0.95, 0.06, SIGN_BLUE)
        _centered_text(c, str(rng.choice(["P", "H", "i"])), 0.5, 0.5, 0.55, WHITE)
    elif shape == "direction":
        green = pick(rng, [SIGN_GREEN, SIGN_BLUE], 6)
        c.round_rect(0.0, 0.0, a, 1.0, 0.08, WHITE)
        c.round_rect(0.05, 0.05, a - 0.05, 0.95, 0.06, green)
        _arrow(c, 0.3, 0.5, 0.55, float(rng.choice([0, math.pi / 2, -math.pi / 2])), WHITE)
        for _k, y in enumerate((0.32, 0.55, 0.75)):
            c.rect(0.6, y - 0.05, 0.6 + (a - 0.75) * rng.uniform(0.6, 1.0), y + 0.05, WHITE)
    elif shape == "diamond":
        dia = [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
        c.poly(dia, BLACK)
        c.poly(_centroid_inset(dia, 0.88), SIGN_YELLOW)
        _arrow(c, 0.5, 0.5, 0.45, float(rng.choice([0, math.pi / 2, -math.pi / 2])), BLACK)
    else:  # white rectangular speed limit plate
        c.rect(0.0, 0.0, a, 1.0, BLACK)
        c.rect(0.04, 0.04, a - 0.04, 0.96, WHITE)
        for y in (0.15, 0.3):
            c.rect(0.15, y - 0.04, a - 0.15, y + 0.04, BLACK)
        _centered_text(c, str(int(rng.choice([25, 35, 45, 55]))), a / 2, 0.65, 0.3, BLACK)
    return c.sprite()
