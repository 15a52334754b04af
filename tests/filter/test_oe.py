"""The outlier-exposure score (`oe`): fitted on ID and outlier boxes, checked against sklearn."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.filter_file import load_filter, read_filter_header, save_filter
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.ood_metrics import auroc
from pipeline.filter.registry import create
from pipeline.filter.scores.logit_math import logsumexp
from tests.helpers.filter_fixtures import CLASS_NAMES, WORLD, fit_boxes, id_test, outlier_boxes


def test_logistic_head_equals_sklearn_on_the_same_arrays():
    from sklearn.linear_model import LogisticRegression

    ids, outs = fit_boxes()[:800], outlier_boxes()[:500]
    l2 = 1e-2
    ours = create("oe", l2=l2, standardize=True).fit(ids, outs)

    def inputs(b: Detections) -> np.ndarray:
        return np.hstack([b.box_features.astype(np.float64), logsumexp(b.logits, axis=1)[:, None] / 10])

    x = np.vstack([inputs(ids), inputs(outs)])
    mean, scale = x.mean(0), x.std(0)
    y = np.r_[np.ones(len(ids)), np.zeros(len(outs))]
    # our loss: sum_i w_i CE_i + l2/2 |w|^2 with each side weighing 1/2; sklearn: C sum_i w_i CE_i + |w|^2 / 2
    weight = np.where(y == 1, 0.5 / len(ids), 0.5 / len(outs))
    reference = LogisticRegression(C=1 / l2, tol=1e-10, max_iter=10_000).fit((x - mean) / scale, y,
                                                                             sample_weight=weight)
    test = Detections.merge([id_test()[:200], WORLD.ood_boxes(200, seed=4, sample_seed=7)])
    expected = reference.decision_function((inputs(test) - mean) / scale)
    got = ours.score(test)
    assert np.corrcoef(got, expected)[0, 1] > 0.9999
    np.testing.assert_allclose(got, expected, atol=1e-3 * np.abs(expected).max())


def test_learns_the_outlier_kinds_it_is_shown():
    # new samples of the kinds in outlier_boxes(): far clusters of seed 4, hidden shifts of seed 5
    scorer = create("oe").fit(fit_boxes(), outlier_boxes())
    shown_far = WORLD.ood_boxes(600, seed=4, mode="far", sample_seed=1)
    shown_hidden = WORLD.ood_boxes(600, seed=5, mode="hidden", distance=1.0, sample_seed=2)
    ids = scorer.score(id_test())
    assert auroc(ids, scorer.score(shown_far)) > 0.98
    assert auroc(ids, scorer.score(shown_hidden)) > 0.98


def test_hidden_layer_head_and_determinism():
    a = create("oe", hidden=16, max_iter=200).fit(fit_boxes(), outlier_boxes())
    b = create("oe", hidden=16, max_iter=200).fit(fit_boxes(), outlier_boxes())
    c = create("oe", hidden=16, max_iter=200, seed=1).fit(fit_boxes(), outlier_boxes())
    test = id_test()[:100]
    np.testing.assert_array_equal(a.score(test), b.score(test))
    assert not np.array_equal(a.score(test), c.score(test))
    assert auroc(a.score(id_test()), a.score(WORLD.ood_boxes(400, seed=5, mode="hidden", sample_seed=3))) > 0.95


def test_needs_outliers_with_matching_dimensions():
    with pytest.raises(GhostboxError, match="oe: needs outlier boxes"):
        create("oe").fit(fit_boxes())
    with pytest.raises(GhostboxError, match="oe: needs outlier boxes"):
        create("oe").fit(fit_boxes(), outlier_boxes()[:0])
    narrow = Detections.from_head(np.zeros((5, 8)), np.zeros((5, 4)), np.zeros(5), np.zeros(5))
    with pytest.raises(GhostboxError, match="outlier boxes have D=8, nc=4; the ID boxes have D=32"):
        create("oe").fit(fit_boxes(), narrow)
    bad = outlier_boxes()[:10]
    feats = bad.box_features.copy()
    feats[3, 1] = np.inf
    with pytest.raises(GhostboxError, match="inf values in 1 of 10 rows"):
        create("oe").fit(fit_boxes(), Detections.from_head(feats, bad.logits, bad.class_id, bad.level))
    for params, text in (({"hidden": -1}, "hidden must be >= 0"), ({"l2": -1.0}, "l2 must be >= 0"),
                         ({"max_iter": 0}, "max_iter must be >= 1")):
        with pytest.raises(GhostboxError, match=text):
            create("oe", **params)
    # scores that do not learn from outliers ignore them
    knn = create("knn", k=5).fit(fit_boxes()[:500], outlier_boxes())
    np.testing.assert_array_equal(knn.score(id_test()[:20]),
                                  create("knn", k=5).fit(fit_boxes()[:500]).score(id_test()[:20]))


def test_filter_with_oe_round_trips_and_records_its_outliers(tmp_path):
    fingerprint = {"weights_sha256": "ab" * 32, "imgsz": 320, "feature_dim": 32, "feature_layer": "x"}
    filt = HallucinationFilter.fit("oe", BoxSet(fit_boxes()), CLASS_NAMES, fingerprint, outliers=outlier_boxes(),
                                   params={"hidden": 8, "max_iter": 100})
    assert filt.metadata["outlier_boxes"] == len(outlier_boxes())
    path = save_filter(filt, tmp_path / "oe.filter.safetensors")
    again = load_filter(path)
    np.testing.assert_array_equal(again.scorer.score(id_test()), filt.scorer.score(id_test()))
    header = read_filter_header(path)
    assert header["method"] == "oe"
    # with outliers present, the held-out ID boxes alone set the thresholds: ~95% of new ID kept
    kept = 1 - filt.judge(id_test())[2].mean()
    assert 0.9 < kept <= 1.0


def test_fusion_passes_outliers_to_members_that_learn_from_them():
    fusion = create("fusion", members=["oe", "mahalanobis"])
    assert fusion.needs_outliers
    with pytest.raises(GhostboxError, match="fusion: needs outlier boxes"):
        create("fusion", members=["oe", "mahalanobis"]).fit(fit_boxes())
    fusion.fit(fit_boxes(), outlier_boxes())
    shown = WORLD.ood_boxes(400, seed=5, mode="hidden", sample_seed=9)
    assert auroc(fusion.score(id_test()), fusion.score(shown)) > 0.95
    assert not create("fusion", members=["knn", "mahalanobis"]).needs_outliers


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    from pipeline.synth import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("street")
    generate_world(WorldConfig(seed=3, train=40, val=6, near_test=4, far_test=2, pool=24, mixed_test=2,
                               contaminated=2, stream_frames=2), root, workers=1)
    return root


def test_calibrate_oe_cli_uses_roi_features_and_eval_adopts_them(street, tmp_path):
    out = tmp_path / "oe.filter.safetensors"
    base = [sys.executable, "-m", "pipeline"]
    proc = subprocess.run([*base, "calibrate", "--id", str(street / "id/train"), "--method", "oe",
                           "--outliers", str(street / "ood/pool"), "--out", str(out), "--device", "cpu",
                           "--min-boxes", "5"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "outlier detections:" in proc.stdout
    header = read_filter_header(out)
    assert header["fingerprint"]["feature_layer"].startswith("detect.cls_head[-2]+roi_align")
    assert header["metadata"]["outlier_boxes"] > 0 and header["metadata"]["outlier_data"] == [str(street / "ood/pool")]
    # eval builds its detector with the filter's box features, no flag needed
    report_dir = tmp_path / "eval"
    proc = subprocess.run([*base, "eval", "--id", str(street / "id/val"), "--ood", str(street / "ood/near_test"),
                           "--filter", str(out), "--out", str(report_dir), "--device", "cpu", "--no-plots"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((report_dir / "report.json").read_text())
    assert "oe" in report["ood"]["near_test"]["scores"]
    # an explicit, contradicting --box-features is refused by the fingerprint check
    proc = subprocess.run([*base, "eval", "--id", str(street / "id/val"), "--ood", str(street / "ood/near_test"),
                           "--filter", str(out), "--out", str(tmp_path / "e2"), "--device", "cpu", "--no-plots",
                           "--box-features", "head"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "feature_layer" in proc.stderr
    # oe without outliers: a clear error before any work
    proc = subprocess.run([*base, "calibrate", "--id", str(street / "id/train"), "--method", "oe", "--out",
                           str(tmp_path / "x.filter.safetensors")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--outliers" in proc.stderr


def test_auto_penalty_is_chosen_by_cross_validation_on_the_fit_boxes():
    from pipeline.filter.scores.oe import L2_GRID

    ids, outs = fit_boxes()[:1500], outlier_boxes()
    auto = create("oe").fit(ids, outs)
    assert auto.params["l2"] == "auto" and auto.l2_used in L2_GRID
    assert set(auto.cv_loss) == {f"{v:g}" for v in L2_GRID}
    best = min(auto.cv_loss.values())
    assert auto.cv_loss[f"{auto.l2_used:g}"] <= best + 1e-4  # the chosen one is (within the tie margin) the best
    # the final head is the one a fixed penalty of that value gives
    fixed = create("oe", l2=auto.l2_used).fit(ids, outs)
    np.testing.assert_allclose(auto.score(id_test()[:50]), fixed.score(id_test()[:50]), rtol=1e-6, atol=1e-6)
    arrays, params = auto.get_state()
    again = type(auto).from_state(arrays, json.loads(json.dumps(params)))
    assert again.l2_used == auto.l2_used and again.cv_loss == auto.cv_loss
    with pytest.raises(GhostboxError, match="l2 must be 'auto' or a number"):
        create("oe", l2="strong")


def test_scoring_benchmark_fits_every_score_including_oe():
    from pipeline.bench.scorer_speed import bench_scorers
    from pipeline.filter.registry import names

    result = bench_scorers(feature_dim=16, fit_boxes=400, batch=10, repeats=3, knn_bank=0, abet_boxes=0)
    assert set(result["ms_per_batch"]) == set(names())
    assert all(v > 0 for v in result["ms_per_batch"].values())


def test_bundled_filter_fits_the_bundled_model_with_its_box_features():
    from pipeline.bundled import ASSETS, default_model
    from pipeline.detect.detector import Detector
    from pipeline.filter.filter_file import box_features_needed

    path = ASSETS / "filters" / "ghostbox-street-n.filter.safetensors"
    kind = box_features_needed([path])
    detector = Detector(model=str(default_model()), device="cpu", box_features=kind)
    filt = load_filter(path)
    filt.check_detector(detector.fingerprint())
    with pytest.raises(GhostboxError, match="filter was fitted for another detector"):
        filt.check_detector(Detector(model=str(default_model()), device="cpu").fingerprint())
    import cv2

    frames = [cv2.imread(str(p)) for p in sorted((ASSETS / "samples").glob("*.jpg"))]
    flagged = [filt.apply(d).data["hallucination"] for d in detector.detect(frames)]
    assert sum(len(f) for f in flagged) > 0
