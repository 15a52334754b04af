"""The detector stage's core: YOLO models that return per-box logits and features.

`pipeline.detect.config` (settings) imports no torch; `pipeline.detect.detector` (the model) does,
so importing this package loads nothing heavy until `Detector` is asked for. `detect_frames`
(`pipeline.detect.frame_loop`) is the batching loop every frame-reading command runs the detector in.
"""

from typing import Any

from pipeline.detect.config import DetectorConfig
from pipeline.detect.frame_loop import detect_frames

__all__ = ["Detector", "DetectorConfig", "detect_frames"]


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from pipeline.detect.detector import Detector  # loads torch: only when asked for

        return Detector
    raise AttributeError(f"module 'pipeline.detect' has no attribute {name!r}")
