"""The detector stage's core: YOLO models that return per-box logits and features."""

from pipeline.detect.detector import Detector, DetectorConfig

__all__ = ["Detector", "DetectorConfig"]
