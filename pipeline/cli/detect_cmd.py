"""`ghostbox detect`: run the detector over images, folders or videos; JSONL + annotated output.

The outputs are a stream sink's (`pipeline.sinks`): detections.jsonl rows from the same builder,
annotated images and videos behind the same `Output` interface, and the filter's "drop" policy
applied by them, not by the filter (`pipeline.sinks.policy`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pipeline.cli.detector_flags import add_detector_flags, detector_config
from pipeline.cli.progress import progress_bar
from pipeline.filter.filter_file import load_filter
from pipeline.sinks.annotated_media import AnnotatedMedia
from pipeline.sinks.detections_file import DetectionsFile
from pipeline.sinks.out_folder import check_writable_folder
from pipeline.sinks.output import FrameRecord, Output, OutputReport
from pipeline.sources.media_files import MediaReport, count_frames, iter_frames

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "detect",
        help="detect objects in images, folders or videos",
        description="Writes OUT/detections.jsonl (one line per image or frame) and annotated images/videos. "
                    "Exit code 1 when some input could not be read whole (an unreadable file in a folder, a video "
                    "that ends before the frames its container announces) or some output not written whole (rows, "
                    "annotated images or video frames a full or failing disk took): what could be written is "
                    "written and each problem is named.",
    )
    parser.add_argument("sources", nargs="+", metavar="IMAGE|DIR|VIDEO|GLOB")
    parser.add_argument("--out", "-o", required=True, help="output folder")
    parser.add_argument("--no-annotate", dest="annotate", action="store_false", help="skip annotated images")
    parser.add_argument("--filter", "-f", help="hallucination filter file (ghostbox calibrate); boxes gain "
                        "`score` and `hallucination`")
    parser.add_argument("--policy", choices=["flag", "drop"], help="flag hallucinations (default) or drop them")
    add_detector_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # torch loads with the detector (seconds): only when a command runs one, not for `ghostbox --help`
    from pipeline.detect.detector import Detector
    from pipeline.detect.frame_loop import detect_frames

    config = detector_config(args, [args.filter] if args.filter else ())
    out = Path(args.out)
    check_writable_folder(out)  # a read-only --out is refused now, not after the model has loaded
    total = count_frames(args.sources)  # also checks every source exists before loading the model
    detector = Detector(config)
    hallucination_filter = None
    policy = None  # what the outputs do with flagged boxes: the filter's, unless --policy says
    if args.filter:
        hallucination_filter = load_filter(args.filter)
        hallucination_filter.check_detector(detector.fingerprint())
        hallucination_filter.check_conf(config.conf)
        policy = args.policy or hallucination_filter.policy
    log.info(
        "model %s (%s, %d classes, %d-d box features) on %s, imgsz %d",
        config.model, detector.backend.format, len(detector.class_names), detector.feature_dim,
        detector.device, detector.imgsz,
    )
    report = MediaReport()
    rows = DetectionsFile(out, policy, max_lines=50)
    outputs: list[Output] = [rows, *([AnnotatedMedia(out / "annotated", policy)] if args.annotate else [])]
    frames_done = boxes = flagged = 0
    started = time.perf_counter()
    crops = hallucination_filter is not None and hallucination_filter.needs_crops
    try:
        with progress_bar("detect", total) as bar:
            for frame, dets in detect_frames(detector, iter_frames(args.sources, report), image=lambda f: f.image,
                                             crops=crops):
                dets = dets.with_meta(source=frame.source, frame=frame.index)
                if hallucination_filter is not None:
                    dets = hallucination_filter.apply(dets)
                record = FrameRecord.decoded(frame.source, frame.index, dets, frame.image)
                flagged += int(record.flagged.sum())
                for output in outputs:
                    output.write(record)
                boxes += len(dets)
                frames_done += 1
                bar.advance(1)
    finally:
        for output in outputs:
            output.close()
    elapsed = time.perf_counter() - started
    log.info(
        "%d frames, %d boxes in %.1f s (%.1f frames/s) -> %s",
        frames_done, boxes, elapsed, frames_done / max(elapsed, 1e-9), out / "detections.jsonl",
    )
    if hallucination_filter is not None:
        log.info("%d boxes flagged as hallucinations by the %s filter (%s policy)", flagged,
                 hallucination_filter.method, policy)
    # a full or failing disk: rows (whole lines only), annotated images and video frames not in their files
    outputs_failed = _print_lost([output.report([]) for output in outputs])
    if report.complete:
        return 1 if outputs_failed else 0
    _print_incomplete(report, frames_done, out / "detections.jsonl")
    return 1


MAX_PROBLEM_LINES = 20


def _print_lost(reports: list[OutputReport]) -> bool:
    """Each output's problems, one line each, then what they lost; True when some output failed (exit 1)."""
    problems = [line for written in reports for line in written.problems]
    _print_lines(problems)
    lost = [f"{written.lost} of {written.lost + written.written} items not written to "
            f"{', '.join(map(str, written.outputs.values()))}" for written in reports if written.lost]
    if lost:
        print(f"ghostbox detect: incomplete output: {'; '.join(lost)}", file=sys.stderr)
    return bool(problems or lost)


def _print_lines(problems: list[str]) -> None:
    for line in problems[:MAX_PROBLEM_LINES]:
        print(f"ghostbox detect: {line}", file=sys.stderr)
    if len(problems) > MAX_PROBLEM_LINES:
        print(f"ghostbox detect: ... and {len(problems) - MAX_PROBLEM_LINES} more", file=sys.stderr)


def _print_incomplete(report: MediaReport, frames_done: int, jsonl: Path) -> None:
    """One line per skipped or cut file, then what was written: the run is incomplete (exit 1)."""
    _print_lines(report.problems())
    what = []
    if report.unreadable:
        what.append(f"{len(report.unreadable)} unreadable file(s) skipped, e.g. '{report.unreadable[0]}'")
    if report.truncated:
        first = report.truncated[0]
        what.append(f"{len(report.truncated)} video(s) cut short, e.g. '{first['file']}' "
                    f"({first['read']} of {first['expected']} frames)")
    expected = f" of {report.expected} announced" if report.expected is not None else ""
    print(f"ghostbox detect: incomplete: {'; '.join(what)}; the {frames_done}{expected} frames that were read "
          f"are written to {jsonl}", file=sys.stderr)
