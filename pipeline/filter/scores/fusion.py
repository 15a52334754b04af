"""Fusion: one score from several fitted scorers, comparable across their scales.

Each member m is fitted on the ID boxes; its scores on ID *reference* boxes define how to
put it on a common scale, so that a single box can be scored (no within-batch ranks):

  method="rank" (default):   u_m(s) = F_m(s), the mid-rank empirical CDF of member m's ID
                             reference scores, linearly interpolated between them; beyond
                             the reference range the CDF decays exponentially (scale = the
                             reference std), so the order of far-out boxes is kept
  method="zscore":           u_m(s) = (s - mean_m) / std_m over the reference scores

    score = sum_m weight_m u_m(s_m) / sum_m weight_m                   (higher = more ID)

  method="logistic":         a combiner learnt from data rather than fixed weights:
    score = b + sum_m w_m (s_m - mean_m) / std_m                      (log-odds of ID)
  w, b: a class-balanced logistic regression (L2 `COMBINER_L2`) of the reference ID boxes
  against outlier boxes held out from the members' fit (`reference_fraction` of them), so
  the weights never see a box a member was fitted on, nor any OoD kind a filter is tested
  on. Needs outliers; this is how a crop model's score and the box-feature score become one
  margin (`members: [oe, crop]`).

Reference boxes: a seeded random `reference_fraction` of the fit set is held out from the
members' fit (default 0.2). Scoring the fit set itself would be biased for members that
memorise it: every fit box is inside a BAM box (score 0), and KNN finds each fit box at
distance 0 from itself. `reference_fraction=0` uses the fit set anyway.

`members`: names (default params) or {"name": ..., "params": {...}} dicts, at least two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import create, register, scorer_class
from pipeline.filter.scorer import Scorer, require_arrays


@dataclass
class ReferenceTable:
    """A member's scores on the reference boxes: the empirical CDF and the moments fusion maps by."""

    values: np.ndarray
    cdf: np.ndarray
    mean: float
    std: float


log = logging.getLogger(__name__)

METHODS = ("rank", "zscore", "logistic")
COMBINER_L2 = 1e-3


def logistic_combiner(x: np.ndarray, y: np.ndarray, l2: float = COMBINER_L2, iterations: int = 50
                      ) -> tuple[np.ndarray, float]:
    """(w, b) of a logistic regression of y (1 = ID) on x, each class weighing one half; Newton's method."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    sample = np.where(y == 1, 0.5 / max(1, (y == 1).sum()), 0.5 / max(1, (y == 0).sum()))
    beta = np.zeros(d + 1)
    penalty = np.r_[np.full(d, l2), 0.0]  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -50, 50)))
        grad = design.T @ (sample * (p - y)) + penalty * beta
        hess = (design * (sample * p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-12)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return beta[:d], float(beta[d])


def _member_spec(member: Any) -> dict[str, Any]:
    if isinstance(member, str):
        return {"name": member, "params": {}}
    if isinstance(member, dict) and isinstance(member.get("name"), str):
        extra = set(member) - {"name", "params"}
        if extra:
            raise GhostboxError(
                f"fusion: member {member['name']!r} has unknown keys {sorted(extra)} (use 'name', 'params')")
        return {"name": member["name"], "params": dict(member.get("params") or {})}
    raise GhostboxError(f"fusion: a member must be a method name or {{'name': ..., 'params': {{...}}}}, got {member!r}")


def ecdf_table(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique reference values and their mid-rank CDF: (count(< v) + count(== v) / 2) / n."""
    values, counts = np.unique(np.asarray(reference, np.float64), return_counts=True)
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return values, (below + 0.5 * counts) / counts.sum()


def ecdf_lookup(scores: np.ndarray, values: np.ndarray, cdf: np.ndarray, scale: float) -> np.ndarray:
    """Interpolated CDF inside the reference range, exponential tails outside it."""
    s = np.asarray(scores, np.float64)
    out = np.interp(s, values, cdf)
    low, high = s < values[0], s > values[-1]
    out[low] = cdf[0] * np.exp((s[low] - values[0]) / scale)
    out[high] = 1.0 - (1.0 - cdf[-1]) * np.exp(-(s[high] - values[-1]) / scale)
    return out


@register
class Fusion(Scorer):
    """Weighted mean of the members' scores mapped to their ID CDF (rank) or z-score."""

    name = "fusion"

    def __init__(self, members: list[Any] = ("mahalanobis", "knn"), method: str = "rank",  # type: ignore[assignment]
                 weights: list[float] | None = None, reference_fraction: float = 0.2, seed: int = 0) -> None:
        specs = [_member_spec(m) for m in members]
        if len(specs) < 2:
            raise GhostboxError(f"fusion: needs at least two members, got {len(specs)}")
        if method not in METHODS:
            raise GhostboxError(f"fusion: method must be one of {', '.join(METHODS)}, got {method!r}")
        if method == "logistic" and weights is not None:
            raise GhostboxError("fusion: method 'logistic' learns its weights; leave out 'weights'")
        if weights is not None and (len(weights) != len(specs) or min(weights) < 0 or sum(weights) <= 0):
            raise GhostboxError(
                f"fusion: weights must be {len(specs)} non-negative numbers with a positive sum, got {weights}")
        if not 0.0 <= float(reference_fraction) < 1.0:
            raise GhostboxError(f"fusion: reference_fraction must be in [0, 1), got {reference_fraction}")
        super().__init__(members=specs, method=method, weights=None if weights is None else [float(w) for w in weights],
                         reference_fraction=float(reference_fraction), seed=int(seed))
        self.members: list[Scorer] = [create(s["name"], **s["params"]) for s in specs]  # checks names and params early
        # a learnt combiner needs outliers to learn from, as do members that do
        self.needs_outliers = method == "logistic" or any(m.needs_outliers for m in self.members)  # type: ignore[misc]
        self.uses_crops = any(m.uses_crops for m in self.members)  # type: ignore[misc]
        self.uses_features = any(m.uses_features for m in self.members)  # type: ignore[misc]
        self.combiner: tuple[np.ndarray, float] | None = None

    def check_dims(self, feature_dim: int, num_classes: int) -> None:
        for member in self.members:
            member.check_dims(feature_dim, num_classes)

    def _fit(self, boxes: Detections) -> None:
        self._fit_with_outliers(boxes, None)

    def _fit_with_outliers(self, boxes: Detections, outliers: Detections | None) -> None:
        fraction = self.params["reference_fraction"]
        n_ref = int(round(len(boxes) * fraction))
        if fraction > 0 and (n_ref < 1 or len(boxes) - n_ref < 1):
            log.warning("fusion: %d ID boxes are too few to hold out a reference set; "
                        "the members' fit set is the reference", len(boxes))
            n_ref = 0
        if n_ref:
            order = np.random.default_rng(self.params["seed"]).permutation(len(boxes))
            fit_set, reference = boxes[np.sort(order[n_ref:])], boxes[np.sort(order[:n_ref])]
        else:
            fit_set = reference = boxes
        fit_outliers, held_outliers = outliers, None
        if self.params["method"] == "logistic":
            assert outliers is not None  # Scorer.fit refuses a scorer with needs_outliers and none
            n_held = int(round(len(outliers) * max(fraction, 0.2)))
            if n_held < 1 or len(outliers) - n_held < 1 or not n_ref:
                raise GhostboxError(f"fusion: method 'logistic' needs ID and outlier boxes to hold out for its "
                                    f"combiner; {len(boxes)} ID and {len(outliers)} outlier boxes are too few")
            order = np.random.default_rng(self.params["seed"] + 1).permutation(len(outliers))
            fit_outliers, held_outliers = outliers[np.sort(order[n_held:])], outliers[np.sort(order[:n_held])]
        self.tables = []
        for member in self.members:
            member.fit(fit_set, fit_outliers)
            ref = member.score(reference)
            values, cdf = ecdf_table(ref)
            std = float(ref.std())
            self.tables.append(ReferenceTable(values, cdf, float(ref.mean()), std if std > 0 else 1.0))
        if held_outliers is not None:
            x = np.vstack([self._standard(self.member_scores(reference)),
                           self._standard(self.member_scores(held_outliers))])
            y = np.r_[np.ones(len(reference)), np.zeros(len(held_outliers))]
            self.combiner = logistic_combiner(x, y)
            self.combiner_boxes = (len(reference), len(held_outliers))

    def _standard(self, raw: np.ndarray) -> np.ndarray:
        return (raw - np.array([t.mean for t in self.tables])) / np.array([t.std for t in self.tables])

    def member_scores(self, boxes: Detections) -> np.ndarray:
        """(N, members) raw scores of each member."""
        return np.stack([m.score(boxes) for m in self.members], axis=1)

    def _score(self, boxes: Detections) -> np.ndarray:
        raw = self.member_scores(boxes)
        if self.combiner is not None:
            w, b = self.combiner
            return self._standard(raw) @ w + b
        mapped = np.empty_like(raw)
        for j, table in enumerate(self.tables):
            if self.params["method"] == "rank":
                mapped[:, j] = ecdf_lookup(raw[:, j], table.values, table.cdf, table.std)
            else:
                mapped[:, j] = (raw[:, j] - table.mean) / table.std
        weights = np.ones(len(self.members)) if self.params["weights"] is None else np.asarray(self.params["weights"])
        return mapped @ weights / weights.sum()

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        members = []
        for j, (member, table) in enumerate(zip(self.members, self.tables)):
            member_arrays, member_params = member.get_state()
            arrays.update({f"members.{j}.{key}": value for key, value in member_arrays.items()})
            arrays[f"reference.{j}.values"] = table.values
            arrays[f"reference.{j}.cdf"] = table.cdf
            members.append({"name": member.name, "state": member_params,
                            "mean": table.mean, "std": table.std})
        if self.combiner is None:
            return arrays, {"members": members}
        arrays["combiner.weights"] = np.asarray(self.combiner[0], np.float64)
        combiner = {"bias": self.combiner[1], "reference_boxes": self.combiner_boxes[0],
                    "outlier_boxes": self.combiner_boxes[1]}
        return arrays, {"members": members, "combiner": combiner}

    def _load_state(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        stored = fitted["members"]
        if len(stored) != len(self.members):
            raise GhostboxError(f"fusion: stored state has {len(stored)} members, params name {len(self.members)}")
        self.members, self.tables = [], []
        for j, entry in enumerate(stored):
            prefix = f"members.{j}."
            member_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            self.members.append(scorer_class(entry["name"]).from_state(member_arrays, entry["state"]))
            values, cdf = require_arrays(arrays, self.name, f"reference.{j}.values", f"reference.{j}.cdf")
            self.tables.append(ReferenceTable(values, cdf, float(entry["mean"]), float(entry["std"])))
        if self.params["method"] == "logistic":
            combiner = fitted["combiner"]
            [w] = require_arrays(arrays, self.name, "combiner.weights")
            if w.shape != (len(self.members),):
                raise GhostboxError(f"fusion: stored combiner has {w.shape} weights for {len(self.members)} members")
            self.combiner = (np.asarray(w, np.float64), float(combiner["bias"]))
            self.combiner_boxes = (int(combiner["reference_boxes"]), int(combiner["outlier_boxes"]))
