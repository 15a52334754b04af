"""Calibration as deployed: grouped splits, confidence-binned thresholds, the held-out check,
recorded settings, trimming of hallucinated tracks, bad calibration data."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.calibrate import calibrate, clopper_pearson
from pipeline.filter.filter_file import load_filter, save_filter
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.splits import group_split, split_fit_calibration, time_blocks
from pipeline.filter.track_trimming import trim_tracks
from tests.helpers.filter_fixtures import CLASS_NAMES, WORLD, fitted


class _ConfScorer:
    """Score = the box's logit of its class: the ID score rises with confidence, as real scores do."""

    def score(self, boxes: Detections) -> np.ndarray:
        return boxes.logits[np.arange(len(boxes)), boxes.class_id].astype(np.float64) + boxes.box_features[:, 0]


def _boxes_with_conf(n: int, seed: int, nc: int = 2) -> Detections:
    rng = np.random.default_rng(seed)
    logits = rng.normal(-3, 1, (n, nc)).astype(np.float32)
    cls = rng.integers(0, nc, n)
    logits[np.arange(n), cls] = rng.uniform(-1.1, 4.0, n)  # confidence 0.25 .. 0.98
    feats = rng.normal(0, 1, (n, 4)).astype(np.float32)
    return Detections.from_head(feats, logits, cls, np.zeros(n, np.int8))


def test_time_blocks_are_contiguous_and_a_split_puts_no_frame_on_both_sides():
    frames = np.repeat(np.arange(600), 3)  # three boxes per frame
    blocks = time_blocks(frames, 10)
    assert blocks.min() == 0 and blocks.max() == 9
    assert np.all(np.diff(blocks) >= 0)  # contiguous: block ids never go back in time
    for seed in range(5):
        fit, calib = group_split(blocks, 0.3, seed)
        assert not set(frames[fit]) & set(frames[calib])
        assert 0.2 < calib.mean() < 0.4
        starts = np.flatnonzero(np.diff(calib.astype(int)) != 0)
        assert len(starts) <= 6  # a few stretches of time, not interleaved frames


def test_image_split_keeps_every_image_whole():
    boxes = WORLD.id_boxes(900, seed=2)
    images = np.arange(len(boxes)) // 4
    fit, cal = split_fit_calibration(boxes, 0.3, seed=1, groups=images)
    fit_mask = group_split(images, 0.3, 1)[0]
    assert not set(images[fit_mask]) & set(images[~fit_mask])
    assert len(fit) + len(cal) == len(boxes)
    with pytest.raises(GhostboxError, match="cannot split 1 group"):
        split_fit_calibration(boxes, 0.3, groups=np.zeros(len(boxes)))


def test_confidence_bins_keep_the_target_share_in_every_bin():
    scorer = _ConfScorer()
    cal_boxes, test_boxes = _boxes_with_conf(6000, 1), _boxes_with_conf(6000, 2)
    binned = calibrate(scorer, cal_boxes, class_names=("a", "b"), shape="per-bin")
    single = calibrate(scorer, cal_boxes, class_names=("a", "b"), conf_edges=(), shape="per-bin")
    scores, conf = scorer.score(test_boxes), test_boxes.confidence
    low = conf < 0.4
    binned_flags = scores < binned.thresholds_for(test_boxes.class_id, conf)
    single_flags = scores < single.thresholds_for(test_boxes.class_id, conf)
    # one threshold per class flags low-confidence boxes far more often than 5%; bins do not
    assert single_flags[low].mean() > 0.12
    for part in (low, ~low):
        assert abs(binned_flags[part].mean() - 0.05) < 0.02
    assert binned.per_bin.shape == (2, 4) and [len(c.bin_boxes) for c in binned.classes] == [4, 4]


def test_held_out_check_reports_a_binomial_interval():
    low, high = clopper_pearson(10, 200)
    assert low == pytest.approx(0.0243, abs=5e-4) and high == pytest.approx(0.0900, abs=5e-4)
    cal = calibrate(_ConfScorer(), _boxes_with_conf(3000, 3), groups=np.arange(3000) // 10, group_kind="images")
    check = cal.held_out
    assert check["boxes"] == 3000 and check["groups"] == 300 and check["folds"] == 5
    assert check["low"] <= check["rate"] <= check["high"] and check["holds"]
    assert "held-out check" in cal.summary()


def test_filter_refuses_a_detector_below_its_calibration_conf(tmp_path):
    boxes = WORLD.id_boxes(1200, seed=7)
    filt = HallucinationFilter.fit("energy", BoxSet(boxes, groups=np.arange(len(boxes)) // 3), CLASS_NAMES,
                                   {"weights_sha256": "x", "imgsz": 320}, metadata={"detector_conf": 0.25})
    loaded = load_filter(save_filter(filt, tmp_path / "f.filter.safetensors"))
    assert np.array_equal(loaded.thresholds.per_bin, filt.thresholds.per_bin)
    assert loaded.thresholds.held_out == filt.thresholds.held_out
    loaded.check_conf(0.25)
    loaded.check_conf(0.5)
    with pytest.raises(GhostboxError, match=r"calibrated on boxes at conf >= 0.25.*--conf 0.1"):
        loaded.check_conf(0.1)
    with pytest.raises(GhostboxError, match="imgsz 320 vs 640"):
        loaded.check_detector({"weights_sha256": "x", "imgsz": 640})


def test_classes_a_calibration_set_never_shows_take_the_global_threshold_and_are_named(caplog):
    boxes = WORLD.id_boxes(600, seed=8)
    signs = boxes[boxes.class_id == 2]
    with caplog.at_level("WARNING", logger="pipeline.filter.calibrate"):
        cal = calibrate(fitted("energy"), signs, class_names=CLASS_NAMES, shape="per-bin")
    absent = [c for c in cal.classes if c.class_id != 2]
    assert all(c.num_boxes == 0 and c.fell_back and c.kept_fraction is None for c in absent)
    assert all(c.threshold == cal.global_threshold for c in absent)
    assert np.all(cal.per_bin[[c.class_id for c in absent]] == cal.global_threshold)
    assert cal.classes[2].num_boxes == len(signs) and not cal.classes[2].fell_back
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert all(CLASS_NAMES[c.class_id] in warning for c in absent) and CLASS_NAMES[2] + "," not in warning
    assert "judged by the global threshold" in warning
    caplog.clear()  # one overall threshold: no class has one of its own, so nothing to warn of
    with caplog.at_level("WARNING", logger="pipeline.filter.calibrate"):
        calibrate(fitted("energy"), signs, class_names=CLASS_NAMES, shape="overall")
    assert not caplog.records
    caplog.clear()  # a class with a few boxes falls back as one with none does, and is named alike
    few = Detections.merge([signs, boxes[boxes.class_id == 0][:3]])
    with caplog.at_level("WARNING", logger="pipeline.filter.calibrate"):
        calibrate(fitted("energy"), few, class_names=CLASS_NAMES, shape="per-bin")
    assert f"{CLASS_NAMES[0]} (3)" in " ".join(r.getMessage() for r in caplog.records)


def test_hallucinated_tracks_are_trimmed_from_unlabelled_calibration():
    scores = np.array([5.0, 4.0, 6.0, -2.0, -1.0, 0.5, 3.0])
    tracks = np.array([1, 1, 1, 2, 2, 2, 3])
    reference = np.full(7, 1.0)
    # track 2's mean margin is below 0, though one of its boxes clears the reference
    assert trim_tracks(scores, tracks, reference).tolist() == [True, True, True, False, False, False, True]


def test_unlabelled_calibration_leaves_hallucinated_tracks_out():
    fit = WORLD.id_boxes(2400, seed=9)
    real = WORLD.id_boxes(400, seed=10)
    ghosts = WORLD.ood_boxes(200, seed=11, mode="far")
    clip = Detections.merge([real, ghosts])
    tracks = np.r_[np.arange(len(real)) // 20, 1000 + np.arange(len(ghosts)) // 20]
    blocks = np.r_[np.arange(len(real)) % 10, np.arange(len(ghosts)) % 10]
    fit_set = BoxSet(fit, groups=np.arange(len(fit)) // 4)
    naive = HallucinationFilter.fit("mahalanobis", fit_set, CLASS_NAMES, {},
                                    calibration=BoxSet(clip, groups=blocks, labelled=False))
    trimmed = HallucinationFilter.fit("mahalanobis", fit_set, CLASS_NAMES, {},
                                      calibration=BoxSet(clip, groups=blocks, track_ids=tracks, labelled=False))
    assert trimmed.metadata["calibration_trimmed"]["tracks"] == len(ghosts) // 20
    test_real, test_ghosts = WORLD.id_boxes(1000, seed=12), WORLD.ood_boxes(500, seed=13, mode="far")
    caught = {name: f.judge(test_ghosts)[2].mean() for name, f in (("naive", naive), ("trimmed", trimmed))}
    assert caught["trimmed"] > caught["naive"] + 0.3
    assert abs(trimmed.judge(test_real)[2].mean() - 0.05) < 0.03


def test_unlabelled_clip_without_detections_is_a_clear_error():
    from pipeline.filter.id_collection import tracked_id_boxes

    class _Detector:
        class_names = ("car", "pedestrian")
        feature_dim, conf = 8, 0.25

    empty = [Detections.empty(2, 8) for _ in range(30)]
    with pytest.raises(GhostboxError, match=r"clip.mp4'?: no detections at conf 0.25 in 30 frames"):
        tracked_id_boxes(empty, _Detector(), "ID data 'clip.mp4'", 0.25)


def test_drift_gauge_moves_on_a_shifted_stream_and_stays_quiet_on_an_unshifted_one():
    from pipeline.filter.drift import DriftMonitor, decile_edges

    rng = np.random.default_rng(0)
    monitor = DriftMonitor(decile_edges(rng.normal(0, 1, 5000)), window=1000, min_boxes=200)
    assert monitor.update("cam", rng.normal(0, 1, 100), np.zeros(100, bool)).psi is None  # too few boxes yet
    for _ in range(20):
        same = monitor.update("cam", rng.normal(0, 1, 100), rng.random(100) < 0.05)
        moved = monitor.update("night", rng.normal(-0.8, 1.2, 100), rng.random(100) < 0.3)
    assert same.psi < 0.05 and not same.alarm and abs(same.flag_rate - 0.05) < 0.03
    assert moved.psi > 0.2 and moved.alarm and moved.flag_rate > 0.2
    assert same.boxes == moved.boxes == 1000  # bounded window
    monitor.forget("night")
    assert monitor.state("night").boxes == 0


def test_filter_stage_core_reports_drift_from_the_filter_calibration():
    from pipeline.stream.filter_stage import FilterCore
    from tests.helpers.filter_fixtures import detections

    boxes = WORLD.id_boxes(2400, seed=14)
    filt = HallucinationFilter.fit("mahalanobis", BoxSet(boxes, groups=np.arange(len(boxes)) // 4), CLASS_NAMES, {})
    assert len(filt.thresholds.margin_deciles) == 9
    core = FilterCore(filt)
    same = shifted = None
    for k in range(10):
        same = core.watch("a", core.process(detections(WORLD.id_boxes(60, seed=100 + k))))
        shifted = core.watch("b", core.process(detections(WORLD.ood_boxes(60, seed=200 + k, mode="far"))))
    assert same.psi < 0.1 and not same.alarm
    assert shifted.psi > 0.2 and shifted.alarm and shifted.flag_rate > same.flag_rate


def test_a_clip_moves_the_reference_thresholds_by_one_offset():
    from pipeline.filter.calibrate import offset_calibration

    scorer = _ConfScorer()
    reference = calibrate(scorer, _boxes_with_conf(6000, 4), class_names=("a", "b"))
    clip = _boxes_with_conf(900, 5)
    # this camera scores 1.5 lower
    shifted = Detections.from_head(clip.box_features - 1.5, clip.logits, clip.class_id, clip.level)
    tracks = np.arange(len(clip)) // 30  # 30 objects, 30 boxes each
    cal = offset_calibration(scorer, shifted, reference, groups=tracks // 3, units=tracks)
    assert np.allclose(cal.per_bin - reference.per_bin, cal.offset) and -2.2 < cal.offset < -0.8
    flags = scorer.score(shifted) < cal.thresholds_for(shifted.class_id, shifted.confidence)
    assert abs(flags.mean() - 0.05) < 0.01
    by_box = offset_calibration(scorer, shifted, reference, groups=tracks // 3).held_out
    by_track = cal.held_out
    assert by_track["interval_over"] == "30 tracks" and by_box["interval_over"] == "boxes"
    assert by_track["high"] - by_track["low"] > 2 * (by_box["high"] - by_box["low"])  # 30 objects, not 900 trials
    assert "one offset" in cal.summary()


def test_a_sparse_confidence_bin_borrows_its_neighbours_boxes():
    from pipeline.filter.calibrate import flag_threshold

    scorer = _ConfScorer()
    boxes = _boxes_with_conf(4000, 6)
    conf = boxes.confidence
    sparse = (conf >= 0.4) | (np.arange(len(boxes)) % 40 == 0)  # bin [0.25, 0.4) keeps ~1 box in 40
    boxes, conf = boxes[sparse], conf[sparse]
    cal = calibrate(scorer, boxes, min_boxes=20, class_names=("a", "b"))
    scores = scorer.score(boxes)
    for c in (0, 1):
        counts = cal.classes[c].bin_boxes
        assert counts[0] < 20 <= counts[1]
        near = (boxes.class_id == c) & (conf < 0.6)  # bins 0 and 1 together
        assert cal.per_bin[c, 0] == flag_threshold(scores[near], 0.95)
        assert cal.per_bin[c, 0] < cal.per_class[c]  # the class-wide threshold would flag low-confidence boxes more


def test_drift_window_equals_the_last_boxes_recomputed():
    from pipeline.filter.drift import DriftMonitor, decile_edges, psi

    rng = np.random.default_rng(1)
    edges = decile_edges(rng.normal(0, 1, 5000))
    monitor = DriftMonitor(edges, window=300, min_boxes=200)
    margins, flags = np.zeros(0), np.zeros(0, bool)
    for size in [*rng.integers(0, 40, 40), 1000]:  # uneven frames, wrapping the ring, then one larger than it
        m, f = rng.normal(0.3, 1, size), rng.random(size) < 0.1
        margins, flags = np.r_[margins, m][-300:], np.r_[flags, f][-300:]
        state = monitor.update("cam", m, f)
        assert state.boxes == len(margins) and state.flag_rate == pytest.approx(flags.mean() if len(flags) else 0.0)
        if len(margins) >= 200:
            assert state.psi == pytest.approx(psi(margins, np.asarray(edges)))
        else:
            assert state.psi is None
