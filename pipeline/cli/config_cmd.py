"""`ghostbox config CMD`: a command's default settings as YAML, valid input for its --config."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pipeline.cli import detector_flags, finetune_cmd, proxies_cmd, run_cmd

# Every command that reads a config file, and its defaults as that file.
DEFAULTS: dict[str, Callable[[], str]] = {
    "detect": detector_flags.default_config,
    "calibrate": detector_flags.default_config,
    "adapt": detector_flags.default_config,
    "eval": detector_flags.default_config,
    "proxies": proxies_cmd.default_config,
    "finetune": finetune_cmd.default_config,
    "run": run_cmd.default_config,
    "stage": run_cmd.default_config,
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "config", help="print a command's default settings as YAML (a starting point for its --config)",
        description="Prints the defaults of CMD's config file, one comment per setting; required settings are "
                    "commented out. `ghostbox config proxies > p.yaml`, edit, then `ghostbox proxies --config "
                    "p.yaml`. For run and stage it is the graph config (add `sources:`, or pass --source to run).",
    )
    parser.add_argument("name", metavar="CMD", choices=sorted(DEFAULTS), help=", ".join(sorted(DEFAULTS)))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(DEFAULTS[args.name](), end="")
    return 0
