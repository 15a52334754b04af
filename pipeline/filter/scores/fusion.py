"""Fusion: one score from several fitted scorers, comparable across their scales.

Each member m is fitted on the ID boxes; its scores on ID *reference* boxes define how to
put it on a common scale, so that a single box can be scored (no within-batch ranks):

  method="rank" (default):   u_m(s) = F_m(s), the mid-rank empirical CDF of member m's ID
                             reference scores, linearly interpolated between them; beyond
                             the reference range the CDF decays exponentially (scale = the
                             reference std), so the order of far-out boxes is kept
  method="zscore":           u_m(s) = (s - mean_m) / std_m over the reference scores

    score = sum_m weight_m u_m(s_m) / sum_m weight_m                   (higher = more ID)

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
        if method not in ("rank", "zscore"):
            raise GhostboxError(f"fusion: method must be 'rank' or 'zscore', got {method!r}")
        if weights is not None and (len(weights) != len(specs) or min(weights) < 0 or sum(weights) <= 0):
            raise GhostboxError(
                f"fusion: weights must be {len(specs)} non-negative numbers with a positive sum, got {weights}")
        if not 0.0 <= float(reference_fraction) < 1.0:
            raise GhostboxError(f"fusion: reference_fraction must be in [0, 1), got {reference_fraction}")
        super().__init__(members=specs, method=method, weights=None if weights is None else [float(w) for w in weights],
                         reference_fraction=float(reference_fraction), seed=int(seed))
        self.members: list[Scorer] = [create(s["name"], **s["params"]) for s in specs]  # checks names and params early
        self.needs_outliers = any(m.needs_outliers for m in self.members)  # type: ignore[misc]

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
        self.tables = []
        for member in self.members:
            member.fit(fit_set, outliers)
            ref = member.score(reference)
            values, cdf = ecdf_table(ref)
            std = float(ref.std())
            self.tables.append(ReferenceTable(values, cdf, float(ref.mean()), std if std > 0 else 1.0))

    def member_scores(self, boxes: Detections) -> np.ndarray:
        """(N, members) raw scores of each member."""
        return np.stack([m.score(boxes) for m in self.members], axis=1)

    def _score(self, boxes: Detections) -> np.ndarray:
        raw = self.member_scores(boxes)
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
        return arrays, {"members": members}

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
