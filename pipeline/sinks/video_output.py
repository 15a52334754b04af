"""Videos made of a source's frames, one per source: `AnnotatedVideo` (OUT/annotated/<source>.mp4,
the boxes the policy shows drawn) and `CalibrationClip` (OUT/calibration/<source>.avi, the first N
frames as captured, for `ghostbox calibrate --calibration-id` on this camera's own footage).

Each `VideoFile` opens at its source's first frame with pixels, is released when the source ends
and then checked (`pipeline.sinks.video_file`); a frame meant for a video that failed is counted
as missed, so summary.json can say how many frames each file lacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.sinks import video_file
from pipeline.sinks.output import FrameRecord, Output, OutputReport
from pipeline.sinks.source_names import safe_name
from pipeline.sinks.video_file import VideoFile


class VideoOutput(Output):
    """OUT/<FOLDER>/<source><SUFFIX>; `limit`: a video's length in frames (None: all of them)."""

    FOLDER, SUFFIX, FOURCC = "", "", ""
    MIN_FREE = video_file.MIN_FREE  # read when a video opens; 0 turns the early stop off

    def __init__(self, out: Path, limit: int | None = None) -> None:
        self.out = out
        self.limit = limit
        self.videos: dict[str, VideoFile] = {}

    def pixels(self, frame: FrameRecord) -> np.ndarray | None:
        """What this video shows of the frame; None: no pixels to show."""
        raise NotImplementedError

    def write(self, frame: FrameRecord) -> None:
        video = self.videos.get(frame.source)
        if video is not None and video.writer is None:  # failed, finished, or a clip at its length
            if video.error and (video.limit is None or video.written + video.missed < video.limit):
                video.missed += 1  # a video that failed still owed this frame
            return
        image = self.pixels(frame)
        if image is None:
            return
        if video is None:
            rel = f"{self.FOLDER}/{safe_name(frame.source)}{self.SUFFIX}"
            video = self.videos[frame.source] = VideoFile.open(
                frame.source, rel, self.out / rel, (image.shape[1], image.shape[0]), frame.fps, self.FOURCC,
                self.limit, self.MIN_FREE)
            if video.writer is None:  # it failed to open: this frame is its first missed one
                video.missed += 1
                return
        if (image.shape[1], image.shape[0]) != video.size:  # an image folder of mixed sizes
            image = cv2.resize(image, video.size)
        video.feed(image)

    def end(self, source: str) -> None:
        if source in self.videos:
            self.videos[source].finish()

    def close(self) -> None:
        for video in self.videos.values():
            video.finish()

    def listing(self) -> dict[str, Any]:
        """summary.json `outputs`: the files this output made."""
        raise NotImplementedError

    def report(self, sources: list[str]) -> OutputReport:
        videos = self.videos.values()
        lost = sum(v.missed + max(0, v.written - (v.verified if v.verified is not None else v.written))
                   for v in videos)
        failed = [v for v in videos if v.failed]
        return OutputReport(written=sum(v.written for v in videos), lost=lost,
                            error=next((v.error for v in failed if v.error), None), outputs=self.listing(),
                            writes={"videos": {v.rel: v.report() for v in videos}} if self.videos else {},
                            problems=[v.problem() for v in failed])


class AnnotatedVideo(VideoOutput):
    """The boxes `policy` shows drawn on each frame: kept solid, flagged dashed magenta with their score."""

    FOLDER, SUFFIX, FOURCC = "annotated", ".mp4", "mp4v"

    def __init__(self, out: Path, policy: str | None = None) -> None:
        super().__init__(out)
        self.policy = policy

    def pixels(self, frame: FrameRecord) -> np.ndarray | None:
        return frame.annotated(self.policy)

    def listing(self) -> dict[str, Any]:
        return {"video": {sid: str(video.path) for sid, video in self.videos.items() if video.written}}


class CalibrationClip(VideoOutput):
    """The first `limit` frames as captured. MJPG: every frame a JPEG of its own, close to what the
    detector saw."""

    FOLDER, SUFFIX, FOURCC = "calibration", ".avi", "MJPG"

    def pixels(self, frame: FrameRecord) -> np.ndarray | None:
        return frame.image()

    def listing(self) -> dict[str, Any]:
        if not self.videos:
            return {}
        return {"calibration_clips": {sid: {"path": str(clip.path), "frames": clip.written,
                                            **({"error": clip.error} if clip.error else {})}
                                      for sid, clip in self.videos.items()}}
