"""What ships inside the package: the street-world baseline detector and sample images."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL_NAME = "ghostbox-street-n"


def default_model() -> Path:
    return ASSETS / "models" / f"{DEFAULT_MODEL_NAME}.pt"


def sample_images() -> list[Path]:
    return sorted((ASSETS / "samples").glob("*.jpg"))
