"""`ghostbox detect`'s annotated output: OUT/annotated/<name>.jpg for each image and
OUT/annotated/<name>.mp4 for each video, the boxes the policy shows drawn on every frame.

Names come from the input files' stems (`safe_name`), made unique with a number (two folders may
both hold img0.png). A video is a checked `VideoFile` like a stream sink's, counted as a
`VideoOutput` counts it (frames missed, and frames written that the file does not hold); an image
that could not be written is counted and logged, as a crop is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.sinks.free_space import full_disk_note
from pipeline.sinks.output import DEFAULT_FPS, FrameRecord, OutputReport
from pipeline.sinks.source_names import safe_name
from pipeline.sinks.video_file import VideoFile
from pipeline.sinks.video_output import VideoOutput
from pipeline.sources.media_files import VIDEO_SUFFIXES

log = logging.getLogger(__name__)


class AnnotatedMedia(VideoOutput):
    """Its own names and images; its videos' `close` and `report` are `VideoOutput`'s."""

    def __init__(self, folder: Path, policy: str | None = None) -> None:
        super().__init__(folder)
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.policy = policy
        self._names: dict[str, str] = {}
        self.images = 0  # images written
        self.images_failed = 0
        self.error = ""  # the first image that could not be written, and why

    def _name(self, source: str) -> str:
        if source not in self._names:
            stem = safe_name(Path(source).stem, empty="frame")
            name, n = stem, 1
            while name in self._names.values():
                n += 1
                name = f"{stem}_{n}"
            self._names[source] = name
        return self._names[source]

    def write(self, frame: FrameRecord) -> None:
        name = self._name(frame.source)
        image = self.pixels(frame)
        if image is None:
            return
        if Path(frame.source).suffix.lower() not in VIDEO_SUFFIXES:
            self._image(self.folder / f"{name}.jpg", image)
            return
        video = self.videos.get(frame.source)
        if video is None:
            capture = cv2.VideoCapture(frame.source)
            fps = capture.get(cv2.CAP_PROP_FPS)
            fps = fps if fps > 0 else DEFAULT_FPS  # a container without a rate (or an unreadable one) says 0 or -1
            capture.release()
            video = self.videos[frame.source] = VideoFile.open(
                frame.source, f"{self.folder.name}/{name}.mp4", self.folder / f"{name}.mp4",
                (image.shape[1], image.shape[0]), fps, "mp4v", min_free=self.MIN_FREE)
        if video.writer is None:  # it failed to open, or stopped
            video.missed += 1
            return
        if (image.shape[1], image.shape[0]) != video.size:
            image = cv2.resize(image, video.size)
        video.feed(image)

    def pixels(self, frame: FrameRecord) -> np.ndarray | None:
        return frame.annotated(self.policy)

    def listing(self) -> dict[str, Any]:
        return {"annotated": str(self.folder)}

    def _image(self, path: Path, image: np.ndarray) -> None:
        try:
            written, why = cv2.imwrite(str(path), image), "cv2.imwrite failed"
        except (cv2.error, OSError) as exc:
            written, why = False, str(exc).strip().splitlines()[-1][:200]
        if written:
            self.images += 1
            return
        self.images_failed += 1
        if not self.error:
            self.error = f"{path}: {why}{full_disk_note(self.folder)}"
            log.error("annotated image %s", self.error)

    def report(self, sources: list[str]) -> OutputReport:
        report = super().report(sources)  # the videos: frames missed, and written but not in the file
        report.written += self.images
        report.lost += self.images_failed
        report.error = self.error or report.error
        if self.images_failed:
            report.problems.append(f"{self.folder.name}: {self.images_failed} images not written ({self.error})")
        return report
