"""`ghostbox export`: write an ONNX model that also outputs class logits and box features."""

from __future__ import annotations

import argparse
import logging

from pipeline.cli.settings_args import SettingsHelpFormatter, add_setting
from pipeline.detect.config import FALLBACK_IMGSZ

EXPORT = "pipeline.detect.onnx_export:export_onnx"  # its defaults; read when help is printed (loads torch)

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export a detector to ONNX with logits and feature outputs",
                            formatter_class=SettingsHelpFormatter)
    parser.add_argument("model", help=".pt file, Ultralytics name or architecture .yaml")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    parser.add_argument("--out", "-o", help="output file (default: beside the model, .onnx)")
    parser.add_argument("--imgsz", type=int,
                        help=f"the size recorded as the model's default (default: its training size, else "
                             f"{FALLBACK_IMGSZ})")
    parser.add_argument("--end2end", action="store_true", help="export the NMS-free one-to-one head")
    add_setting(parser, "--max-det", model=EXPORT, field="max_det", type=int, help="maximum boxes per image")
    parser.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip onnxslim")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # torch loads with the exporter (seconds): only when it runs, not for `ghostbox --help`
    from pipeline.detect.onnx_export import export_onnx

    given = {"max_det": args.max_det} if args.max_det is not None else {}
    out = export_onnx(args.model, args.out, imgsz=args.imgsz, end2end=args.end2end, simplify=args.simplify, **given)
    log.info("wrote %s (outputs: head, logits, features)", out)
    print(out)
    return 0
