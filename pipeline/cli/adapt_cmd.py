"""`ghostbox adapt CLIP --from FILTER --out F`: a filter adapted to a new camera from an unlabelled clip of it."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pipeline.cli.detector_flags import add_detector_flags, detector_config
from pipeline.cli.progress import progress_bar
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import save_filter

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "adapt", help="adapt a filter to a new camera from an unlabelled clip of it (thresholds or a re-fit)",
        description="Detects and tracks CLIP (a video or an ordered folder of frames of the camera the filter will "
        "watch, no labels), measures how far its tracked boxes' scores drifted from the filter's calibration and "
        "either moves the filter's thresholds (the clip's tracks that score like real objects set one offset) or, "
        "with --id and --outliers, fits the score again with the clip's clear tracks on each side. Hallucinated "
        "tracks in the clip are kept out of the ID set by their mean margin under the filter (docs/filters.md, "
        "'Adapting to a new camera'). A clip with too few tracks gets conservative thresholds and a warning.")
    parser.add_argument("clip", metavar="CLIP", help="video or folder of frames of the camera, in order")
    parser.add_argument("--from", dest="from_filter", required=True, metavar="FILTER", help="the filter to adapt")
    parser.add_argument("--out", "-o", required=True, help="adapted filter file (suffix .filter.safetensors)")
    parser.add_argument("--mode", choices=["auto", "thresholds", "refit"], default="auto",
                        help="auto: re-fit when the clip drifted beyond --refit-psi and --id/--outliers are given, "
                        "else move the thresholds (default auto)")
    parser.add_argument("--id", dest="id_spec", metavar="SPEC",
                        help="re-fit: the filter's labelled ID data (e.g. the world's id/train)")
    parser.add_argument("--outliers", nargs="+", default=[], metavar="SPEC",
                        help="re-fit: outlier images (the filter's outlier pool, a `ghostbox proxies` set)")
    parser.add_argument("--refit-psi", type=float, help="drift (PSI) above which auto re-fits "
                        "(default: camera_adaptation.REFIT_PSI, chosen on the development streets)")
    parser.add_argument("--min-track-frames", type=int, help="frames a track must last for its boxes to count "
                        "(default: pipeline.tracks.MIN_TRACK_FRAMES)")
    parser.add_argument("--thresholds", dest="shape", choices=["overall", "per-bin"],
                        help="move one overall threshold (default: camera_adaptation.THRESHOLD_SHAPE, chosen on the "
                        "development streets) or the filter's thresholds per class and confidence bin")
    parser.add_argument("--ask", type=int, default=0, metavar="N",
                        help="print the N clip tracks whose answers would move the thresholds most (a review list: "
                        "track id, frames, class, margin); answer them with --real / --hallucination")
    parser.add_argument("--real", default="", metavar="IDS", help="clip tracks a person saw are real objects "
                        "(comma-separated track ids from --ask)")
    parser.add_argument("--hallucination", default="", metavar="IDS",
                        help="clip tracks a person saw are hallucinations (track ids from --ask)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out splits")
    add_detector_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # torch loads with the detector: only when a filter is adapted, not for --help
    from pipeline.detect.detector import Detector
    from pipeline.filter.camera_adaptation import (
        REFIT_PSI,
        THRESHOLD_SHAPE,
        ReferenceData,
        adapt_filter,
        review_list,
    )
    from pipeline.filter.filter_file import load_filter
    from pipeline.filter.fit_from_data import input_report
    from pipeline.filter.id_collection import collect_id_boxes, detect_unlabelled, tracked_id_boxes
    from pipeline.filter.outlier_collection import collect_outlier_boxes
    from pipeline.sources.media_files import MediaReport
    from pipeline.tracks import MIN_TRACK_FRAMES

    if bool(args.id_spec) != bool(args.outliers):
        raise GhostboxError("adapt: a re-fit needs both --id SPEC and --outliers SPEC (or neither, to move "
                            "the thresholds only)")
    if args.mode == "refit" and not args.id_spec:
        raise GhostboxError("adapt --mode refit: give --id SPEC (the filter's labelled ID data) and --outliers SPEC")
    answers = _answers(args.real, args.hallucination)
    if args.ask < 0:
        raise GhostboxError(f"--ask: a number of tracks >= 0, got {args.ask}")
    min_track_frames = MIN_TRACK_FRAMES if args.min_track_frames is None else args.min_track_frames
    if min_track_frames < 2:
        raise GhostboxError(f"--min-track-frames: a clip's tracks need >= 2 frames, got {min_track_frames}")
    filt = load_filter(args.from_filter)
    detector = Detector(detector_config(args, [args.from_filter]))
    filt.check_detector(detector.fingerprint())
    filt.check_conf(detector.config.conf)
    started = time.perf_counter()
    report = MediaReport()
    with progress_bar("clip frames", None) as bar:
        found, _ = detect_unlabelled(detector, args.clip, detector.config.conf, None, bar.advance, report,
                                     filt.needs_crops)
    if not found:
        raise GhostboxError(f"adapt: no frames read from '{args.clip}'")
    tracks = tracked_id_boxes(found, detector, f"adapt: '{args.clip}'", detector.config.conf, min_track_frames)
    reference = None
    if args.id_spec:
        with progress_bar("reference ID boxes", None) as bar:
            ids = collect_id_boxes(detector, args.id_spec, conf=detector.config.conf, advance=bar.advance,
                                   crops=filt.needs_crops)
        if not ids.labelled or ids.groups is None:
            raise GhostboxError(f"--id {args.id_spec}: a re-fit needs labelled ID data (a dataset with ground truth)")
        with progress_bar("outlier boxes", None) as bar:
            outliers, _ = collect_outlier_boxes(detector, args.outliers, conf=detector.config.conf,
                                                advance=bar.advance, crops=filt.needs_crops)
        reference = ReferenceData(ids, outliers)
    shape = args.shape or THRESHOLD_SHAPE
    adapted, done = adapt_filter(
        filt, tracks, args.mode, reference, REFIT_PSI if args.refit_psi is None else args.refit_psi, args.seed,
        answers=answers, shape=shape,
        metadata={"clip": args.clip, "clip_frames": report.read, **input_report(report, fitted=filt.metadata)})
    out = save_filter(adapted, Path(args.out))
    print(f"{filt.method} filter from {args.from_filter} adapted to '{args.clip}' ({done.mode}: {done.reason}) "
          f"in {time.perf_counter() - started:.1f} s -> {out}")
    print(f"clip: {tracks.description}")
    if done.mode == "refit":
        print(f"re-fit with {done.id_side['tracks']} clip tracks as ID and {done.outlier_side['tracks']} as outliers")
    print(adapted.thresholds.summary())
    if done.conservative:
        print(f"warning: only {done.tracks} tracks; {done.enough_tracks} are needed for a 95% threshold: "
              "conservative thresholds written")
    if args.ask:
        print(f"review list: the {min(args.ask, tracks.tracks)} tracks whose answers move the thresholds most "
              "(look at their frames; rerun with --real IDS --hallucination IDS)")
        print(f"  {'track':>6} {'frames':>11} {'boxes':>6}  {'class':<16} median margin")
        for entry in review_list(filt, tracks, args.ask, shape):
            span = f"{entry['first_frame']}-{entry['last_frame']}"
            print(f"  {entry['track']:>6} {span:>11} {entry['boxes']:>6}  {entry['class']:<16} "
                  f"{entry['median_margin']:+.2f}")
    for problem in report.problems():
        print(f"problem: {problem}")
    return 0 if report.complete else 1


def _answers(real: str, hallucination: str) -> dict[int, bool]:
    """--real / --hallucination track ids as {track: is real}; a track in both or a bad id is refused."""
    def ids(text: str, flag: str) -> set[int]:
        try:
            return {int(v) for v in text.split(",") if v.strip()}
        except ValueError:
            raise GhostboxError(f"{flag}: expected comma-separated track ids, got {text!r}") from None

    yes, no = ids(real, "--real"), ids(hallucination, "--hallucination")
    if yes & no:
        raise GhostboxError(f"tracks {sorted(yes & no)} are given as both --real and --hallucination")
    return {**{t: True for t in yes}, **{t: False for t in no}}
