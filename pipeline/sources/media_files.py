"""Read frames from an image, a folder or glob of images, or a video file."""

from __future__ import annotations

import glob as globlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpeg", ".mpg", ".webm", ".wmv"}


@dataclass
class Frame:
    source: str  # the image path, or the video path for video frames
    index: int  # frame number within a video, 0 for images
    image: np.ndarray  # BGR uint8


# consecutive failed reads tried before a video that announced more frames is taken as ended: a
# corrupt mp4v keyframe costs a whole group of pictures (9 reads in our measurements)
MAX_BAD_READS = 30


@dataclass
class MediaReport:
    """What a read skipped or cut, so the caller can report it instead of losing it silently.

    `unreadable`: files skipped whole (an image that does not decode, a video that does not open or
    decodes no frame). `truncated`: videos that gave fewer frames than their container announces
    (CAP_PROP_FRAME_COUNT), as {"file", "read", "expected"}. `expected`: frames the inputs announce
    (an image counts 1, a video its container count; None once a video cannot tell). `read`: frames
    yielded.
    """

    unreadable: list[str] = field(default_factory=list)
    truncated: list[dict[str, Any]] = field(default_factory=list)
    expected: int | None = 0
    read: int = 0
    reasons: dict[str, str] = field(default_factory=dict, repr=False)  # path -> why it was unreadable

    @property
    def complete(self) -> bool:
        return not self.unreadable and not self.truncated

    def problems(self) -> list[str]:
        """One line per skipped or cut file, naming it and the numbers."""
        lines = [f"'{path}': {self.reasons.get(path, 'unreadable')}; skipped" for path in self.unreadable]
        lines += [f"'{t['file']}': {t['read']} of {t['expected']} frames read "
                  "(the file ends early or a frame could not be decoded)" for t in self.truncated]
        return lines

    def announce(self, frames: int | None) -> None:
        self.expected = None if frames is None or self.expected is None else self.expected + frames

    def skip(self, path: Path | str, reason: str) -> None:
        self.unreadable.append(str(path))
        self.reasons[str(path)] = reason


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise GhostboxError(f"image '{path}': file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise GhostboxError(f"image '{path}': not a readable image (corrupt or unsupported format)")
    return image


def _expand(spec: str) -> tuple[str, list[Path]]:
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        if not files:
            raise GhostboxError(f"folder '{spec}': no images or videos in it")
        return "dir", files
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise GhostboxError(f"pattern '{spec}': matches no files")
        return "glob", files
    if not path.exists():
        raise GhostboxError(f"source '{spec}': no such file or folder")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
        raise GhostboxError(f"source '{spec}': unsupported file type '{suffix}'")
    return "file", [path]


def count_frames(specs: list[str]) -> int | None:
    """Total frames to expect, for a progress bar; None when a video cannot tell. A video given by
    name that cannot be opened or decodes no first frame is an error here, before any work starts."""
    total: int | None = 0
    for spec in specs:
        kind, files = _expand(spec)
        for path in files:
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                total = None if total is None else total + 1
                continue
            capture = cv2.VideoCapture(str(path))
            try:
                if kind == "file":
                    if not capture.isOpened():
                        raise GhostboxError(f"video '{path}': cannot be opened "
                                            "(corrupt, incomplete or unsupported codec)")
                    n = _frame_count(capture)
                    if not any(capture.grab() for _ in range(MAX_BAD_READS)):
                        raise GhostboxError(f"video '{path}': no frame could be decoded"
                                            + (f" (its container announces {n})" if n else ""))
                else:
                    n = _frame_count(capture)
            finally:
                capture.release()
            total = None if total is None or n is None else total + n
    return total


def _frame_count(capture: cv2.VideoCapture) -> int | None:
    n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    return n if n > 0 else None


def iter_frames(specs: list[str], report: MediaReport | None = None) -> Iterator[Frame]:
    """Frames of every source in order. A bad file given by name is an error; a bad file
    found inside a folder or glob is skipped and listed in `report`. A video that gives fewer
    frames than its container announces is listed in `report.truncated` (see `_video_frames`)."""
    report = report if report is not None else MediaReport()
    for spec in specs:
        kind, files = _expand(spec)
        for path in files:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                yield from _video_frames(path, strict=kind == "file", report=report)
                continue
            report.announce(1)
            try:
                image = read_image(path)
            except GhostboxError as exc:
                if kind == "file":
                    raise
                log.warning("%s (skipped)", exc)
                report.skip(path, str(exc).removeprefix(f"image '{path}': "))
                continue
            report.read += 1
            yield Frame(str(path), 0, image)


def _video_frames(path: Path, strict: bool, report: MediaReport) -> Iterator[Frame]:
    """Frames of one video. When a read fails before the announced count, up to MAX_BAD_READS more
    reads are tried: OpenCV/FFmpeg resumes after a corrupt frame (MJPG AVI: one failed read per
    damaged frame; mp4v MP4: failed reads until the next keyframe, then it goes on). A frame's
    `index` counts failed reads too, so frames after a gap keep their position in the file. A file
    cut short just fails again at its end; the shortfall goes to `report.truncated`.

    What this cannot see: a decoder that conceals damage (mp4v usually returns a smeared frame
    rather than failing), a demuxer that drops a damaged packet without an error (the count then
    still shows it, but the later indices shift by one), and a container count that is an estimate
    (MPEG program streams, some MKV/WebM files: duration x fps). An MP4 cut short usually lacks
    its index (moov atom at the end) and does not open at all: it is unreadable, not truncated.
    """
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            reason = "cannot be opened (corrupt, incomplete or unsupported codec)"
            if strict:
                raise GhostboxError(f"video '{path}': {reason}")
            log.warning("video '%s': %s (skipped)", path, reason)
            report.announce(None)
            report.skip(path, reason)
            return
        expected = _frame_count(capture)
        report.announce(expected)
        read = position = bad = 0
        while True:
            ok, image = capture.read()
            if ok and image is not None:
                bad = 0
                read += 1
                report.read += 1
                yield Frame(str(path), position, image)
                position += 1
                continue
            if (expected is not None and position >= expected) or bad >= MAX_BAD_READS:
                break
            bad += 1
            position += 1
        if read == 0:
            reason = "no frame could be decoded" + (f" (its container announces {expected})" if expected else "")
            if strict:
                raise GhostboxError(f"video '{path}': {reason}")
            log.warning("video '%s': %s (skipped)", path, reason)
            report.skip(path, reason)
        elif expected is not None and read < expected:
            log.warning("video '%s': %d of %d frames read (the file ends early or a frame could not be decoded)",
                        path, read, expected)
            report.truncated.append({"file": str(path), "read": read, "expected": expected})
    finally:
        capture.release()
