"""The detector stage's core: YOLO models that return per-box logits and features.

`pipeline.detect.config` (settings) imports no torch; `pipeline.detect.detector` (the model) does,
so importing this package loads nothing heavy until `Detector` is asked for.
"""

from typing import Any

from pipeline.detect.config import DetectorConfig

__all__ = ["Detector", "DetectorConfig"]


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from pipeline.detect.detector import Detector  # loads torch: only when asked for

        return Detector
    raise AttributeError(f"module 'pipeline.detect' has no attribute {name!r}")
