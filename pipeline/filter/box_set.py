"""`BoxSet`: ID boxes with where each came from, the one type a filter is fitted and calibrated on.

    ids = BoxSet(boxes, groups=image_of_box)                      # labelled: a group is an image
    clip = BoxSet.footage(boxes, frame_of_box, track_of_box)      # unlabelled: time blocks of frames
    filt = HallucinationFilter.fit("knn", ids, class_names, fingerprint, calibration=clip)

`Detections.merge` forgets which image, frame and track a box came from, and a split or a
held-out check that cuts an image or a stretch of video in two comes out optimistic
(`splits`). So the per-box origin travels with the boxes here: `groups`, what a split keeps
whole (an image, or a time block of a clip's frames, cut once over the whole clip so that a
subset keeps its blocks); `track_ids`, the track of unlabelled footage, whose hallucinated
tracks are trimmed before they set thresholds; `frames`, the frame of a clip's box (review
lists, camera adaptation). `select` indexes all of them together; `with_reviewed` adds boxes
with ids moved past the set's own, so no group or track of one part is taken for another's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.splits import CALIBRATION_FRACTION, split_mask, time_blocks
from pipeline.sources.media_files import MediaReport


@dataclass(frozen=True, eq=False)
class BoxSet:
    """ID boxes, with the group, track and frame of each box, and what the set is."""

    boxes: Detections
    groups: np.ndarray | None = None     # (N,) what a split keeps whole: image, or time block; None: each box
    track_ids: np.ndarray | None = None  # (N,) unlabelled footage: the box's track (its hallucinations are trimmed)
    frames: np.ndarray | None = None     # (N,) a clip's boxes: the frame they were seen in
    labelled: bool = True                # ground truth chose the boxes; else footage (groups are time blocks)
    description: str = ""
    images: int = 0                      # images or frames read to collect the boxes
    # what reading the frames skipped or cut (unlabelled data; a labelled set refuses a bad image)
    media: MediaReport = field(default_factory=MediaReport)

    def __post_init__(self) -> None:
        for name in ("groups", "track_ids", "frames"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.boxes):
                raise GhostboxError(f"BoxSet: {len(values)} {name} for {len(self.boxes)} boxes")

    @classmethod
    def footage(cls, boxes: Detections, frames: np.ndarray, track_ids: np.ndarray | None = None,
                description: str = "", images: int = 0) -> BoxSet:
        """Boxes of one clip, in groups of contiguous time blocks of its frames (`splits.time_blocks`)."""
        frames = np.asarray(frames)
        return cls(boxes, time_blocks(frames), track_ids, frames, False, description, images)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def tracks(self) -> int:
        """Tracks of unlabelled footage (0 for labelled boxes)."""
        return 0 if self.track_ids is None else int(len(np.unique(self.track_ids)))

    @property
    def group_kind(self) -> str:
        """What a group is, for the held-out check's report."""
        if self.groups is None:
            return "boxes"
        return "images" if self.labelled else "time blocks"

    def select(self, rows: Any) -> BoxSet:
        """The boxes at `rows` (a mask or indices), each with its own group, track and frame."""
        def pick(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else np.asarray(values)[rows]

        return replace(self, boxes=self.boxes[rows], groups=pick(self.groups), track_ids=pick(self.track_ids),
                       frames=pick(self.frames))

    def fit_mask(self, calibration_fraction: float = CALIBRATION_FRACTION, seed: int = 0) -> np.ndarray:
        """The boxes that fit a score; the rest (whole groups, about `calibration_fraction`) set its thresholds."""
        return split_mask(self.boxes, calibration_fraction, seed, self.groups)

    def with_reviewed(self, reviewed: Detections, tracks: np.ndarray) -> BoxSet:
        """These boxes and boxes a person confirmed real on a run's review page (`tracks`: their track,
        one number per reviewed track): each track is a group of its own, so a split keeps it whole."""
        if not len(reviewed):
            return self
        _, track_index = np.unique(tracks, return_inverse=True)

        def extended(ids: np.ndarray | None) -> np.ndarray | None:
            # past the set's own ids: a reviewed track never shares a group or track with these boxes
            return None if ids is None else np.concatenate([ids, ids.max(initial=-1) + 1 + track_index])

        # the reviewed boxes were seen in another run, in no frame of this set's
        return replace(self, boxes=Detections.merge([self.boxes, reviewed]), groups=extended(self.groups),
                       track_ids=extended(self.track_ids), frames=None,
                       description=f"{self.description} + {len(reviewed)} reviewed boxes of "
                                   f"{track_index.max() + 1} tracks confirmed real")
