"""Verdicts per track instead of per frame: a running mean of each track's margins, with hysteresis.

A box's margin is its score minus its threshold (the filter flags it below 0). One frame's
margin is noisy: a real pedestrian dips below for a frame and its verdict flickers, a
hallucination clears it now and then and is kept in those frames. A track's verdict here
follows the mean margin of all its boxes so far, and changes only on evidence: a kept track
becomes a hallucination when its mean falls below -`hysteresis`, a flagged one is kept again
when its mean rises above +`hysteresis`. For its first `settle_boxes` boxes the verdict is the
sign of the mean (a track's first frames alone should not set it behind the band for good).
A box no tracker followed (track id -1) keeps its own frame's verdict.

Measured (`ghostbox bench tracks`, docs/benchmarks/tracks.md): on the street world's streams
this cuts verdict flips per track 7-18x; whether it catches more and flags fewer real objects
than frame verdicts depends on how well the scores separate on the footage (it cannot move a
threshold that does not hold there).

State is per source, frames in order (one `TrackVerdicts` per source, fed where order is
restored), bounded: a track unseen for `idle_frames` frames is forgotten, and beyond
`max_tracks` the least recently seen ones go first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from pipeline.errors import GhostboxError

# the defaults, here and in the graph config's `tracks` section
HYSTERESIS = 0.5
IDLE_FRAMES = 90
SETTLE_BOXES = 5


@dataclass
class TrackState:
    margin_sum: float
    boxes: int
    hallucination: bool
    last_frame: int
    flips: int = 0

    @property
    def mean(self) -> float:
        return self.margin_sum / self.boxes


class TrackVerdicts:
    """`update(frame, track_ids, margins)` -> (track score, track verdict) per box of that frame."""

    def __init__(self, hysteresis: float = HYSTERESIS, idle_frames: int = IDLE_FRAMES, max_tracks: int = 4096,
                 settle_boxes: int = SETTLE_BOXES) -> None:
        if hysteresis < 0:
            raise GhostboxError(f"track verdicts: hysteresis must be >= 0, got {hysteresis}")
        if idle_frames < 1 or max_tracks < 1:
            raise GhostboxError(f"track verdicts: idle_frames and max_tracks must be >= 1, got {idle_frames}, "
                                f"{max_tracks}")
        self.hysteresis, self.idle_frames, self.max_tracks = float(hysteresis), int(idle_frames), int(max_tracks)
        self.settle_boxes = int(settle_boxes)
        self.tracks: OrderedDict[int, TrackState] = OrderedDict()  # least recently seen first
        # forgotten tracks, as counts only (the state stays bounded)
        self.ended = {"tracks": 0, "flips": 0, "hallucinations": 0}

    def update(self, frame: int, track_ids: np.ndarray, margins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(track_ids, np.int64)
        margin = np.asarray(margins, np.float64)
        if ids.shape != margin.shape or ids.ndim != 1:
            raise GhostboxError(f"track verdicts: {ids.shape} track ids for {margin.shape} margins")
        score = margin.copy()
        verdict = margin < 0.0
        for i in np.flatnonzero(ids >= 0):
            track = int(ids[i])
            state = self.tracks.pop(track, None)
            if state is None:
                state = TrackState(0.0, 0, bool(margin[i] < 0.0), frame)
            state.margin_sum += float(margin[i])
            state.boxes += 1
            state.last_frame = frame
            mean = state.mean
            if state.boxes < self.settle_boxes:  # too few boxes for the band: follow the mean's sign
                if state.hallucination != (mean < 0.0):
                    state.hallucination, state.flips = mean < 0.0, state.flips + 1
            elif state.hallucination and mean > self.hysteresis:
                state.hallucination, state.flips = False, state.flips + 1
            elif not state.hallucination and mean < -self.hysteresis:
                state.hallucination, state.flips = True, state.flips + 1
            self.tracks[track] = state  # to the most recently seen end
            score[i], verdict[i] = mean, state.hallucination
        self._forget(frame)
        return score, verdict

    def _forget(self, frame: int) -> None:
        while self.tracks:
            track, state = next(iter(self.tracks.items()))
            if frame - state.last_frame < self.idle_frames and len(self.tracks) <= self.max_tracks:
                break
            self._count(self.tracks.pop(track), self.ended)

    @staticmethod
    def _count(state: TrackState, into: dict[str, int]) -> None:
        into["tracks"] += 1
        into["flips"] += state.flips
        into["hallucinations"] += int(state.hallucination)

    def boxes_of(self, track: int) -> int:
        """Boxes seen of a live track (0 for one unknown or forgotten)."""
        state = self.tracks.get(track)
        return state.boxes if state is not None else 0

    def counts(self) -> dict[str, int]:
        """Tracks seen so far (ended and live), their verdict flips, and how many end (or stand) flagged."""
        total = dict(self.ended)
        for state in self.tracks.values():
            self._count(state, total)
        return total
