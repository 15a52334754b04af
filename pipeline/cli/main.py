"""`ghostbox` entry point: one subcommand per module, errors as one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import pipeline
from pipeline.cli import (
    adapt_cmd,
    bench_cmd,
    calibrate_cmd,
    config_cmd,
    data_cmd,
    demo_cmd,
    detect_cmd,
    eval_cmd,
    export_cmd,
    finetune_cmd,
    health_cmd,
    keys_cmd,
    proxies_cmd,
    review_cmd,
    run_cmd,
    stage_cmd,
    synth_cmd,
)
from pipeline.errors import GhostboxError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghostbox", description="Keep object detectors from seeing things that are not there."
    )
    parser.add_argument("--version", action="version", version=f"ghostbox {pipeline.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (detect_cmd, export_cmd, synth_cmd, data_cmd, calibrate_cmd, adapt_cmd, eval_cmd, bench_cmd,
                   run_cmd, stage_cmd, demo_cmd, keys_cmd, review_cmd, proxies_cmd, finetune_cmd, config_cmd,
                   health_cmd):
        module.add_parser(sub)
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    # Ultralytics logs through its own logger; keep it quiet unless asked.
    logging.getLogger("ultralytics").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader narrates every CPU-feature probe


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.handler(args) or 0)
    except GhostboxError as exc:
        print(f"ghostbox {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ghostbox {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ghostbox ... | head`: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
