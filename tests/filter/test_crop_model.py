"""The crop model (`crop`), its fusion with the box-feature score, and the per-kind tally."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.crop_net import letterbox_crops, synth_outliers
from pipeline.filter.filter_file import header_needs_crops, load_filter, read_filter_header, save_filter
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.ood_metrics import auroc
from pipeline.filter.registry import create
from pipeline.kind_tally import KindTally, confidence_cut
from tests.helpers.filter_fixtures import CLASS_NAMES, fit_boxes, id_test, ood_far, outlier_boxes

TINY = {"epochs": 20, "width": 8, "size": 16}


def tiny_filter(method: str = "crop", params: str = "") -> HallucinationFilter:
    """Fitted once per (method, params as JSON) in a session: each fit trains a network."""
    return _fitted(method, params or json.dumps(TINY))


@cache
def _fitted(method: str, params: str) -> HallucinationFilter:
    return HallucinationFilter.fit(method, BoxSet(fit_boxes()[:600]), CLASS_NAMES, {"model": "toy"},
                                   params=json.loads(params), outliers=outlier_boxes()[:300], min_boxes=10)


def test_letterbox_keeps_the_aspect_ratio_and_greys_the_rest():
    crop = np.zeros((10, 40, 3), np.uint8)
    crop[..., 2] = 255  # red in BGR
    [x] = letterbox_crops([crop], 16)
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    assert np.allclose(x[:, 8, 8], [1.0, 0.0, 0.0])  # RGB: red in the middle
    assert np.allclose(x[:, 0, 8], 114 / 255)  # grey above the wide crop
    [empty] = letterbox_crops([np.zeros((0, 5, 3), np.uint8)], 16)  # a box on the frame's edge
    assert np.allclose(empty, 114 / 255)


def test_synthetic_outliers_are_made_of_id_pixels():
    rng = np.random.default_rng(0)
    x = rng.random((20, 3, 16, 16)).astype(np.float32)
    y = np.arange(20) % 2
    shuffled = synth_outliers(x, y, ["shuffle"], 5, rng)
    assert shuffled.shape == (5, 3, 16, 16)
    # every 4x4 patch of a shuffled crop is a patch of some ID crop
    patch = shuffled[0, :, :4, :4]
    assert any(np.array_equal(patch, x[i, :, r:r + 4, c:c + 4]) for i in range(20) for r in range(0, 16, 4)
               for c in range(0, 16, 4))
    blends = synth_outliers(x, y, ["blend"], 50, rng)
    assert 0 < len(blends) <= 50
    with pytest.raises(GhostboxError, match="unknown synthetic outlier kinds"):
        synth_outliers(x, y, ["mosaic"], 5, rng)


def test_crop_model_trains_on_a_tiny_set_and_reloads_bit_identically(tmp_path):
    filt = tiny_filter()
    assert filt.needs_crops
    test = id_test()[:200]
    scores = filt.scorer.score(test)
    # it learnt something from the pixels alone: ID crops above the outliers' (held-out draws)
    outliers = ood_far()
    assert auroc(scores, filt.scorer.score(outliers)) > 0.8
    path = save_filter(filt, tmp_path / "crop.filter.safetensors")
    header = read_filter_header(path)
    assert header_needs_crops(header) and header["scorer"]["fitted"]["id_crops"] == 420  # the fit part of 600
    again = load_filter(path)
    assert np.array_equal(again.scorer.score(test), scores)
    assert np.array_equal(again.judge(test)[2], filt.judge(test)[2])


def test_a_crop_filter_refuses_boxes_without_crops_and_names_the_fix():
    filt = tiny_filter()
    bare = id_test()[:3].with_meta(crops=None)
    with pytest.raises(GhostboxError, match="workers.crops"):
        filt.apply(bare)
    with pytest.raises(GhostboxError, match="crop: needs outlier boxes"):
        create("crop", **TINY).fit(fit_boxes()[:50])
    with pytest.raises(GhostboxError, match="carry no crops"):
        create("crop", **TINY).fit(fit_boxes()[:50].with_meta(crops=None), outlier_boxes()[:20])


def test_a_graph_that_sends_no_crops_to_a_crop_filter_is_refused_before_it_starts(tmp_path):
    from pipeline.stream.config import graph_from_dict
    from pipeline.stream.supervisor import preflight

    path = save_filter(tiny_filter(), tmp_path / "crop.filter.safetensors")
    sources = [{"id": "s", "uri": "synth:seed=0,frames=2"}]
    off = graph_from_dict({"sources": sources, "filter": {"path": str(path)}, "workers": {"crops": "none"},
                           "sinks": [{"name": "out", "out": str(tmp_path / "out")}]}, "test")
    with pytest.raises(GhostboxError, match="workers.crops is 'none': set workers.crops to auto"):
        preflight(off)
    auto = graph_from_dict({"sources": sources, "filter": {"path": str(path)},
                            "sinks": [{"name": "out", "out": str(tmp_path / "out"), "crops": False}]}, "test")
    assert auto.filter_needs_crops()  # workers.crops auto: the workers send crops for the filter
    auto.check_filter_crops()


def test_fused_margin_equals_the_parts_combined_by_hand():
    filt = tiny_filter("fusion", json.dumps({"members": ["oe", {"name": "crop", "params": TINY}],
                                             "method": "logistic"}))
    fusion = filt.scorer
    assert fusion.uses_crops and fusion.needs_outliers and fusion.combiner is not None
    boxes = id_test()[:50]
    oe, crop = (member.score(boxes) for member in fusion.members)
    w, b = fusion.combiner
    (t_oe, t_crop) = fusion.tables
    by_hand = b + w[0] * (oe - t_oe.mean) / t_oe.std + w[1] * (crop - t_crop.mean) / t_crop.std
    assert np.allclose(fusion.score(boxes), by_hand, rtol=0, atol=1e-12)
    scores, thresholds, flags = filt.judge(boxes)
    assert np.allclose(scores - thresholds, by_hand - filt.thresholds.thresholds_for(
        boxes.class_id, boxes.class_confidence()), atol=1e-12)
    assert np.array_equal(flags, by_hand < thresholds)
    # the combiner weighs both parts up (each tells ID from outliers) and saw held-out boxes only
    assert (w > 0).all()
    assert sum(fusion.combiner_boxes) < 600 + 300


def test_logistic_fusion_refuses_fixed_weights_and_too_few_outliers():
    with pytest.raises(GhostboxError, match="learns its weights"):
        create("fusion", members=["oe", "crop"], method="logistic", weights=[1, 1])
    one = Detections.merge([outlier_boxes()[:1]])
    with pytest.raises(GhostboxError, match="too few"):
        create("fusion", members=["energy", "msp"], method="logistic").fit(fit_boxes()[:100], one)


def test_per_kind_and_per_object_counts_on_a_hand_built_frame():
    tally = KindTally()
    # a bench seen in 4 boxes (3 flagged: caught), a dog in 2 (1 flagged: half is not most), a cone in 1
    tally.add(["bench"] * 4 + ["dog"] * 2 + ["cone"], [7, 7, 7, 7, 3, 3, 9],
              [True, True, True, False, True, False, True])
    rows = tally.rows()
    assert list(rows) == ["bench", "dog", "cone"]  # most boxes first
    assert rows["bench"] == {"boxes": 4, "caught": 3, "objects": 1, "objects_caught": 1}
    assert rows["dog"] == {"boxes": 2, "caught": 1, "objects": 1, "objects_caught": 0}
    assert tally.totals() == {"objects": 3, "objects_caught": 2}
    cut = confidence_cut(np.array([0.3, 0.5, 0.7, 0.9]), np.array([True, False, False, False]),
                         np.array([0.3, 0.35, 0.8]))
    assert cut["id_flagged"] == 0.25 and cut["caught"] == pytest.approx(2 / 3, abs=1e-4)


def test_demo_counts_caught_per_kind_and_object_beside_the_confidence_cut(tmp_path, monkeypatch):
    from pipeline.synth import WorldConfig
    from pipeline.synth import truth_judging as judging

    truth = [{"xyxy": [0, 100, 200, 160], "ood": True, "kind": "bench", "track_id": 4},
             {"xyxy": [300, 0, 340, 80], "ood": False, "label": "pedestrian", "track_id": 5}]
    monkeypatch.setattr(judging, "render_stream_frame", lambda world, index: (None, truth))
    frames = [[{"xyxy": [0, 100, 200, 160], "conf": 0.4, "hallucination": flag},
               {"xyxy": [300, 0, 340, 80], "conf": 0.9, "hallucination": False}] for flag in (True, True, False)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"frame": i, "boxes": b}) + "\n" for i, b in enumerate(frames)))
    counts = judging.score_against_truth(path, WorldConfig(seed=0, stream_frames=10))
    assert counts["per_kind"] == {"bench": {"boxes": 3, "caught": 2, "objects": 1, "objects_caught": 1}}
    assert (counts["objects"], counts["objects_caught"]) == (1, 1)
    assert counts["confidence_cut"]["id_flagged"] == 0.0  # the filter flagged no person: nor does the cut
    text = judging.describe(counts)
    assert "bench 67% of 3 (1/1 objects)" in text and "confidence cut" in text


def test_calibrate_names_the_fusion_of_oe_and_crop_with_a_learnt_combiner():
    from pipeline.filter.fit_from_data import parse_methods

    method, params = parse_methods("oe,crop", {"method": "logistic", "crop": {"epochs": 3}})
    assert method == "fusion" and params["method"] == "logistic"
    assert params["members"] == [{"name": "oe", "params": {}}, {"name": "crop", "params": {"epochs": 3}}]
    assert create(method, **params).uses_crops
    with pytest.raises(GhostboxError, match="neither a member"):
        parse_methods("oe,crop", {"k": 3})
