"""`BoxSet`: each box keeps its group, track and frame through selection, merging and the fit's split."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.splits import time_blocks
from tests.helpers.filter_fixtures import CLASS_NAMES, WORLD


def _clip(n: int = 600) -> BoxSet:
    frames = np.arange(n) // 3       # three boxes a frame
    tracks = np.arange(n) % 3 + 3 * (frames // 20)  # three tracks at a time, new ones every 20 frames
    return BoxSet.footage(WORLD.id_boxes(n, seed=3), frames, tracks, "toy clip", int(frames.max()) + 1)


def test_a_selection_keeps_each_box_with_its_group_track_and_frame() -> None:
    clip = _clip()
    assert clip.group_kind == "time blocks" and not clip.labelled and clip.tracks == 30
    assert np.array_equal(clip.groups, time_blocks(clip.frames))
    late = clip.select(clip.frames >= 100)
    assert len(late) == len(clip) // 2 and late.boxes.class_id.tolist() == clip.boxes.class_id[300:].tolist()
    # the time blocks stay those cut over the whole clip, not re-cut over the selection
    assert late.groups.tolist() == clip.groups[300:].tolist() and late.groups.min() == 5
    assert late.track_ids.tolist() == clip.track_ids[300:].tolist()
    assert BoxSet(clip.boxes).group_kind == "boxes" and BoxSet(clip.boxes, clip.groups).group_kind == "images"
    with pytest.raises(GhostboxError, match="3 track_ids for 600 boxes"):
        BoxSet(clip.boxes, track_ids=np.zeros(3))


def test_reviewed_boxes_join_as_groups_and_tracks_of_their_own() -> None:
    reviewed, tracks = WORLD.id_boxes(40, seed=4), np.repeat([17, 5], 20)  # two tracks of a run
    images = BoxSet(WORLD.id_boxes(100, seed=5), groups=np.arange(100) // 4, description="100 boxes")
    joined = images.with_reviewed(reviewed, tracks)
    assert len(joined) == 140 and joined.track_ids is None and joined.labelled
    assert joined.groups[:100].tolist() == images.groups.tolist()
    assert sorted(set(joined.groups[100:].tolist())) == [25, 26]  # past the last image, one per track
    assert joined.description == "100 boxes + 40 reviewed boxes of 2 tracks confirmed real"
    clip = _clip()
    footage = clip.with_reviewed(reviewed, tracks)
    # the clip's own time blocks are kept; each reviewed track is a block of its own after them
    assert footage.groups[:600].tolist() == clip.groups.tolist()
    assert footage.groups[600:].tolist() == [11] * 20 + [10] * 20  # numbered in the order of the tracks (5, 17)
    assert set(footage.track_ids[600:].tolist()) == {30, 31} and footage.tracks == 32
    assert footage.frames is None  # reviewed boxes were seen in another run, in none of the clip's frames
    assert images.with_reviewed(reviewed[:0], tracks[:0]) is images


def test_footage_fits_on_some_time_blocks_and_calibrates_on_the_others() -> None:
    clip = _clip(2400)
    filt = HallucinationFilter.fit("mahalanobis", clip, CLASS_NAMES, {})
    check = filt.thresholds.held_out
    assert check["group_kind"] == "time blocks" and check["groups"] == 3  # 30% of 10 blocks held out
    trimmed = filt.metadata["calibration_trimmed"]
    assert filt.metadata["fit_boxes"] + trimmed["of"] == len(clip)
    assert filt.metadata["calibration_boxes"] == trimmed["of"] - trimmed["boxes"]
