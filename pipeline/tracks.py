"""Track ids for the boxes of a frame sequence, with Ultralytics' own ByteTrack (no tracker of ours).

    tracker = Tracker()                      # one per source; frames must come in order
    ids = tracker.update(dets)               # (N,) int64 track id per box, -1 = not tracked
    ids_per_frame = track_sequence(frames)   # the same over a whole list of Detections

ByteTrack keeps a box in a track only when the box matches the track's Kalman prediction;
boxes below `track_low_thresh`, and new unmatched boxes below `new_track_thresh`, get -1.
Settings are the keys of Ultralytics' `cfg/trackers/bytetrack.yaml` (`TRACKER_DEFAULTS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError

MIN_TRACK_FRAMES = 5  # frames a track of unlabelled footage must last for its boxes to count as ID

# Ultralytics' bytetrack.yaml defaults (track_buffer is in frames)
TRACKER_DEFAULTS: dict[str, Any] = {
    "tracker_type": "bytetrack", "track_high_thresh": 0.25, "track_low_thresh": 0.1,
    "new_track_thresh": 0.25, "track_buffer": 30, "match_thresh": 0.8, "fuse_score": True,
}


class _BoxesView:
    """The NumPy-backed object ByteTrack's `update` reads: conf, cls, xywh and boolean indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy, self.conf, self.cls = xyxy, conf, cls

    @property
    def xywh(self) -> np.ndarray:
        xy = (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2
        return np.concatenate([xy, self.xyxy[:, 2:] - self.xyxy[:, :2]], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> _BoxesView:
        return _BoxesView(self.xyxy[index], self.conf[index], self.cls[index])


class Tracker:
    """ByteTrack over one source's frames; `update` returns a track id per box (-1: none)."""

    def __init__(self, **settings: Any) -> None:
        # heavy: imported only when a tracker is made
        from ultralytics.trackers.byte_tracker import BYTETracker
        from ultralytics.utils import IterableSimpleNamespace

        unknown = sorted(set(settings) - set(TRACKER_DEFAULTS))
        if unknown:
            raise GhostboxError(f"tracker: unknown setting(s) {unknown}; known: {sorted(TRACKER_DEFAULTS)}")
        self.settings = {**TRACKER_DEFAULTS, **settings}
        self._tracker = BYTETracker(IterableSimpleNamespace(**self.settings))

    def update(self, dets: Detections) -> np.ndarray:
        ids = np.full(len(dets), -1, np.int64)
        if len(dets) == 0:
            self._tracker.update(_BoxesView(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                            np.zeros(0, np.float32)))
            return ids
        view = _BoxesView(dets.xyxy.astype(np.float32), dets.confidence.astype(np.float32),
                          dets.class_id.astype(np.float32))
        rows = self._tracker.update(view)
        if len(rows):
            ids[rows[:, -1].astype(np.int64)] = rows[:, 4].astype(np.int64)
        return ids


def track_sequence(frames: Sequence[Detections], **settings: Any) -> list[np.ndarray]:
    """Track ids per box for every frame of one source, in order."""
    tracker = Tracker(**settings)
    return [tracker.update(d) for d in frames]
