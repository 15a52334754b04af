"""OOD detection metrics on score arrays, pure numpy.

Convention (REFERENCE.md §2): scores are higher = more in-distribution and **ID is the
positive class** for FPR@TPR, AUROC and AUPR-In; AUPR-Out takes OOD as positive (scores
negated). OpenOOD and pytorch-ood's FPRAtTPR treat OOD as positive and report a different
FPR95: to get ours from pytorch-ood, pass our scores with ID labelled as its positive
(label < 0) class.

    keep_threshold(id, tpr)  the largest t with fraction(id >= t) >= tpr: the ceil(tpr n)-th
                             largest ID score; boxes scoring >= t are kept
    fpr_at_tpr(id, ood)      fraction of OOD scores >= keep_threshold(id, tpr)
    auroc(id, ood)           P(s_id > s_ood) + P(s_id = s_ood) / 2
    aupr_in / aupr_out       area under the precision-recall curve by the trapezoidal rule,
                             one point per distinct score plus (recall 0, precision 1), as
                             sklearn's precision_recall_curve + auc and pytorch-ood
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import GhostboxError

TARGET_TPR = 0.95  # ID boxes kept: M-Hood's operating point, and the TPR of FPR95


def _scores(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(arr) == 0:
        raise GhostboxError(f"{name}: no scores")
    if not np.isfinite(arr).all():
        raise GhostboxError(f"{name}: {int((~np.isfinite(arr)).sum())} non-finite scores")
    return arr


def keep_threshold(id_scores: np.ndarray, tpr: float = TARGET_TPR) -> float:
    """The largest threshold t that keeps (score >= t) at least a fraction `tpr` of the ID scores."""
    if not 0.0 < tpr <= 1.0:
        raise GhostboxError(f"tpr must be in (0, 1], got {tpr}")
    s = _scores(id_scores, "id_scores")
    # round() guards against products like 0.95 * 60 = 57.000000000000007 -> 58
    keep = max(1, int(np.ceil(round(tpr * len(s), 6))))
    return float(np.partition(s, len(s) - keep)[len(s) - keep])


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = TARGET_TPR) -> float:
    """Fraction of OOD scores >= the threshold that keeps `tpr` of the ID scores (ID positive)."""
    threshold = keep_threshold(id_scores, tpr)
    return float(np.mean(_scores(ood_scores, "ood_scores") >= threshold))


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """P(ID score > OOD score) + half of P(tie): the Mann-Whitney U statistic, normalised."""
    pos, neg = _scores(id_scores, "id_scores"), np.sort(_scores(ood_scores, "ood_scores"))
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (len(pos) * len(neg)))


def _aupr(pos: np.ndarray, neg: np.ndarray) -> float:
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    # one point per distinct threshold: the last position of each run of equal scores
    ends = np.append(np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1)
    tps = np.cumsum(is_pos[order])[ends]
    precision = tps / (ends + 1)
    recall = tps / len(pos)
    recall = np.concatenate([[0.0], recall])
    precision = np.concatenate([[1.0], precision])
    return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2))


def aupr_in(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the precision-recall curve with ID as the positive class."""
    return _aupr(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))


def aupr_out(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the precision-recall curve with OOD as the positive class (scores negated)."""
    return _aupr(-_scores(ood_scores, "ood_scores"), -_scores(id_scores, "id_scores"))
