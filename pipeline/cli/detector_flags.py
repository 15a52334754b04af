"""Detector flags shared by every command that runs a detector; their defaults are `DetectorConfig`'s."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pipeline.bundled import default_model
from pipeline.cli.settings_args import SettingsFlags
from pipeline.config_files import defaults_yaml, read_yaml, section
from pipeline.detect.config import DetectorConfig
from pipeline.filter.filter_file import with_filter_features

# What each detector setting means, for --help and `ghostbox config`. TODO(issue 15): move these into
# `Field(description=...)` in pipeline/detect/config.py, which another change owns.
HELP = {
    "model": ".pt, .onnx (from `ghostbox export`), an Ultralytics name or an architecture .yaml "
             "(default: the bundled street-world model)",
    "imgsz": "inference size in pixels (default: the model's training size, else 640)",
    "conf": "confidence threshold",
    "iou": "NMS IoU threshold",
    "max_det": "maximum boxes per frame",
    "device": "auto, cpu, cuda or cuda:N",
    "batch": "frames per forward pass",
    "half": "float16 on CUDA",
    "end2end": "use the NMS-free one-to-one head (YOLOv10, YOLO26)",
    "agnostic_nms": "NMS across classes",
    "classes": "keep only these class ids (default: all)",
    "box_features": "box features: the head's hidden vector at the anchor, or that plus RoI-aligned neck "
                    "features (default: what the --filter was fitted with, else head)",
}
FLAGS = ("model", "imgsz", "conf", "iou", "max_det", "device", "batch", "half", "end2end", "agnostic_nms",
         "box_features")


def add_detector_flags(parser: argparse.ArgumentParser, model_required: bool = False,
                       config_help: str = "YAML config; its `detector:` section sets these flags") -> None:
    group = parser.add_argument_group("detector")
    flags = SettingsFlags("detector_flags")
    for name in FLAGS:
        option = "--" + name.replace("_", "-")
        extra: dict[str, Any] = {"required": model_required} if name == "model" else {}
        flags.add(group, option, *(["-m"] if name == "model" else []), model=DetectorConfig, field=name,
                  help=HELP[name], **extra)
    group.add_argument("--config", "-c", metavar="FILE.yaml",
                       help=f"{config_help}; flags win over it (`ghostbox config {parser.prog.split()[-1]}` prints "
                       "the defaults)")
    flags.attach(parser)


def detector_section(args: argparse.Namespace) -> dict[str, Any]:
    """The `detector:` section of --config (empty without one); the file's other sections are not read here."""
    config = getattr(args, "config", None)
    return section(read_yaml(config), "detector", f"config '{config}'") if config else {}


def detector_config(args: argparse.Namespace, filters: Sequence[str] = ()) -> DetectorConfig:
    """The detector settings from --config and flags; `filters` choose the box features unless set."""
    data = {"model": str(default_model()), **detector_section(args)}
    flags: SettingsFlags = args.detector_flags
    config = flags.build(DetectorConfig, args, data, getattr(args, "config", None), "detector")
    return with_filter_features(config, filters)


def detector_notes(prefix: str = "detector") -> dict[str, str]:
    """What each detector field means, keyed as `defaults_yaml` notes."""
    return {f"{prefix}.{name}": text for name, text in HELP.items()}


def default_config() -> str:
    """`ghostbox config detect|calibrate|eval`: the detector defaults, as a --config file."""
    return ("# --config FILE: the `detector:` section; command-line flags win over these values.\n"
            + defaults_yaml({"detector": DetectorConfig}, notes=detector_notes()))
