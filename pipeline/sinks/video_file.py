"""A video file written frame by frame and checked when it is closed: `VideoFile`.

An OpenCV writer can fail without saying so (mp4 reports a full disk only at release, if at
all), so a `VideoFile` counts what it handed the writer, stops while the disk still has room to
finalise the container (the frames so far stay playable), and at release counts the frames the
file really holds. `failed`, `problem()` and `report()` say what went wrong, with the numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.sinks.free_space import free_bytes, full_disk_note

log = logging.getLogger(__name__)

MIN_FREE = 1 << 20  # below this much free space a video stops, finalised while there is room
SPACE_EVERY = 10  # frames between free-space checks (a statvfs is ~2 us)
VERIFY_COUNT_S = 5.0  # counting a damaged video's frames by decoding them stops after this long


@dataclass
class VideoFile:
    """An annotated video or a calibration clip: what was handed to the writer, and what the file holds."""

    source: str
    rel: str  # as named in summary.json, e.g. "annotated/clip.mp4"
    path: Path
    size: tuple[int, int]
    limit: int | None = None  # a calibration clip's length
    min_free: int = MIN_FREE
    writer: cv2.VideoWriter | None = None  # None before it opened and after it was released
    written: int = 0  # frames the writer accepted
    missed: int = 0  # frames meant for the file after it failed
    verified: int | None = None  # frames the released file holds; None until released
    error: str = ""  # why it stopped, or what the check found
    finished: bool = False

    @classmethod
    def open(cls, source: str, rel: str, path: Path, size: tuple[int, int], fps: float, fourcc: str,
             limit: int | None = None, min_free: int = MIN_FREE) -> VideoFile:
        """A file with an open writer, or one that failed to open (`writer` None, `error` says why)."""
        video = cls(source, rel, path, size, limit, min_free)
        try:
            video.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return video._not_opened(f"cannot make {video.path.parent}: {exc.strerror or exc}")
        short = video._space_short()
        if short:
            return video._not_opened(short)
        writer = cv2.VideoWriter(str(video.path), cv2.VideoWriter.fourcc(*fourcc), fps, video.size)
        if not writer.isOpened():
            return video._not_opened(f"cannot open an {fourcc} writer{full_disk_note(video.path.parent)}")
        video.writer = writer
        return video

    @property
    def failed(self) -> bool:
        return bool(self.error) or self.missed > 0 or (self.verified is not None and self.verified != self.written)

    def problem(self) -> str:
        numbers = f"{self.written} frames written"
        if self.verified is not None and self.verified != self.written:
            numbers += f", the file holds {self.verified}"
        if self.missed:
            numbers += f", {self.missed} more not written"
        return f"video {self.rel}: {numbers}" + (f" ({self.error})" if self.error else "")

    def report(self) -> dict[str, Any]:
        return {"source": self.source, "written": self.written, "verified": self.verified, "missed": self.missed,
                **({"error": self.error} if self.error else {})}

    def feed(self, frame: np.ndarray) -> None:
        """One frame (already at `size`); a clip finishes itself when it reaches `limit`."""
        if self.written % SPACE_EVERY == 0:
            # stop while the container can still be finalised: the frames so far stay playable
            short = self._space_short()
            if short:
                self.missed += 1
                self._stop(short)
                return
        if self.writer is None:  # the caller counts a frame for a video without a writer as missed
            raise RuntimeError(f"video {self.rel}: a frame fed after its writer failed or was released")
        try:
            accepted = self.writer.write(frame)
        except cv2.error as exc:
            accepted, why = False, str(exc).strip().splitlines()[-1][:200]
        else:
            why = "the writer refused it"
        # OpenCV 5 returns False when the backend failed (an AVI on a full disk); mp4 hides it until release
        if accepted is False:
            self.missed += 1
            self._stop(f"frame {self.written + 1}: {why}{full_disk_note(self.path.parent)}")
            return
        self.written += 1
        if self.limit is not None and self.written >= self.limit:
            self.finish()

    def finish(self) -> None:
        """Release the writer and count the frames the file holds (once; later calls do nothing)."""
        if self.finished:
            return
        self.finished = True
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.verified = _frames_in(self.path, self.written)
        if self.verified != self.written:
            note = full_disk_note(self.path.parent)
            if note and note.strip(" ()") not in self.error:
                self.error = f"{self.error}; {note.strip(' ()')}" if self.error else note.strip(" ()")
            log.error("%s: %d frames written, the file holds %d%s", self.path, self.written, self.verified, note)

    # -- internals ------------------------------------------------------------------------------

    def _not_opened(self, error: str) -> VideoFile:
        self.error = error
        self.finished = True
        log.error("source %s: %s not written (%s)", self.source, self.path, error)
        return self

    def _stop(self, error: str) -> None:
        self.error = error
        log.error("source %s: %s stopped after %d frames (%s)", self.source, self.path, self.written, error)
        self.finish()

    def _space_short(self) -> str:
        """Why this video should not take more frames now (too little free space), or ''."""
        free = free_bytes(self.path.parent)
        if free is None:
            return ""
        try:
            per_frame = self.path.stat().st_size / self.written if self.written else 0.0
        except OSError:
            per_frame = 0.0
        # room for the frames until the next check, and for the index written at release
        need = self.min_free + 2 * SPACE_EVERY * per_frame + 32 * self.written
        return f"stopped: {free // 1024} KB free on its filesystem" if free < need else ""


def _frames_in(path: Path, expected: int) -> int:
    """Frames the file holds: the container's count, believed when its last frame decodes."""
    try:
        if path.stat().st_size == 0:
            return 0
    except OSError:
        return 0
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0
        claimed = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        count = int(claimed) if np.isfinite(claimed) and claimed > 0 else 0
        if count == expected and count > 0:
            # an index can outlive the data it points to: seeking to the last frame costs ~10-50 ms
            # where decoding all of them costs 15-30% of the time it took to write them
            capture.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
            if capture.read()[0]:
                return count
            capture.release()
            capture = cv2.VideoCapture(str(path))
        counted, deadline = 0, time.monotonic() + VERIFY_COUNT_S
        while capture.grab() and time.monotonic() < deadline:  # only for a file that is already wrong
            counted += 1
        return counted
    finally:
        capture.release()
