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

# The detector flags; their help and defaults are DetectorConfig's fields' descriptions and defaults.
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
                  **extra)
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
    """What the commands fill in for the detector's required model, keyed as a `defaults_yaml` note."""
    return {f"{prefix}.model": DetectorConfig.model_fields["model"].description or ""}


def default_config() -> str:
    """`ghostbox config detect|calibrate|eval`: the detector defaults, as a --config file."""
    return ("# --config FILE: the `detector:` section; command-line flags win over these values.\n"
            + defaults_yaml({"detector": DetectorConfig}, notes=detector_notes()))
