"""Tracks and per-track verdicts of one source, where its frames are back in order (the sink).

Each box gets `track_id` (-1: no track); with the filter's `score` and `threshold`, also
`track_score` (the track's mean margin so far) and `track_hallucination` (the track's verdict,
`pipeline.filter.track_verdicts`), which is then the verdict the sink acts on.

Crops of a flagged track (what `ghostbox proxies --flagged` feeds on): a few per track, spread
over its life (`crops_per_track`, at least `crop_gap` frames apart), not one per frame.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.filter.track_verdicts import TrackVerdicts
from pipeline.stream.config import TracksConfig
from pipeline.tracks import Tracker

log = logging.getLogger(__name__)


class SourceTracks:
    def __init__(self, source: str, config: TracksConfig) -> None:
        self.source = source
        self.tracker = Tracker(**config.bytetrack)
        self.verdicts = TrackVerdicts(hysteresis=config.hysteresis, idle_frames=config.idle_frames,
                                      settle_boxes=config.settle_boxes)
        self.errors = 0
        self.crops_per_track, self.crop_gap = config.crops_per_track, config.crop_gap
        # track -> (crops taken, last seq): of the flagged archive, and of the gallery
        self._cropped: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._gallery: OrderedDict[int, tuple[int, int]] = OrderedDict()

    def apply(self, frame: int, dets: Detections) -> Detections:
        """`dets` with the track fields; on a tracker failure, unchanged (counted, logged once)."""
        try:
            ids = self.tracker.update(dets)
            extra: dict[str, Any] = {"track_id": ids}
            score, threshold = dets.data.get("score"), dets.data.get("threshold")
            if score is not None and threshold is not None:
                margin = np.asarray(score, np.float64) - np.asarray(threshold, np.float64)
                track_score, verdict = self.verdicts.update(frame, ids, margin)
                extra.update(track_score=track_score.astype(np.float32), track_hallucination=verdict)
            return dets.with_data(**extra)
        except Exception as exc:  # a frame the tracker cannot take keeps its frame verdicts; the sink goes on
            self.errors += 1
            if self.errors == 1:
                log.error("source %s frame %d: tracking failed (%s: %s); this frame keeps its frame verdicts",
                          self.source, frame, type(exc).__name__, exc)
            return dets

    def crops_wanted(self, frame: int, dets: Detections, flagged: np.ndarray) -> np.ndarray:
        """Of the flagged boxes, those whose crop is kept: untracked ones all, a track's a few."""
        return self._spread(self._cropped, frame, dets, flagged, keep_untracked=True)

    def gallery_wanted(self, frame: int, dets: Detections) -> np.ndarray:
        """Boxes whose crop goes to the tracks' gallery: a few per track, flagged or kept, once the
        track has lasted `settle_boxes` boxes (shorter ones are mostly noise nobody needs to review)."""
        ids = dets.data.get("track_id")
        if ids is None or not len(dets):
            return np.zeros(len(dets), bool)
        seen = np.array([self.verdicts.boxes_of(int(t)) >= self.verdicts.settle_boxes for t in ids], bool)
        return self._spread(self._gallery, frame, dets, seen, keep_untracked=False)

    def _spread(self, state: OrderedDict[int, tuple[int, int]], frame: int, dets: Detections, mask: np.ndarray,
                keep_untracked: bool) -> np.ndarray:
        """Of the boxes in `mask`, those of tracks that have had fewer than `crops_per_track` crops,
        the last at least `crop_gap` frames ago."""
        ids = dets.data.get("track_id")
        if ids is None:
            return mask if keep_untracked else np.zeros(len(dets), bool)
        wanted = np.asarray(mask, bool).copy()
        for i in np.flatnonzero(wanted):
            track = int(ids[i])
            if track < 0:
                wanted[i] = keep_untracked
                continue
            taken, last = state.pop(track, (0, -(10**9)))
            if taken < self.crops_per_track and frame - last >= self.crop_gap:
                taken, last = taken + 1, frame
            else:
                wanted[i] = False
            state[track] = (taken, last)
        while len(state) > self.verdicts.max_tracks:  # bounded as the verdicts' own state
            state.popitem(last=False)
        return wanted

    def summary(self) -> dict[str, int]:
        return {**self.verdicts.counts(), "errors": self.errors}
