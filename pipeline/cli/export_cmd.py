"""`ghostbox export`: write an ONNX model that also outputs class logits and box features,
and with `--int8` a statically quantized copy calibrated on the user's own frames."""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.cli.settings_args import SettingsHelpFormatter, add_setting
from pipeline.detect.config import FALLBACK_IMGSZ
from pipeline.errors import GhostboxError

EXPORT = "pipeline.detect.onnx_export:export_onnx"  # its defaults; read when help is printed (loads torch)
INT8 = "pipeline.detect.onnx_int8:export_int8"

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export a detector to ONNX with logits and feature outputs",
                            formatter_class=SettingsHelpFormatter)
    parser.add_argument("model", help=".pt file, Ultralytics name or architecture .yaml (with --int8, also a "
                                      "ghostbox .onnx export)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    parser.add_argument("--out", "-o", help="output file (default: beside the model, .onnx; for an .onnx MODEL "
                                             "with --int8, the int8 file)")
    parser.add_argument("--imgsz", type=int,
                        help=f"the size recorded as the model's default (default: its training size, else "
                             f"{FALLBACK_IMGSZ})")
    parser.add_argument("--end2end", action="store_true", help="export the NMS-free one-to-one head")
    add_setting(parser, "--max-det", model=EXPORT, field="max_det", type=int, help="maximum boxes per image")
    parser.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip onnxslim")
    int8 = parser.add_argument_group("int8 (docs/detect.md#int8)")
    int8.add_argument("--int8", action="store_true",
                      help="also write a statically quantized int8 model beside the export (MODEL.int8.onnx)")
    int8.add_argument("--calibration", metavar="PATH",
                      help="frames to calibrate the int8 model on: an image folder, image glob or video (your "
                           "camera's frames, not the ones you evaluate on)")
    add_setting(int8, "--calibration-frames", model=INT8, field="frames", type=int, metavar="N",
                dest="calibration_frames", help="frames taken evenly spread over PATH")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.int8 and not args.calibration:
        raise GhostboxError("--int8 needs --calibration PATH (an image folder, glob or video of your own frames)")
    if args.calibration and not args.int8:
        raise GhostboxError("--calibration is for --int8: add --int8 to write a quantized model")
    # torch loads with the exporter (seconds): only when it runs, not for `ghostbox --help`
    from pipeline.detect.model_source import resolve_model
    from pipeline.detect.onnx_export import export_onnx

    int8_out = None
    if args.int8 and str(args.model).lower().endswith(".onnx"):
        fp32 = resolve_model(args.model).path  # an existing export: quantize it as it is, --out names the int8 file
        int8_out = args.out
    else:
        given = {"max_det": args.max_det} if args.max_det is not None else {}
        fp32 = export_onnx(args.model, args.out, imgsz=args.imgsz, end2end=args.end2end, simplify=args.simplify,
                           **given)
        log.info("wrote %s (outputs: head, logits, features)", fp32)
        print(fp32)
    if not args.int8:
        return 0
    from pipeline.detect.onnx_int8 import export_int8

    given = {"frames": args.calibration_frames} if args.calibration_frames is not None else {}
    int8, calibration = export_int8(fp32, args.calibration, out=int8_out, **given)
    if int8 is None:
        for line in calibration.report.problems():
            print(f"ghostbox export: {line}", file=sys.stderr)
        print(f"ghostbox export: incomplete calibration input '{args.calibration}' ({calibration.report.read} "
              f"frames read): int8 model not written; fix or leave out the named files", file=sys.stderr)
        return 1
    log.info("wrote %s (int8, calibrated on %d frames of '%s')", int8, len(calibration.images), args.calibration)
    print(int8)
    return 0
