"""Every scorer: higher = ID on separable toy data, sane fallbacks, clear errors on bad input."""

from __future__ import annotations

import ast
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.ood_metrics import auroc
from pipeline.filter.registry import create, names, register
from pipeline.filter.scorer import Scorer
from pipeline.filter.scores.knn import kth_distance_numpy
from tests.helpers.filter_fixtures import (
    FEATURE_SCORES,
    LOGIT_SCORES,
    TEST_PARAMS,
    WORLD,
    fit_boxes,
    fitted,
    id_test,
    ood_far,
    ood_hidden,
    outlier_boxes,
)

ALL = ["msp", "maxlogit", "energy", "mahalanobis", "knn", "vim", "bam", "abet", "oe", "crop", "fusion"]


def test_registry_lists_every_method_and_rejects_unknown_names():
    assert names() == sorted(ALL)
    with pytest.raises(GhostboxError, match="unknown OOD method 'odin'"):
        create("odin")
    with pytest.raises(GhostboxError, match="knn: bad parameters"):
        create("knn", neighbours=5)
    with pytest.raises(GhostboxError, match="knn: k must be >= 1"):
        create("knn", k=0)
    with pytest.raises(ValueError, match="lowercase"):
        register(type("Bad", (Scorer,), {"name": "Bad", "_fit": None, "_score": None}))


@pytest.mark.parametrize("name", ALL)
def test_far_ood_scores_lower_than_id(name):
    scorer = fitted(name)
    id_scores, ood_scores = scorer.score(id_test()), scorer.score(ood_far())
    assert id_scores.dtype == np.float64 and id_scores.shape == (len(id_test()),)
    assert auroc(id_scores, ood_scores) > 0.9  # AUROC with ID positive: higher = more ID
    assert np.median(id_scores) > np.median(ood_scores)


@pytest.mark.parametrize("name", FEATURE_SCORES)
def test_feature_scores_see_shifts_the_logits_cannot(name):
    scorer = fitted(name)
    assert auroc(scorer.score(id_test()), scorer.score(ood_hidden())) > 0.9


@pytest.mark.parametrize("name", LOGIT_SCORES)
def test_logit_scores_are_blind_to_hidden_shifts(name):
    # Pins down the toy world: the hidden OOD boxes have ID-like logits.
    scorer = fitted(name)
    assert 0.3 < auroc(scorer.score(id_test()), scorer.score(ood_hidden())) < 0.7


def test_logit_scores_match_their_formulas():
    z = np.array([[1.0, 2.0, -1.0, 0.5], [-3.0, -2.0, -4.0, -2.5]], np.float32)
    boxes = Detections.from_head(np.zeros((2, 3)), z, [1, 1], [0, 0])
    z64 = z.astype(np.float64)
    lse = np.log(np.exp(z64).sum(1))
    np.testing.assert_allclose(create("energy").fit(boxes).score(boxes), lse, rtol=1e-12)
    t = 2.0
    np.testing.assert_allclose(create("energy", temperature=t).fit(boxes).score(boxes),
                               t * np.log(np.exp(z64 / t).sum(1)), rtol=1e-12)
    np.testing.assert_allclose(create("msp").fit(boxes).score(boxes), np.exp(z64.max(1) - lse), rtol=1e-12)
    np.testing.assert_allclose(create("maxlogit").fit(boxes).score(boxes), z64.max(1))
    # large logits stay finite
    big = Detections.from_head(np.zeros((1, 3)), [[1000.0, 999.0, 0.0, 0.0]], [0], [0])
    assert np.isfinite(create("energy").fit(big).score(big)).all()


def test_logit_scores_check_their_parameters():
    for name in ("msp", "energy"):
        with pytest.raises(GhostboxError, match=f"{name}: temperature must be > 0, got 0"):
            create(name, temperature=0)
    with pytest.raises(GhostboxError, match="maxlogit: bad parameters"):
        create("maxlogit", temperature=2.0)
    assert create("msp", temperature=2).params == {"temperature": 2.0} and create("maxlogit").params == {}


def test_filter_modules_import_one_another_without_cycles():
    # The scores import the registry (to register; fusion to build its members); it must never import them back.
    package = Path(__file__).resolve().parents[2] / "pipeline" / "filter"
    modules = {".".join(("pipeline", "filter", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
               : p for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
                targets.add(getattr(node.args[0], "value", ""))  # importlib.import_module("pipeline.filter...")
        graph[name] = sorted(t for t in targets if t in modules and t != name)
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path[path.index(name):] + [name])}"
        if name not in done:
            for target in graph[name]:
                visit(target, [*path, name])
            done.add(name)

    for name in graph:
        visit(name, [])


def test_mahalanobis_matches_direct_formula():
    boxes = fit_boxes()
    scorer = create("mahalanobis", shrinkage=0.3).fit(boxes)
    h = boxes.box_features.astype(np.float64)
    means = np.stack([h[boxes.class_id == c].mean(0) for c in range(4)])
    resid = h - means[boxes.class_id]
    cov = resid.T @ resid / len(h)
    cov = 0.7 * cov + 0.3 * np.trace(cov) / h.shape[1] * np.eye(h.shape[1])
    prec = np.linalg.inv(cov)
    x = id_test().box_features.astype(np.float64)
    d = np.stack([np.einsum("ij,jk,ik->i", x - m, prec, x - m) for m in means], 1)
    np.testing.assert_allclose(scorer.score(id_test()), -d.min(1), rtol=1e-8)
    lw = create("mahalanobis").fit(boxes)
    assert 0.0 <= lw.shrinkage_used <= 1.0


def test_knn_is_minus_kth_neighbour_distance():
    scorer = create("knn", k=7, backend="numpy").fit(fit_boxes())
    bank = fit_boxes().box_features.astype(np.float64)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q = ood_hidden().box_features[:40].astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    dist = np.sqrt(((q[:, None, :] - bank[None]) ** 2).sum(-1))
    np.testing.assert_allclose(scorer.score(ood_hidden()[:40]), -np.sort(dist, 1)[:, 6], atol=2e-5)


def test_knn_faiss_agrees_with_brute_force():
    pytest.importorskip("faiss")
    flat = create("knn", k=20, backend="faiss", index="flat").fit(fit_boxes())
    brute = create("knn", k=20, backend="numpy").fit(fit_boxes())
    for boxes in (id_test(), ood_hidden()):
        np.testing.assert_allclose(flat.score(boxes), brute.score(boxes), atol=1e-5)


def test_knn_ivf_index_stays_close_to_exact():
    pytest.importorskip("faiss")
    bank = WORLD.id_boxes(12_000, seed=20)
    ivf = create("knn", k=20, index="ivf", ivf_tolerance=0.01).fit(bank)
    assert ivf.ivf_centroids is not None and ivf.nprobe_used >= 1
    assert ivf.ivf_error["p99"] <= 0.01
    queries = id_test().box_features / np.linalg.norm(id_test().box_features, axis=1, keepdims=True)
    exact = -kth_distance_numpy(queries, ivf.bank, 20)
    approx = ivf.score(id_test())
    assert np.all(approx <= exact + 1e-5)  # IVF sees a subset of the bank: never closer than exact
    rel = (exact - approx) / -exact
    assert np.quantile(rel, 0.99) < 0.03


def test_knn_numpy_search_chunks_without_changing_results(monkeypatch):
    import pipeline.filter.scores.knn as knn_module

    q = id_test().box_features[:30]
    bank = fit_boxes().box_features
    whole = kth_distance_numpy(q, bank, 15)
    monkeypatch.setattr(knn_module, "_MAX_DISTANCES", 1000)  # forces bank chunks of ~40 rows
    np.testing.assert_allclose(knn_module.kth_distance_numpy(q, bank, 15), whole, rtol=1e-5)  # float32 sums


def test_knn_bank_subsampling_is_seeded_and_k_is_clamped(caplog):
    a = create("knn", bank_size=500, seed=3).fit(fit_boxes())
    b = create("knn", bank_size=500, seed=3).fit(fit_boxes())
    c = create("knn", bank_size=500, seed=4).fit(fit_boxes())
    assert len(a.bank) == 500
    np.testing.assert_array_equal(a.bank, b.bank)
    assert not np.array_equal(a.bank, c.bank)
    with caplog.at_level(logging.WARNING):
        small = create("knn", k=50).fit(fit_boxes()[:10])
    assert small.k_used == 10 and "using k=10" in caplog.text
    assert np.isfinite(small.score(id_test())).all()


def test_vim_recovers_each_levels_logit_layer_and_pools_sparse_levels(caplog):
    boxes = fit_boxes()
    scorer = create("vim").fit(boxes)
    assert scorer.dim_used == 16  # D // 2
    assert max(scorer.logit_fit_residual[:3]) < 1e-5  # exact per level
    assert list(scorer.level_model) == [0, 1, 2]
    # a level with fewer than D+1 boxes falls back to the pooled model
    sparse = Detections.merge([boxes[boxes.level != 2], boxes[boxes.level == 2][:10]])
    with caplog.at_level(logging.WARNING):
        pooled = create("vim").fit(sparse)
    assert "levels [2] have fewer than D+1=33" in caplog.text
    assert pooled.level_model[2] == len(pooled.alpha) - 1
    assert np.isfinite(pooled.score(id_test())).all()
    with pytest.raises(GhostboxError, match="dim must be in 1..31"):
        create("vim", dim=32).fit(boxes)


def test_bam_is_zero_inside_boxes_and_uses_the_predicted_class():
    scorer = fitted("bam")
    assert np.all(scorer.score(fit_boxes()) == 0.0)  # every fit box lies inside its cluster's box
    one = fit_boxes()[:1]
    other_class = Detections.from_head(one.box_features, one.logits, [(one.class_id[0] + 1) % 4], one.level)
    assert scorer.score(other_class)[0] < 0.0  # far from the boxes of a class it does not belong to


def test_bam_margin_enlarges_boxes():
    tight = create("bam").fit(fit_boxes())
    loose = create("bam", margin=0.5).fit(fit_boxes())
    assert np.all(loose.score(ood_hidden()) >= tight.score(ood_hidden()))
    assert loose.score(ood_hidden()).mean() > tight.score(ood_hidden()).mean()


def test_abet_is_deterministic_by_seed_and_leaves_global_rng_alone():
    import torch

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create("abet", seed=1).fit(fit_boxes())
    after = torch.rand(1)
    assert torch.equal(before, after)  # fit ran inside fork_rng
    b = create("abet", seed=1).fit(fit_boxes())
    c = create("abet", seed=2).fit(fit_boxes())
    np.testing.assert_array_equal(a.class_weight, b.class_weight)
    np.testing.assert_array_equal(a.score(id_test()), b.score(id_test()))
    assert not np.array_equal(a.class_weight, c.class_weight)


def test_abet_numpy_scores_equal_the_torch_head():
    import torch

    scorer = fitted("abet")
    boxes = id_test()
    with torch.no_grad():
        logits = scorer._head(torch.from_numpy(boxes.box_features - scorer.center))
        theirs = torch.logsumexp(logits, dim=1).numpy()
    np.testing.assert_allclose(scorer.score(boxes), theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_abet_trains_on_50k_boxes_in_seconds():
    boxes = WORLD.id_boxes(50_000, seed=30)
    start = time.perf_counter()
    create("abet").fit(boxes)
    assert time.perf_counter() - start < 20.0  # ~1.5 s measured on 2 busy cores


def test_fusion_scores_single_boxes_like_batches_and_beats_nothing():
    scorer = fitted("fusion")
    batch = scorer.score(ood_hidden()[:20])
    singles = np.array([scorer.score(ood_hidden()[i])[0] for i in range(20)])
    np.testing.assert_array_equal(batch, singles)  # no within-batch ranks
    scores = scorer.score(id_test())
    assert 0.0 < scores.min() and scores.max() < 1.0  # mean of CDF values
    assert abs(np.median(scores) - 0.5) < 0.1  # held-out ID reference: ID scores sit mid-CDF
    members = ["mahalanobis", {"name": "knn", "params": {"k": 10}}]
    z = create("fusion", members=members, method="zscore").fit(fit_boxes())
    assert auroc(z.score(id_test()), z.score(ood_hidden())) > 0.9
    with pytest.raises(GhostboxError, match="at least two members"):
        create("fusion", members=["knn"])
    with pytest.raises(GhostboxError, match="unknown OOD method"):
        create("fusion", members=["knn", "odin"])


def test_fusion_tails_keep_order_beyond_the_reference_range():
    from pipeline.filter.scores.fusion import ecdf_lookup, ecdf_table

    values, cdf = ecdf_table(np.array([1.0, 2.0, 2.0, 3.0]))
    np.testing.assert_allclose(cdf, [0.125, 0.5, 0.875])  # mid-rank: ties count half
    mapped = ecdf_lookup(np.array([-5.0, 0.0, 1.0, 1.5, 3.0, 4.0, 9.0]), values, cdf, scale=1.0)
    assert np.all(np.diff(mapped) > 0) and 0 < mapped[0] < 0.125 and 0.875 < mapped[-1] < 1
    np.testing.assert_allclose(mapped[2:5], [0.125, 0.3125, 0.875])
    # a box pushed further out than every ID reference box still scores lower than before
    scorer = fitted("fusion")
    far = ood_far()[:10]
    centre = fit_boxes().box_features.mean(0)
    further = Detections.from_head(centre + 2 * (far.box_features - centre), far.logits, far.class_id, far.level)
    assert np.all(scorer.score(further) < scorer.score(far))
    assert np.all(scorer.score(further) > 0)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_empty_fit_set_is_refused(name):
    with pytest.raises(GhostboxError, match="no ID boxes"):
        create(name, **TEST_PARAMS.get(name, {})).fit(Detections.empty(4, 32))


@pytest.mark.parametrize("name", ALL)
def test_a_class_with_one_box_falls_back_without_crashing(name):
    boxes = fit_boxes()
    lonely = Detections.merge([boxes[boxes.class_id != 3][:1500], boxes[boxes.class_id == 3][:1]])
    scorer = create(name, **TEST_PARAMS.get(name, {}))
    scorer.fit(lonely, outlier_boxes() if scorer.needs_outliers else None)
    scores = scorer.score(id_test())
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", ["mahalanobis", "bam"])
def test_single_box_class_fallback_is_logged(name, caplog):
    boxes = fit_boxes()
    lonely = Detections.merge([boxes[boxes.class_id != 3][:1500], boxes[boxes.class_id == 3][:1]])
    with caplog.at_level(logging.WARNING):
        create(name).fit(lonely)
    assert "[3]" in caplog.text


def test_fit_on_a_single_box_works_for_every_scorer():
    one = fit_boxes()[:1]
    for name in ALL:
        scorer = create(name, **TEST_PARAMS.get(name, {}))
        scorer.fit(one, outlier_boxes()[:1] if scorer.needs_outliers else None)
        assert np.isfinite(scorer.score(id_test()[:5])).all(), name


@pytest.mark.parametrize("name", ALL)
def test_nonfinite_input_is_refused_at_fit_and_score(name):
    boxes = fit_boxes()[:200]
    feats = boxes.box_features.copy()
    feats[7, 0] = np.nan
    bad = Detections.from_head(feats, boxes.logits, boxes.class_id, boxes.level)
    with pytest.raises(GhostboxError, match=r"features: NaN values in 1 of 200 rows"):
        create(name, **TEST_PARAMS.get(name, {})).fit(bad)
    with pytest.raises(GhostboxError, match=r"NaN values in 1 of 200 rows"):
        fitted(name).score(bad)


@pytest.mark.parametrize("name", ALL)
def test_mismatched_dims_name_both(name):
    scorer = fitted(name)
    wrong_nc = Detections.from_head(np.zeros((2, 32)), np.zeros((2, 5)), [0, 1], [0, 0])
    with pytest.raises(GhostboxError, match="5 class logits, the scorer was fitted on 4"):
        scorer.score(wrong_nc)
    wrong_d = Detections.from_head(np.zeros((2, 48)), np.zeros((2, 4)), [0, 1], [0, 0])
    if name == "crop":  # reads the crops and the class, not the features
        assert scorer.score(wrong_d.with_meta(crops=[np.zeros((4, 4, 3), np.uint8)] * 2)).shape == (2,)
    elif name in LOGIT_SCORES:
        assert scorer.score(wrong_d).shape == (2,)  # logit-only scores ignore the features
    else:
        with pytest.raises(GhostboxError, match="feature dim D=48, the scorer was fitted on D=32"):
            scorer.score(wrong_d)


def test_unfitted_scorer_refuses_to_score():
    with pytest.raises(GhostboxError, match="not fitted"):
        create("knn").score(id_test())


def test_empty_score_batch_gives_empty_scores():
    assert fitted("knn").score(Detections.empty(4, 32)).shape == (0,)


def test_ledoit_wolf_shrinkage_behaves():
    from pipeline.filter.scores.mahalanobis import ledoit_wolf_shrinkage

    rng = np.random.default_rng(0)
    isotropic = rng.normal(size=(400, 20))
    stretched = isotropic * np.geomspace(0.01, 10, 20)
    assert ledoit_wolf_shrinkage(isotropic) > 0.5  # the identity target is right: shrink a lot
    assert ledoit_wolf_shrinkage(stretched) < 0.05  # far from isotropic, plenty of data: barely
    few = rng.normal(size=(15, 20)) * np.geomspace(0.5, 2, 20)
    assert ledoit_wolf_shrinkage(few) > ledoit_wolf_shrinkage(rng.normal(size=(4000, 20)) * np.geomspace(0.5, 2, 20))


def test_ledoit_wolf_matches_sklearn():
    covariance = pytest.importorskip("sklearn.covariance")
    from pipeline.filter.scores.mahalanobis import ledoit_wolf_shrinkage

    x = np.random.default_rng(1).normal(size=(300, 12)) * np.linspace(0.5, 3, 12)
    expected = covariance.ledoit_wolf_shrinkage(x, assume_centered=True)
    assert ledoit_wolf_shrinkage(x) == pytest.approx(expected, rel=1e-9)


def test_mahalanobis_on_normalised_features():
    scorer = create("mahalanobis", normalize=True).fit(fit_boxes())
    assert auroc(scorer.score(id_test()), scorer.score(ood_hidden())) > 0.9
    scaled = id_test()
    bigger = Detections.from_head(scaled.box_features * 5, scaled.logits, scaled.class_id, scaled.level)
    np.testing.assert_allclose(scorer.score(bigger), scorer.score(scaled), rtol=1e-5)  # scale-free
