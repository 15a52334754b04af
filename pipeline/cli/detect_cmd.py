"""`ghostbox detect`: run the detector over images, folders or videos; JSONL + annotated output."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2

from pipeline.cli.detector_flags import add_detector_flags, detector_config
from pipeline.cli.progress import progress_bar
from pipeline.filter.filter_file import load_filter
from pipeline.sinks.annotate import annotate
from pipeline.sinks.jsonl import JsonlWriter
from pipeline.sinks.out_folder import check_writable_folder
from pipeline.sinks.source_names import safe_name
from pipeline.sources.media_files import VIDEO_SUFFIXES, Frame, MediaReport, count_frames, iter_frames

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "detect",
        help="detect objects in images, folders or videos",
        description="Writes OUT/detections.jsonl (one line per image or frame) and annotated images/videos. "
                    "Exit code 1 when some input could not be read whole (an unreadable file in a folder, a video "
                    "that ends before the frames its container announces): the frames that were read are written "
                    "and each problem is named.",
    )
    parser.add_argument("sources", nargs="+", metavar="IMAGE|DIR|VIDEO|GLOB")
    parser.add_argument("--out", "-o", required=True, help="output folder")
    parser.add_argument("--no-annotate", dest="annotate", action="store_false", help="skip annotated images")
    parser.add_argument("--filter", "-f", help="hallucination filter file (ghostbox calibrate); boxes gain "
                        "`score` and `hallucination`")
    parser.add_argument("--policy", choices=["flag", "drop"], help="flag hallucinations (default) or drop them")
    add_detector_flags(parser)
    parser.set_defaults(handler=run)


class _AnnotatedOutput:
    """Annotated images go to OUT/annotated/<name>.jpg; each video becomes OUT/annotated/<name>.mp4."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._names: dict[str, str] = {}
        self._videos: dict[str, cv2.VideoWriter] = {}

    def _name(self, source: str) -> str:
        if source not in self._names:
            stem = safe_name(Path(source).stem, empty="frame")
            name, n = stem, 1
            while name in self._names.values():
                n += 1
                name = f"{stem}_{n}"
            self._names[source] = name
        return self._names[source]

    def write(self, source: str, is_video: bool, image) -> None:  # noqa: ANN001
        name = self._name(source)
        if not is_video:
            cv2.imwrite(str(self.folder / f"{name}.jpg"), image)
            return
        writer = self._videos.get(source)
        if writer is None:
            capture = cv2.VideoCapture(source)
            fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
            capture.release()
            height, width = image.shape[:2]
            writer = cv2.VideoWriter(str(self.folder / f"{name}.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), fps,
                                     (width, height))
            self._videos[source] = writer
        writer.write(image)

    def close(self) -> None:
        for writer in self._videos.values():
            writer.release()


def run(args: argparse.Namespace) -> int:
    # torch loads with the detector (seconds): only when a command runs one, not for `ghostbox --help`
    from pipeline.detect.detector import Detector

    config = detector_config(args, [args.filter] if args.filter else ())
    out = Path(args.out)
    check_writable_folder(out)  # a read-only --out is refused now, not after the model has loaded
    total = count_frames(args.sources)  # also checks every source exists before loading the model
    detector = Detector(config)
    hallucination_filter = None
    if args.filter:
        hallucination_filter = load_filter(args.filter)
        hallucination_filter.check_detector(detector.fingerprint())
        hallucination_filter.check_conf(config.conf)
        if args.policy:
            hallucination_filter.policy = args.policy
    log.info(
        "model %s (%s, %d classes, %d-d box features) on %s, imgsz %d",
        config.model, detector.backend.format, len(detector.class_names), detector.feature_dim,
        detector.device, detector.imgsz,
    )
    report = MediaReport()
    annotated = _AnnotatedOutput(out / "annotated") if args.annotate else None
    frames_done = boxes = flagged = 0
    started = time.perf_counter()
    pending: list[Frame] = []

    def flush(writer: JsonlWriter) -> None:
        nonlocal frames_done, boxes, flagged
        results = detector.detect([f.image for f in pending],
                                  crops=hallucination_filter is not None and hallucination_filter.needs_crops)
        for frame, dets in zip(pending, results):
            dets = dets.with_meta(source=frame.source, frame=frame.index)
            if hallucination_filter is not None:
                before = len(dets)
                dets = hallucination_filter.apply(dets)
                flagged += int(dets.data["hallucination"].sum()) if len(dets) else 0
                flagged += before - len(dets)  # dropped by the drop policy
            writer.write(dets)
            if annotated is not None:
                is_video = Path(frame.source).suffix.lower() in VIDEO_SUFFIXES
                annotated.write(frame.source, is_video, annotate(frame.image, dets))
            boxes += len(dets)
            frames_done += 1
            bar.advance(1)
        pending.clear()

    try:
        with JsonlWriter(out / "detections.jsonl") as writer, progress_bar("detect", total) as bar:
            for frame in iter_frames(args.sources, report):
                pending.append(frame)
                if len(pending) >= config.batch:
                    flush(writer)
            if pending:
                flush(writer)
    finally:
        if annotated is not None:
            annotated.close()
    elapsed = time.perf_counter() - started
    log.info(
        "%d frames, %d boxes in %.1f s (%.1f frames/s) -> %s",
        frames_done, boxes, elapsed, frames_done / max(elapsed, 1e-9), out / "detections.jsonl",
    )
    if hallucination_filter is not None:
        log.info("%d boxes flagged as hallucinations by the %s filter (%s policy)", flagged,
                 hallucination_filter.method, hallucination_filter.policy)
    if writer.lost:  # a full or failing disk: whole lines only were kept, the rest is counted here
        print(f"ghostbox detect: incomplete: {writer.lost} of {writer.lost + writer.written} rows not written "
              f"({writer.error})", file=sys.stderr)
    if report.complete:
        return 1 if writer.lost else 0
    _print_incomplete(report, frames_done, out / "detections.jsonl")
    return 1


MAX_PROBLEM_LINES = 20


def _print_incomplete(report: MediaReport, frames_done: int, jsonl: Path) -> None:
    """One line per skipped or cut file, then what was written: the run is incomplete (exit 1)."""
    problems = report.problems()
    for line in problems[:MAX_PROBLEM_LINES]:
        print(f"ghostbox detect: {line}", file=sys.stderr)
    if len(problems) > MAX_PROBLEM_LINES:
        print(f"ghostbox detect: ... and {len(problems) - MAX_PROBLEM_LINES} more", file=sys.stderr)
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
