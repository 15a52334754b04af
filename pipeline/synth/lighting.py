"""Per-image conditions: time of day, weather, exposure, colour cast, blur and sensor noise.

Applied to the finished scene so objects and background change together; light sources (lit
lamps, headlights, lit windows) keep their brightness at night so the scene stays readable.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

TIMES_OF_DAY = ("daytime", "dawn/dusk", "night")
TIME_P = (0.7, 0.15, 0.15)
WEATHERS = ("clear", "partly cloudy", "overcast", "rainy", "foggy")
WEATHER_P = (0.45, 0.2, 0.2, 0.1, 0.05)


_NOISE_BANK_SIDE = 1024


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Unit Gaussian noise drawn once per process from a fixed seed (drawing per image is slow)."""
    rng = np.random.default_rng(20250101)
    return rng.standard_normal((_NOISE_BANK_SIDE, _NOISE_BANK_SIDE, 3), dtype=np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Sensor noise: a window of the bank at a random offset (fresh draws for images too large)."""
    h, w = shape[:2]
    if h > _NOISE_BANK_SIDE or w > _NOISE_BANK_SIDE:
        return rng.standard_normal(size=shape, dtype=np.float32)
    y = int(rng.integers(0, _NOISE_BANK_SIDE - h + 1))
    x = int(rng.integers(0, _NOISE_BANK_SIDE - w + 1))
    return _noise_bank()[y:y + h, x:x + w]


def sample_conditions(rng: np.random.Generator) -> tuple[str, str]:
    """(timeofday, weather) with BDD-100K's attribute values."""
    timeofday = TIMES_OF_DAY[int(rng.choice(len(TIMES_OF_DAY), p=TIME_P))]
    weather = WEATHERS[int(rng.choice(len(WEATHERS), p=WEATHER_P))]
    return timeofday, weather


def apply_conditions(img: np.ndarray, glow: np.ndarray, rng: np.random.Generator, timeofday: str,
                     weather: str, gain_scale: float = 1.0) -> np.ndarray:
    """The float BGR scene as it would be photographed: uint8 BGR of the same size."""
    if timeofday == "night":
        gain, cast = rng.uniform(0.45, 0.65), np.array([1.15, 1.0, 0.9], np.float32)
    elif timeofday == "dawn/dusk":
        gain, cast = rng.uniform(0.65, 0.9), np.array([0.85, 0.95, 1.12], np.float32)
    else:
        gain, cast = rng.uniform(0.85, 1.15), np.ones(3, np.float32)
    cast = cast * rng.uniform(0.93, 1.07, size=3).astype(np.float32)
    contrast = rng.uniform(0.85, 1.15)
    mean = float(img.mean())
    # contrast around the mean, exposure and colour cast folded into one multiply-add
    scale = (contrast * gain * gain_scale * cast).astype(np.float32)
    offset = ((1.0 - contrast) * mean * gain * gain_scale * cast).astype(np.float32)
    out: np.ndarray = img * scale + offset  # float32; cv2.GaussianBlur's result below is typed any-dtype
    if weather == "overcast":
        grey = out.mean(axis=2, keepdims=True)
        out = out * 0.7 + grey * 0.3
    elif weather == "rainy":
        out *= 0.85
        h, w = out.shape[:2]
        streaks = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(40, 120))):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            length = rng.uniform(4, 12)
            cv2.line(streaks, (int(x), int(y)), (int(x + length * 0.2), int(y + length)), 1.0, 1, cv2.LINE_AA)
        out += streaks[..., None] * 45.0
    elif weather == "foggy":
        fog = rng.uniform(0.15, 0.35)
        out = out * (1 - fog) + 190.0 * gain * fog
    # light sources are not dimmed, and bloom a little in the dark
    lit = glow > 0
    if lit.any():
        g = glow[lit][:, None]
        out[lit] = out[lit] * (1 - g) + img[lit] * g
        if timeofday != "daytime":
            out += cv2.GaussianBlur(img * glow[..., None], (0, 0), 2.0) * 0.6
    if rng.random() < 0.15:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 0.9))
    if rng.random() < 0.5:
        out += _noise(rng, out.shape) * np.float32(rng.uniform(1.0, 4.0))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
