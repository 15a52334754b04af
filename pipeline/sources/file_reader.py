"""Frames from video files, images, folders and globs, as a `FrameReader` (optionally looping).

Built on `media_files`, so a stream skips and reports unreadable or truncated inputs the same way
the batch commands do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2

from pipeline.sources.frame_reader import Captured
from pipeline.sources.media_files import VIDEO_SUFFIXES, MediaReport, count_frames, iter_frames


def check_file_source(uri: str) -> None:
    """Raise GhostboxError now if a file/folder/glob source names nothing readable."""
    count_frames([uri])


class FileReader:
    """Video files, images, folders and globs, through ghostbox's media reader.

    `report` records what the first pass skipped or cut (a looping source reads the same files
    again; they are counted once); `expected` is what the inputs announce, counted up front.
    """

    live = False

    def __init__(self, uri: str, loop: bool = False) -> None:
        self.expected = count_frames([uri])  # raises GhostboxError if the source names nothing readable
        self.report = MediaReport()
        self._passes = 0
        self.uri = uri
        self.loop = loop
        self.fps: float | None = None
        if Path(uri).suffix.lower() in VIDEO_SUFFIXES and Path(uri).is_file():
            capture = cv2.VideoCapture(uri)
            self.fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
            capture.release()
        self._frames = self._open()

    def _open(self) -> Iterator[Any]:
        self._passes += 1
        return iter_frames([self.uri], self.report if self._passes == 1 else MediaReport())

    def read(self) -> Captured | None:
        frame = next(self._frames, None)
        if frame is None and self.loop:
            self._frames = self._open()
            frame = next(self._frames, None)
        if frame is None:
            return None
        return Captured(frame.image, frame.source, frame.index, time.time())

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()
