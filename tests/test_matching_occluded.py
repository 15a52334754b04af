"""Matching detections to partly hidden objects: hand-built cases for `match_occluded` and the demo's counts."""

from __future__ import annotations

import numpy as np

from pipeline.matching import MATCH_INSIDE, MATCH_IOU, MATCH_NONE, match_occluded


def _boxes(*rows):
    return np.array(rows, np.float32).reshape(-1, 4)


def test_half_hidden_car_matches_its_whole_box():
    # a car 100 px wide, its right half behind a bus: visible box 0-50, whole box 0-100
    visible, whole = _boxes([0, 0, 50, 40]), _boxes([0, 0, 100, 40])
    index, how = match_occluded(_boxes([0, 0, 98, 40], [0, 0, 52, 40]), visible, whole)
    assert index.tolist() == [0, 0] and how.tolist() == [MATCH_IOU, MATCH_IOU]  # whole-box and visible-box fits


def test_detection_on_part_of_an_object_is_inside_it():
    # a bench 200 x 60; a "pedestrian" box on its backrest: IoU 0.1, but all of it lies on the bench
    visible = whole = _boxes([0, 100, 200, 160])
    index, how = match_occluded(_boxes([20, 100, 50, 160]), visible, whole)
    assert index.tolist() == [0] and how.tolist() == [MATCH_INSIDE]


def test_iou_match_wins_over_a_larger_object_holding_the_box():
    # a pedestrian standing in front of a bench: the box fits the pedestrian and lies inside the bench
    visible = _boxes([0, 100, 200, 160], [40, 80, 70, 160])
    whole = _boxes([0, 100, 200, 160], [40, 80, 70, 160])
    index, how = match_occluded(_boxes([41, 82, 70, 160]), visible, whole)
    assert index.tolist() == [1] and how.tolist() == [MATCH_IOU]


def test_box_straddling_two_objects_or_empty_ground_matches_nothing():
    visible = whole = _boxes([0, 0, 40, 40], [60, 0, 100, 40])
    index, how = match_occluded(_boxes([20, 0, 80, 40], [200, 200, 240, 240]), visible, whole)
    assert index.tolist() == [-1, -1] and how.tolist() == [MATCH_NONE, MATCH_NONE]
    index, how = match_occluded(_boxes([0, 0, 10, 10]), _boxes(), _boxes())
    assert index.tolist() == [-1]


def test_demo_counts_parts_of_ood_objects_as_hallucinations(tmp_path, monkeypatch):
    import json

    from pipeline.synth import WorldConfig
    from pipeline.synth import truth_judging as judging

    truth = [{"xyxy": [0, 100, 200, 160], "full_xyxy": [0, 100, 200, 160], "ood": True},   # a bench
             {"xyxy": [300, 0, 340, 80], "full_xyxy": [300, 0, 340, 120], "ood": False}]  # a half-hidden person
    monkeypatch.setattr(judging, "render_stream_frame", lambda world, index: (None, truth))
    boxes = [{"xyxy": [20, 100, 50, 160], "hallucination": True},     # on the bench's backrest: caught
             {"xyxy": [0, 100, 200, 160], "hallucination": False},    # the whole bench: missed
             {"xyxy": [300, 0, 340, 118], "hallucination": True},     # the person, whole box: wrongly flagged
             {"xyxy": [305, 0, 335, 40], "hallucination": False},     # the person's head: a partial detection
             {"xyxy": [500, 500, 540, 540], "hallucination": True}]   # nothing there: background
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"frame": 0, "boxes": boxes}) + "\n")
    counts = judging.score_against_truth(path, WorldConfig(seed=0, stream_frames=10))
    assert (counts["hallucinations"], counts["caught"]) == (2, 1)
    assert (counts["id_detections"], counts["wrongly_flagged"]) == (1, 1)
    assert (counts["id_partial"], counts["background"], counts["background_flagged"]) == (1, 1, 1)
