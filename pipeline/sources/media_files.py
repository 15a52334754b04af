"""Read frames from an image, a folder or glob of images, or a video file."""

from __future__ import annotations

import glob as globlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class MediaReport:
    """What a read skipped, so the caller can report it instead of losing it silently."""

    unreadable: list[str] = field(default_factory=list)


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
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
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
    """Total frames to expect, for a progress bar; None when a video cannot tell."""
    total = 0
    for spec in specs:
        _, files = _expand(spec)
        for path in files:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                capture = cv2.VideoCapture(str(path))
                n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
                capture.release()
                if n <= 0:
                    return None
                total += n
            else:
                total += 1
    return total


def iter_frames(specs: list[str], report: MediaReport | None = None) -> Iterator[Frame]:
    """Frames of every source in order. A bad file given by name is an error; a bad file
    found inside a folder or glob is skipped and listed in `report`."""
    report = report if report is not None else MediaReport()
    for spec in specs:
        kind, files = _expand(spec)
        for path in files:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                yield from _video_frames(path, strict=kind == "file", report=report)
                continue
            try:
                image = read_image(path)
            except GhostboxError as exc:
                if kind == "file":
                    raise
                log.warning("%s (skipped)", exc)
                report.unreadable.append(str(path))
                continue
            yield Frame(str(path), 0, image)


def _video_frames(path: Path, strict: bool, report: MediaReport) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            if strict:
                raise GhostboxError(f"video '{path}': cannot be opened (corrupt or unsupported codec)")
            log.warning("video '%s': cannot be opened (skipped)", path)
            report.unreadable.append(str(path))
            return
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            yield Frame(str(path), index, image)
            index += 1
        if index == 0:
            if strict:
                raise GhostboxError(f"video '{path}': no frame could be decoded")
            report.unreadable.append(str(path))
    finally:
        capture.release()
