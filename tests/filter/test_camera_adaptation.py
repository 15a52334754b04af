"""`adapt_filter`: the choice between moving thresholds and re-fitting, the contamination rule,
the conservative fallback for a clip with too few tracks, and bad clips."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.camera_adaptation import (
    ReferenceData,
    adapt_filter,
    clip_drift,
    enough_tracks,
    review_list,
)
from pipeline.filter.hallucination_filter import HallucinationFilter
from tests.helpers.filter_fixtures import CLASS_NAMES, WORLD, outlier_boxes

FINGERPRINT = {"weights_sha256": "toy"}


def _reference() -> tuple[HallucinationFilter, ReferenceData]:
    boxes = WORLD.id_boxes(1600, seed=11)
    ids = BoxSet(boxes, groups=np.arange(len(boxes)) // 4)  # four boxes an "image"
    outliers = outlier_boxes()
    filt = HallucinationFilter.fit("oe", ids, CLASS_NAMES, FINGERPRINT, params={"l2": 1e-3}, outliers=outliers)
    return filt, ReferenceData(ids, outliers)


def _tracked(boxes: Detections, frames: np.ndarray, track_ids: np.ndarray, what: str) -> BoxSet:
    """A clip's tracked boxes, as `id_collection.tracked_id_boxes` gives them."""
    return BoxSet.footage(boxes, frames, track_ids, what, int(frames.max(initial=-1)) + 1)


def _clip(boxes: Detections, tracks: int) -> BoxSet:
    n = len(boxes)
    track_ids = np.arange(n) * tracks // n          # equal runs of boxes, one run a track
    frames = np.arange(n) // max(1, tracks // 3)  # a few boxes a frame
    return _tracked(boxes, frames, track_ids, f"{n} toy boxes on {tracks} tracks")


def _shifted(boxes: Detections, by: float) -> Detections:
    """The same boxes seen by another camera: every feature moved along one direction."""
    direction = np.random.default_rng(0).normal(size=boxes.feature_dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    return Detections.from_head(boxes.box_features + by * direction * 4.0, boxes.logits, boxes.class_id,
                                boxes.level)


@pytest.fixture(scope="module")
def reference() -> tuple[HallucinationFilter, ReferenceData]:
    return _reference()


def test_an_unshifted_clip_moves_the_thresholds_and_a_shifted_one_is_refitted(reference) -> None:
    filt, data = reference
    same = _clip(WORLD.id_boxes(900, seed=21), tracks=60)
    shifted = _clip(_shifted(WORLD.id_boxes(900, seed=21), 3.0), tracks=60)
    assert clip_drift(filt, same) < 0.2 < clip_drift(filt, shifted)
    kept, done = adapt_filter(filt, same, "auto", data, refit_psi=0.5)
    assert done.mode == "thresholds" and "drift" in done.reason
    assert kept.scorer is filt.scorer  # the fitted score is kept
    refit, done = adapt_filter(filt, shifted, "auto", data, refit_psi=0.5)
    assert done.mode == "refit" and done.id_side["tracks"] > 0
    assert refit.scorer is not filt.scorer
    assert refit.metadata["adaptation"]["mode"] == "refit"
    # without the data a re-fit needs, auto moves the thresholds and says why
    moved, done = adapt_filter(filt, shifted, "auto", None, refit_psi=0.5)
    assert done.mode == "thresholds" and "needs" in done.reason
    # the shifted camera's new real objects: the filter as fitted misses the 5% target, adapted ones hold it
    test = _shifted(WORLD.id_boxes(900, seed=31), 3.0)
    assert abs(filt.judge(test)[2].mean() - 0.05) > 0.04
    assert abs(moved.judge(test)[2].mean() - 0.05) < 0.04
    assert refit.judge(test)[2].mean() < 0.09  # the re-fit score takes the new camera's objects for ID


def test_the_contamination_rule_keeps_clearly_flagged_tracks_out_of_the_id_side(reference) -> None:
    filt, data = reference
    real = WORLD.id_boxes(600, seed=41)
    ghosts = WORLD.ood_boxes(400, seed=4, mode="far", sample_seed=141)
    clip = _tracked(Detections.merge([real, ghosts]), np.arange(1000) // 10,
                      np.r_[np.arange(600) // 20, 30 + np.arange(400) // 20], "real and ghost tracks")
    _, done = adapt_filter(filt, clip, "refit", data)
    # 30 real tracks and 20 ghost tracks: ghosts score far below the thresholds and go to the outlier side
    assert done.outlier_side["tracks"] >= 15
    assert done.id_side["tracks"] <= 30 + 2


def test_a_clip_with_three_tracks_gets_conservative_thresholds_and_a_warning(reference, caplog) -> None:
    filt, _ = reference
    clip = _clip(WORLD.id_boxes(60, seed=51), tracks=3)
    with caplog.at_level(logging.WARNING):
        adapted, done = adapt_filter(filt, clip, "thresholds")
    assert done.conservative and done.tracks == 3 and done.enough_tracks == enough_tracks(0.95) == 19
    assert "needs at least 19" in caplog.text
    # never tighter than the filter's own thresholds, and every clip track kept on average
    assert np.all(adapted.thresholds.per_bin <= filt.thresholds.per_bin + 1e-9)
    scores, thresholds, _ = adapted.judge(clip.boxes)
    for t in np.unique(clip.track_ids):
        assert (scores - thresholds)[clip.track_ids == t].mean() >= -1e-9


def test_a_clip_without_tracks_and_bad_modes_are_refused(reference) -> None:
    filt, _ = reference
    empty = _tracked(Detections.empty(4, WORLD.feature_dim), np.zeros(0, np.int64), np.zeros(0, np.int64), "none")
    with pytest.raises(GhostboxError, match="no tracked boxes"):
        adapt_filter(filt, empty)
    clip = _clip(WORLD.id_boxes(300, seed=61), tracks=30)
    with pytest.raises(GhostboxError, match="mode must be one of"):
        adapt_filter(filt, clip, "sometimes")  # type: ignore[arg-type]
    with pytest.raises(GhostboxError, match="--id"):
        adapt_filter(filt, clip, "refit", None)


def test_the_review_list_asks_about_long_unsure_tracks_first_and_answers_decide_their_side(reference) -> None:
    filt, _ = reference
    real = WORLD.id_boxes(600, seed=71)
    ghosts = WORLD.ood_boxes(200, seed=5, mode="hidden", distance=1.0, sample_seed=171)
    clip = _tracked(Detections.merge([real, ghosts]), np.arange(800) // 8,
                      np.r_[np.arange(600) // 20, 30 + np.arange(200) // 20], "real and ghost tracks")
    asked = review_list(filt, clip, 5)
    assert len(asked) == 5 and [a["priority"] for a in asked] == sorted((a["priority"] for a in asked), reverse=True)
    everyone = review_list(filt, clip, 100)
    assert len(everyone) == 40 and {a["track"] for a in asked} <= {a["track"] for a in everyone}
    for entry in everyone:  # what each entry says matches the clip
        mine = clip.track_ids == entry["track"]
        assert entry["boxes"] == mine.sum() and entry["first_frame"] == clip.frames[mine].min()
    plain, _ = adapt_filter(filt, clip, "thresholds")
    # every ghost track answered as a hallucination: none of them moves the thresholds any more
    answers = {t: False for t in range(30, 40)}
    answered, done = adapt_filter(filt, clip, "auto", answers=answers)
    assert "reviewed tracks" in done.reason
    assert answered.metadata["reviewed_tracks"] == {"real": 0, "hallucination": 10}
    assert answered.metadata["calibration_trimmed"]["tracks"] >= 10
    assert answered.thresholds.offset >= plain.thresholds.offset - 1e-9  # ghosts only ever lowered it
    with pytest.raises(GhostboxError, match=r"answers for tracks \[999\]"):
        adapt_filter(filt, clip, "auto", answers={999: True})


def test_thresholds_move_in_the_asked_shape(reference) -> None:
    filt, _ = reference
    clip = _clip(WORLD.id_boxes(900, seed=81), tracks=60)
    overall, done = adapt_filter(filt, clip, "thresholds")
    assert done.thresholds == "overall" and overall.metadata["threshold_shape"] == "overall"
    judged = overall.thresholds.thresholds_for(clip.boxes.class_id, clip.boxes.class_confidence())
    assert np.ptp(judged) == 0 and judged[0] == overall.thresholds.global_threshold  # one for every box
    per_bin, done = adapt_filter(filt, clip, "thresholds", shape="per-bin")
    moved = per_bin.thresholds.per_bin - filt.thresholds.rebinned(per_bin.thresholds.conf_edges).per_bin
    np.testing.assert_allclose(moved, per_bin.thresholds.offset)  # the filter's own shape, one offset
    with pytest.raises(GhostboxError, match="thresholds must be one of"):
        adapt_filter(filt, clip, "thresholds", shape="per-class")  # type: ignore[arg-type]
