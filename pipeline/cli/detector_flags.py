"""Detector flags shared by every command that runs a detector."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pipeline.bundled import default_model
from pipeline.config_files import read_yaml, validate
from pipeline.detect.config import DetectorConfig
from pipeline.filter.filter_file import with_filter_features

FLAGS = ("model", "imgsz", "conf", "iou", "max_det", "device", "batch", "half", "end2end", "agnostic_nms",
         "box_features")


def add_detector_flags(parser: argparse.ArgumentParser, model_required: bool = False) -> None:
    group = parser.add_argument_group("detector")
    group.add_argument(
        "--model", "-m", required=model_required,
        help=".pt, .onnx (from `ghostbox export`), an Ultralytics name or an architecture .yaml "
        "(default: the bundled street-world model)",
    )
    group.add_argument("--imgsz", type=int, help="inference size in pixels (default 640, or the model's training size)")
    group.add_argument("--conf", type=float, help="confidence threshold (default 0.25)")
    group.add_argument("--iou", type=float, help="NMS IoU threshold (default 0.7)")
    group.add_argument("--max-det", dest="max_det", type=int, help="maximum boxes per frame (default 300)")
    group.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    group.add_argument("--batch", type=int, help="frames per forward pass (default 8)")
    group.add_argument("--half", action="store_true", default=None, help="float16 on CUDA")
    group.add_argument("--end2end", action="store_true", default=None,
                       help="use the NMS-free one-to-one head (YOLOv10, YOLO26)")
    group.add_argument("--agnostic-nms", dest="agnostic_nms", action="store_true", default=None)
    group.add_argument("--box-features", dest="box_features", choices=["head", "head+roi"],
                       help="box features: the head's hidden vector at the anchor, or that plus RoI-aligned neck "
                       "features (default: what the --filter was fitted with, else head)")
    group.add_argument("--config", "-c", help="YAML config; its `detector:` section sets these flags")


def detector_config(args: argparse.Namespace, filters: Sequence[str] = ()) -> DetectorConfig:
    """The detector settings from --config and flags; `filters` choose the box features unless set."""
    data: dict[str, Any] = {}
    where = "command line"
    if getattr(args, "config", None):
        where = f"config '{args.config}'"
        section = read_yaml(args.config).get("detector", {}) or {}
        data.update(section)
    for name in FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    if "model" not in data:
        data["model"] = str(default_model())
    return with_filter_features(validate(DetectorConfig, data, where), filters)
