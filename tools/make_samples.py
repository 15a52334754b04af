"""Render the bundled sample images (pipeline/assets/samples) from the synthetic world.

    .venv/bin/python tools/make_samples.py

Street scenes of the seed-0 world (320x320): ID objects beside near- and far-OoD
objects, so `ghostbox detect` on them shows both real detections and hallucinations.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = (("mixed_test", 0), ("mixed_test", 3), ("mixed_test", 7), ("near_test", 1), ("val", 2), ("far_test", 4))


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from pipeline.bundled import ASSETS
    from pipeline.synth import WorldConfig, render_split_image

    out = ASSETS / "samples"
    out.mkdir(parents=True, exist_ok=True)
    config = WorldConfig(seed=0)
    for split, index in SAMPLES:
        image, _ = render_split_image(config, split, index)
        path = out / f"street_{split}_{index}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
