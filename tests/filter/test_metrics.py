"""OOD metrics (ID positive) against brute-force references, toy cases and pytorch-ood."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import GhostboxError
from pipeline.filter.ood_metrics import aupr_in, aupr_out, auroc, fpr_at_tpr, keep_threshold


def _brute_auroc(pos, neg):
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def _brute_aupr(pos, neg):
    # PR points at every distinct threshold, highest first, starting from (recall 0, precision 1)
    recall, precision = [0.0], [1.0]
    for t in np.unique(np.concatenate([pos, neg]))[::-1]:
        tp, fp = (pos >= t).sum(), (neg >= t).sum()
        recall.append(tp / len(pos))
        precision.append(tp / (tp + fp))
    return sum((recall[i] - recall[i - 1]) * (precision[i] + precision[i - 1]) / 2 for i in range(1, len(recall)))


def _brute_fpr(pos, neg, tpr):
    # the largest threshold among the ID scores that keeps >= tpr of them
    best = min(pos)
    for t in np.unique(pos):
        if (pos >= t).mean() >= tpr:
            best = max(best, t)
    return (neg >= best).mean()


@pytest.mark.parametrize("seed", range(5))
def test_against_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos = np.round(rng.normal(1.0, 1.0, 137), 1)  # rounding makes ties
    neg = np.round(rng.normal(0.0, 1.0, 91), 1)
    assert auroc(pos, neg) == pytest.approx(_brute_auroc(pos, neg), abs=1e-12)
    assert aupr_in(pos, neg) == pytest.approx(_brute_aupr(pos, neg), abs=1e-12)
    assert aupr_out(pos, neg) == pytest.approx(_brute_aupr(-neg, -pos), abs=1e-12)
    for tpr in (0.5, 0.9, 0.95, 1.0):
        assert fpr_at_tpr(pos, neg, tpr) == pytest.approx(_brute_fpr(pos, neg, tpr), abs=1e-12)


def test_toy_cases():
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    assert aupr_in([2, 3], [0, 1]) == 1.0 and aupr_out([2, 3], [0, 1]) == 1.0
    assert fpr_at_tpr([2, 3], [0, 1]) == 0.0 and fpr_at_tpr([0, 1], [2, 3]) == 1.0
    # 100 ID scores 1..100: keeping 95% means threshold 6; OOD scores >= 6 are false positives
    ids = np.arange(1, 101)
    assert keep_threshold(ids, 0.95) == 6
    assert fpr_at_tpr(ids, np.array([5, 6, 7, 100]), 0.95) == 0.75
    # 20 ID scores: 19 must stay, so the threshold is the second-smallest
    assert keep_threshold(np.arange(20), 0.95) == 1
    assert keep_threshold(np.arange(60), 0.95) == 3  # 0.95 * 60 = 57.000000000000007 must not round up


def test_bad_input():
    with pytest.raises(GhostboxError, match="no scores"):
        auroc([], [1.0])
    with pytest.raises(GhostboxError, match="1 non-finite"):
        fpr_at_tpr([1.0, np.nan], [0.0])
    with pytest.raises(GhostboxError, match="tpr must be in"):
        keep_threshold([1.0], 0.0)


def test_cross_check_with_pytorch_ood():
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("pytorch_ood.metrics.functional")
    rng = np.random.default_rng(7)
    pos, neg = rng.normal(1, 1, 400), rng.normal(0, 1, 300)
    scores = torch.from_numpy(np.concatenate([pos, neg]))
    # pytorch-ood: higher = positive, and its positive class is label < 0. Passing our scores
    # with ID labelled -1 makes its positive class our ID class.
    id_positive = torch.from_numpy(np.concatenate([-np.ones(400), np.zeros(300)]).astype(np.int64))
    assert fpr_at_tpr(pos, neg) == pytest.approx(float(functional.fpr_at_tpr(scores, id_positive, 0.95)), abs=1e-12)
    assert auroc(pos, neg) == pytest.approx(float(functional.auroc(scores, id_positive)), abs=1e-12)
    assert aupr_in(pos, neg) == pytest.approx(float(functional.aupr(scores, id_positive, "ood")), abs=1e-12)
    # its usual convention (OOD positive, higher = OOD) gives AUPR-Out from negated scores
    ood_positive = torch.from_numpy(np.concatenate([np.zeros(400), -np.ones(300)]).astype(np.int64))
    assert aupr_out(pos, neg) == pytest.approx(float(functional.aupr(-scores, ood_positive, "ood")), abs=1e-12)
    assert auroc(pos, neg) == pytest.approx(float(functional.auroc(-scores, ood_positive)), abs=1e-12)
