"""`ghostbox calibrate`: fit a hallucination filter on ID data and write it to one file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.cli.detector_flags import add_detector_flags, detector_config
from pipeline.cli.progress import progress_bar


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate",
        help="fit a hallucination filter (OOD score + per-class thresholds) on ID data",
        description="ID data: a labelled dataset SPEC (boxes matching ground truth, IoU>=0.5, same class) or a "
        "folder of images / a video (unlabelled: detections at --unlabelled-conf). Several methods "
        "(--method knn,mahalanobis) are fused by rank average.",
    )
    parser.add_argument("--id", dest="id_spec", required=True, metavar="SPEC|DIR|VIDEO")
    parser.add_argument("--method", required=True, help="score name, or several comma-separated (fusion)")
    parser.add_argument("--params", default="{}", help='JSON parameters of the method, e.g. \'{"k": 20}\'')
    parser.add_argument("--tpr", type=float, default=0.95, help="ID true-positive rate the thresholds keep")
    parser.add_argument("--min-boxes", type=int, default=20, help="classes with fewer ID boxes use the global threshold")
    parser.add_argument("--calibration-fraction", type=float, default=0.3,
                        help="ID boxes held out for the thresholds (the rest fit the score)")
    parser.add_argument("--policy", choices=["flag", "drop"], default="flag")
    parser.add_argument("--unlabelled-conf", type=float, default=0.5)
    parser.add_argument("--outliers", nargs="+", default=[], metavar="SPEC|DIR|VIDEO",
                        help="images with non-ID objects (a `ghostbox proxies` set, an outlier pool) for scores "
                        "that learn from outliers (oe): their detections hitting no ID ground truth")
    parser.add_argument("--outlier-conf", type=float, help="confidence of outlier detections (default: --conf)")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", "-o", required=True, help="filter file (suffix .filter.safetensors)")
    add_detector_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.detect.detector import Detector
    from pipeline.filter.filter_file import save_filter
    from pipeline.filter.fit_from_data import FitRequest, fit_filter, parse_methods, parse_params

    method, params = parse_methods(args.method, parse_params(args.params))
    request = FitRequest(method=method, id_spec=args.id_spec, params=params, outliers=list(args.outliers),
                         outlier_conf=args.outlier_conf, tpr=args.tpr, min_boxes=args.min_boxes,
                         calibration_fraction=args.calibration_fraction, seed=args.seed, policy=args.policy,
                         unlabelled_conf=args.unlabelled_conf, max_images=args.max_images)
    request.check()  # before the model loads
    config = request.detector_config(detector_config(args), box_features_set=args.box_features is not None)
    detector = Detector(config)
    started = time.perf_counter()
    filt, notes = fit_filter(detector, request, progress=lambda label: progress_bar(label, None))
    out = save_filter(filt, Path(args.out))
    for note in notes[1:]:
        print(note)
    print(f"{method} filter fitted on {notes[0]} in {time.perf_counter() - started:.1f} s -> {out}")
    print(filt.thresholds.summary())
    return 0
