"""`ghostbox calibrate`: fit a hallucination filter on ID data and write it to one file."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.cli.detector_flags import add_detector_flags, detector_config
from pipeline.cli.progress import progress_bar
from pipeline.cli.settings_args import SettingsHelpFormatter, add_setting, field_default
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import save_filter

# The fit's settings and their defaults: `FitRequest` (its module loads torch, so it is read when needed).
REQUEST = "pipeline.filter.fit_from_data:FitRequest"
SETTINGS = ("tpr", "min_boxes", "calibration_fraction", "seed", "policy", "min_track_frames", "thresholds")

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate",
        help="fit a hallucination filter (OOD score + per-class thresholds) on ID data",
        description="ID data: a labelled dataset SPEC (boxes matching ground truth, IoU>=0.5, same class) or a "
        "video / folder of frames (unlabelled: detections at --conf on tracks of >= --min-track-frames frames). "
        "Thresholds are set per class and confidence bin on ID boxes the fit never saw: whole images or time "
        "blocks held out of --id, or a set of their own (--calibration-id, e.g. a clip of the camera the filter "
        "will watch). Several methods (--method knn,mahalanobis) are fused by rank average.",
        formatter_class=SettingsHelpFormatter,
    )
    parser.add_argument("--id", dest="id_spec", metavar="SPEC|DIR|VIDEO", help="ID data the score is fitted on")
    parser.add_argument("--method", help="score name, or several comma-separated (fusion)")
    parser.add_argument("--from", dest="from_filter", metavar="FILTER",
                        help="keep this filter's fitted score and set new thresholds on --calibration-id (e.g. a "
                        "clip of the camera it will watch); its thresholds are the reference for trimming")
    parser.add_argument("--params", default="{}", help='JSON parameters of the method, e.g. \'{"k": 20}\'')
    add_setting(parser, "--tpr", model=REQUEST, field="tpr", type=float,
                help="ID true-positive rate the thresholds keep")
    add_setting(parser, "--min-boxes", model=REQUEST, field="min_boxes", type=int,
                help="a confidence bin with fewer calibration boxes borrows its neighbours'; "
                "a class with fewer, the global threshold")
    add_setting(parser, "--calibration-fraction", model=REQUEST, field="calibration_fraction", type=float,
                help="ID boxes held out for the thresholds (the rest fit the score)")
    add_setting(parser, "--policy", model=REQUEST, field="policy", choices=["flag", "drop"],
                help="what the filter does with a hallucination")
    add_setting(parser, "--thresholds", model=REQUEST, field="thresholds", choices=["overall", "per-bin"],
                help="one overall threshold at --tpr, or one per class and confidence bin (--tpr in every bin; "
                "on new streets it flags fewer hallucinations: docs/filters.md)")
    parser.add_argument("--calibration-id", metavar="SPEC|DIR|VIDEO",
                        help="ID data that only sets the thresholds (labelled, or unlabelled footage of the camera: "
                        "its tracks that score like hallucinations against the reference thresholds are left out)")
    add_setting(parser, "--min-track-frames", model=REQUEST, field="min_track_frames", type=int,
                help="unlabelled data: frames a track must last for its boxes to count as ID "
                "(1 for a folder of unrelated photos)")
    parser.add_argument("--unlabelled-conf", type=float,
                        help="unlabelled data: lowest confidence of ID boxes (default: --conf, the range the filter "
                        "will judge; a higher value leaves the boxes below it uncalibrated, and the filter then "
                        "refuses a detector run below it)")
    parser.add_argument("--outliers", nargs="+", default=[], metavar="SPEC|DIR|VIDEO",
                        help="images with non-ID objects (a `ghostbox proxies` set, an outlier pool) for scores "
                        "that learn from outliers (oe): their detections hitting no ID ground truth")
    parser.add_argument("--outlier-conf", type=float, help="confidence of outlier detections (default: --conf)")
    parser.add_argument("--reviewed", nargs="+", default=[], metavar="OUT",
                        help="`ghostbox run` output folders: the boxes of tracks a person confirmed real on the "
                        "review page (OUT/review.jsonl, `ghostbox review OUT`) join the ID set")
    parser.add_argument("--max-images", type=int)
    add_setting(parser, "--seed", model=REQUEST, field="seed", type=int, help="seed of the held-out split")
    parser.add_argument("--out", "-o", required=True, help="filter file (suffix .filter.safetensors)")
    add_detector_flags(parser)
    parser.set_defaults(handler=run)


def _setting(args: argparse.Namespace, name: str) -> Any:
    """The flag's value, else `FitRequest`'s default for it."""
    value = getattr(args, name)
    return field_default(REQUEST, name)[0] if value is None else value


def run(args: argparse.Namespace) -> int:
    # torch loads with the detector and the scores (seconds): only when a filter is fitted, not for --help
    from pipeline.detect.detector import Detector
    from pipeline.filter.fit_from_data import FitRequest, fit_filter, parse_methods, parse_params, recalibrate_filter

    if args.from_filter:
        if not args.calibration_id:
            raise GhostboxError("--from FILTER: give --calibration-id SPEC|DIR|VIDEO, "
                                "the data to set new thresholds on")
        if args.id_spec or args.method or args.outliers:
            raise GhostboxError("--from FILTER keeps the filter's fitted score: "
                                "leave out --id, --method and --outliers")
        detector = Detector(detector_config(args, [args.from_filter]))
        started = time.perf_counter()
        filt, notes = recalibrate_filter(detector, args.from_filter, args.calibration_id, tpr=_setting(args, "tpr"),
                                         min_boxes=_setting(args, "min_boxes"), seed=_setting(args, "seed"),
                                         min_track_frames=_setting(args, "min_track_frames"),
                                         max_images=args.max_images, unlabelled_conf=args.unlabelled_conf,
                                         progress=lambda label: progress_bar(label, None))
        out = save_filter(filt, Path(args.out))
        print(f"{filt.method} filter from {args.from_filter} re-calibrated on {notes[0]} in "
              f"{time.perf_counter() - started:.1f} s -> {out}")
        return _report(filt)
    if not args.id_spec or not args.method:
        raise GhostboxError("give --id SPEC and --method NAME (or --from FILTER --calibration-id DATA to re-calibrate)")
    method, params = parse_methods(args.method, parse_params(args.params))
    given = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    request = FitRequest(method=method, id_spec=args.id_spec, params=params, outliers=list(args.outliers),
                         outlier_conf=args.outlier_conf, unlabelled_conf=args.unlabelled_conf,
                         max_images=args.max_images, calibration_id=args.calibration_id,
                         reviewed=list(args.reviewed), **given)
    request.check()  # before the model loads
    config = request.detector_config(detector_config(args))
    detector = Detector(config)
    started = time.perf_counter()
    filt, notes = fit_filter(detector, request, progress=lambda label: progress_bar(label, None))
    out = save_filter(filt, Path(args.out))
    for note in notes[1:]:
        print(note)
    print(f"{method} filter fitted on {notes[0]} in {time.perf_counter() - started:.1f} s -> {out}")
    return _report(filt)


def _report(filt: Any) -> int:
    """Print the thresholds and checks; the exit code: 1 when an input was cut or skipped (the filter is
    written and records it, `input_problems`), else 0."""
    print(filt.thresholds.summary())
    trimmed = filt.metadata.get("calibration_trimmed")
    if trimmed:
        print(f"unlabelled calibration: left out {trimmed['tracks']} of {trimmed['of_tracks']} tracks "
              f"({trimmed['boxes']} of {trimmed['of']} boxes) that score like hallucinations")
    check = filt.thresholds.held_out
    if check and not check["holds"]:
        log.warning("the held-out flag rate %.1f%% (95%% interval %.1f-%.1f%%) does not contain the nominal %.1f%%: "
                    "the thresholds may not hold on new data of this kind; calibrate on more of it (more images, a "
                    "longer clip with more objects), from where the filter will run (--calibration-id)",
                    100 * check["rate"], 100 * check["low"], 100 * check["high"], 100 * check["nominal"])
    problems = filt.metadata.get("input_problems") or []
    for problem in problems:
        print(f"problem: {problem}")
    return 0 if filt.metadata.get("inputs_complete", True) else 1
