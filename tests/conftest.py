"""Test-wide settings: a private ghostbox home, offline, and small generated models."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Before `pipeline` is imported: Ultralytics' config dir must be a private, throw-away one.
_HOME = Path(tempfile.mkdtemp(prefix="ghostbox-test-home-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["GHOSTBOX_HOME"] = str(_HOME)
os.environ["GHOSTBOX_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pipeline  # noqa: E402,F401
from tests.helpers.model_factory import make_checkpoint, natural_images  # noqa: E402

FAMILIES = {
    "yolov8": "yolov8n.yaml",
    "yolo11": "yolo11n.yaml",
    "yolov10": "yolov10n.yaml",
    "yolo26": "yolo26n.yaml",
}


@pytest.fixture(scope="session")
def ghostbox_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def checkpoints(model_dir: Path) -> dict[str, Path]:
    """One small Ultralytics checkpoint per head family, with moderate, non-degenerate outputs."""
    return {name: make_checkpoint(arch, model_dir / f"{name}.pt") for name, arch in FAMILIES.items()}


@pytest.fixture(scope="session")
def frames() -> list[np.ndarray]:
    return natural_images(3, sizes=[(240, 320), (240, 320), (200, 360)], seed=7)
