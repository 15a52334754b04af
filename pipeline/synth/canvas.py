"""Drawing one object into its own patch: colour, coverage and light-emitting layers.

Objects are drawn at a few times their final size and shrunk with area averaging, which gives
anti-aliased edges and a soft coverage (alpha) layer from the same shapes. Coordinates are in
units of the patch height, so x runs over [0, aspect] and y over [0, 1] and circles stay round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

Color = tuple[float, float, float]  # BGR, 0..255

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel placement of every vertex
_ONE = 1 << _SHIFT
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_CAP_PX = cv2.getTextSize("H", _FONT, 1.0, 1)[0][1]  # cap height at scale 1


@dataclass
class Sprite:
    """An object ready to paste: premultiplied BGR, coverage and emission, all float32 (h, w)."""

    color: np.ndarray
    alpha: np.ndarray
    glow: np.ndarray
    attributes: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def width(self) -> int:
        return int(self.alpha.shape[1])

    def flipped(self) -> Sprite:
        return Sprite(
            np.ascontiguousarray(self.color[:, ::-1]),
            np.ascontiguousarray(self.alpha[:, ::-1]),
            np.ascontiguousarray(self.glow[:, ::-1]),
            dict(self.attributes),
        )


class Canvas:
    """A supersampled drawing surface for one object of `height_px` x `height_px * aspect`."""

    def __init__(self, height_px: float, aspect: float) -> None:
        self.out_h = max(3, int(round(height_px)))
        self.out_w = max(3, int(round(height_px * aspect)))
        # small objects need more supersampling for their details to survive the shrink
        self.ss = 4 if self.out_h < 40 else 2
        self.H = self.out_h * self.ss
        self.W = self.out_w * self.ss
        self.aspect = self.W / self.H
        self.color = np.zeros((self.H, self.W, 3), np.uint8)
        self.alpha = np.zeros((self.H, self.W), np.uint8)
        self.glow = np.zeros((self.H, self.W), np.uint8)

    # -- coordinate helpers --------------------------------------------------------------
    def _p(self, x: float, y: float) -> tuple[int, int]:
        return (int(round(x * self.H * _ONE)), int(round(y * self.H * _ONE)))

    def _len(self, r: float) -> int:
        return max(0, int(round(r * self.H * _ONE)))

    def _thick(self, t: float) -> int:
        return max(1, int(round(t * self.H)))

    def _layers(self, color: Color, glow: bool, erase: bool):
        if erase:
            return ((self.color, (0, 0, 0)), (self.alpha, 0), (self.glow, 0))
        return (
            (self.color, tuple(int(min(255.0, max(0.0, c))) for c in color)),
            (self.alpha, 255),
            (self.glow, 255 if glow else 0),
        )

    # -- primitives ------------------------------------------------------------------------
    def poly(self, pts: Sequence[tuple[float, float]], color: Color = (0, 0, 0), *,
             glow: bool = False, erase: bool = False) -> None:
        arr = np.array([self._p(x, y) for x, y in pts], np.int32).reshape(-1, 1, 2)
        for layer, value in self._layers(color, glow, erase):
            cv2.fillPoly(layer, [arr], value, cv2.LINE_8, _SHIFT)

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: Color = (0, 0, 0), *,
             glow: bool = False, erase: bool = False) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, glow=glow, erase=erase)

    def round_rect(self, x0: float, y0: float, x1: float, y1: float, r: float,
                   color: Color = (0, 0, 0), *, glow: bool = False) -> None:
        r = max(0.0, min(r, (x1 - x0) / 2, (y1 - y0) / 2))
        self.rect(x0 + r, y0, x1 - r, y1, color, glow=glow)
        self.rect(x0, y0 + r, x1, y1 - r, color, glow=glow)
        for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            self.circle(cx, cy, r, color, glow=glow)

    def circle(self, x: float, y: float, r: float, color: Color = (0, 0, 0), *,
               thickness: float | None = None, glow: bool = False, erase: bool = False) -> None:
        t = -1 if thickness is None else self._thick(thickness)
        for layer, value in self._layers(color, glow, erase):
            cv2.circle(layer, self._p(x, y), self._len(r), value, t, cv2.LINE_8, _SHIFT)

    def ellipse(self, x: float, y: float, rx: float, ry: float, color: Color = (0, 0, 0), *,
                angle: float = 0.0, start: float = 0.0, end: float = 360.0,
                thickness: float | None = None, glow: bool = False, erase: bool = False) -> None:
        t = -1 if thickness is None else self._thick(thickness)
        axes = (self._len(rx), self._len(ry))
        for layer, value in self._layers(color, glow, erase):
            cv2.ellipse(layer, self._p(x, y), axes, angle, start, end, value, t, cv2.LINE_8, _SHIFT)

    def line(self, x0: float, y0: float, x1: float, y1: float, thickness: float,
             color: Color = (0, 0, 0), *, glow: bool = False, erase: bool = False) -> None:
        t = self._thick(thickness)
        for layer, value in self._layers(color, glow, erase):
            cv2.line(layer, self._p(x0, y0), self._p(x1, y1), value, t, cv2.LINE_8, _SHIFT)

    def polyline(self, pts: Sequence[tuple[float, float]], thickness: float,
                 color: Color = (0, 0, 0), *, closed: bool = False, glow: bool = False) -> None:
        arr = np.array([self._p(x, y) for x, y in pts], np.int32).reshape(-1, 1, 2)
        t = self._thick(thickness)
        for layer, value in self._layers(color, glow, False):
            cv2.polylines(layer, [arr], closed, value, t, cv2.LINE_8, _SHIFT)

    def text(self, s: str, x: float, y: float, height: float, color: Color,
             thickness: float = 0.08) -> None:
        """Text whose cap height is `height`, starting at baseline point (x, y)."""
        scale = height * self.H / _FONT_CAP_PX
        org = (int(round(x * self.H)), int(round(y * self.H)))
        t = self._thick(thickness * height)
        for layer, value in self._layers(color, False, False):
            cv2.putText(layer, s, org, _FONT, scale, value, t, cv2.LINE_8)

    def text_width(self, s: str, height: float, thickness: float = 0.08) -> float:
        scale = height * self.H / _FONT_CAP_PX
        (w, _), _ = cv2.getTextSize(s, _FONT, scale, self._thick(thickness * height))
        return w / self.H

    def keep_inside(self, pts: Sequence[tuple[float, float]]) -> None:
        """Erase everything outside the polygon."""
        inside = np.zeros_like(self.alpha)
        arr = np.array([self._p(x, y) for x, y in pts], np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(inside, [arr], 255, cv2.LINE_8, _SHIFT)
        outside = inside == 0
        self.color[outside] = 0
        self.alpha[outside] = 0
        self.glow[outside] = 0

    # -- result ----------------------------------------------------------------------------
    def sprite(self, attributes: dict | None = None) -> Sprite:
        size = (self.out_w, self.out_h)
        # colour is black where nothing was drawn, so the shrunk colour is premultiplied
        color = cv2.resize(self.color, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha = cv2.resize(self.alpha, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        glow = cv2.resize(self.glow, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        return Sprite(color, alpha / 255.0, glow / 255.0, dict(attributes or {}))


def shade(color: Color, factor: float) -> Color:
    """The colour darkened (factor < 1) or lightened (factor > 1), clipped to 0..255."""
    return tuple(min(255.0, max(0.0, c * factor)) for c in color)  # type: ignore[return-value]


def mix(a: Color, b: Color, t: float) -> Color:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def pick(rng: np.random.Generator, palette: Sequence[Color], jitter: float = 12.0) -> Color:
    """A palette colour with a little per-channel jitter, so no two objects match exactly."""
    base = palette[int(rng.integers(len(palette)))]
    shifts = rng.uniform(-jitter, jitter, size=3)
    return tuple(min(255.0, max(0.0, c + float(d))) for c, d in zip(base, shifts))  # type: ignore[return-value]


def rgb(r: float, g: float, b: float) -> Color:
    """Colours are written as RGB for the reader and stored as BGR for OpenCV."""
    return (float(b), float(g), float(r))
