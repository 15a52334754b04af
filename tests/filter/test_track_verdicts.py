"""Per-track verdicts: a running mean of margins with hysteresis, bounded state."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import GhostboxError
from pipeline.filter.track_verdicts import TrackVerdicts


def _feed(verdicts: TrackVerdicts, margins: list[float], track: int = 7) -> tuple[list[float], list[bool]]:
    scores, flags = [], []
    for frame, margin in enumerate(margins):
        score, flag = verdicts.update(frame, np.array([track]), np.array([margin]))
        scores.append(float(score[0]))
        flags.append(bool(flag[0]))
    return scores, flags


def test_a_real_object_dipping_below_for_a_frame_stays_kept():
    margins = [1.0, -0.2, 1.2, -0.4, 0.9, -0.1]  # the frame-level verdict flips five times
    scores, flags = _feed(TrackVerdicts(hysteresis=0.5), margins)
    assert not any(flags)
    np.testing.assert_allclose(scores, np.cumsum(margins) / np.arange(1, 7))


def test_a_hallucination_clearing_the_threshold_now_and_then_stays_flagged():
    _, flags = _feed(TrackVerdicts(hysteresis=0.5), [-1.0, 0.3, -0.8, 0.4, -1.2])
    assert all(flags)


def test_the_verdict_changes_only_beyond_the_hysteresis_and_flips_are_counted():
    verdicts = TrackVerdicts(hysteresis=0.5, settle_boxes=1)
    # mean: 0.2, -0.1, -0.4 (inside the band: still kept), then -0.7 (flagged)
    _, flags = _feed(verdicts, [0.2, -0.4, -1.0, -1.6])
    assert flags == [False, False, False, True]
    assert verdicts.counts() == {"tracks": 1, "flips": 1, "hallucinations": 1}
    _, flags = _feed(TrackVerdicts(hysteresis=0.0, settle_boxes=1), [0.2, -0.4])
    assert flags == [False, True]


def test_a_track_follows_the_sign_of_its_mean_until_it_has_settled():
    # a first frame just above the threshold must not keep a hallucination inside the band for good
    verdicts = TrackVerdicts(hysteresis=2.0, settle_boxes=3)
    _, flags = _feed(verdicts, [0.1, -1.0, -1.0, 0.5, 0.5])  # means 0.1, -0.45, -0.63, -0.35, -0.18
    assert flags == [False, True, True, True, True]
    assert verdicts.counts()["flips"] == 1


def test_untracked_boxes_keep_their_frame_verdict_and_tracks_do_not_mix():
    verdicts = TrackVerdicts()
    verdicts.update(0, np.array([1, 2]), np.array([2.0, -2.0]))
    score, flag = verdicts.update(1, np.array([1, -1, 2]), np.array([-0.5, -0.3, 0.7]))
    np.testing.assert_allclose(score, [0.75, -0.3, -0.65])
    assert flag.tolist() == [False, True, True]


def test_state_is_bounded_idle_tracks_are_forgotten_and_counted():
    verdicts = TrackVerdicts(idle_frames=10, max_tracks=50)
    for frame in range(200):
        ids = np.arange(frame * 3, frame * 3 + 3)  # three new tracks every frame, never seen again
        verdicts.update(frame, ids, np.array([-1.0, 1.0, 1.0]))
        assert len(verdicts.tracks) <= 30
    assert verdicts.counts()["tracks"] == 600 and verdicts.counts()["hallucinations"] == 200
    crowded = TrackVerdicts(idle_frames=1000, max_tracks=50)
    crowded.update(0, np.arange(200), np.zeros(200))
    assert len(crowded.tracks) == 50 and set(crowded.tracks) == set(range(150, 200))  # the most recent kept


def test_bad_input_is_named():
    with pytest.raises(GhostboxError, match="2 track ids|\\(2,\\) track ids"):
        TrackVerdicts().update(0, np.array([1, 2]), np.array([0.1]))
    with pytest.raises(GhostboxError, match="hysteresis must be >= 0"):
        TrackVerdicts(hysteresis=-1)
