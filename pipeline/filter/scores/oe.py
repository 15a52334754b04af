"""OE: an ID-vs-outlier classifier on the box features (outlier exposure).

Outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019) teaches a model what "not
ID" looks like from auxiliary outliers; VOS (Du et al., ICLR 2022) and M-Hood (IROS 2025)
apply the idea to detectors, with an uncertainty head on box features and with proxy
fine-tuning. `oe` is the post-hoc form: the detector stays frozen and a small head is fitted
on its box features to tell ID boxes from outlier boxes, i.e. detections on proxy images or
an outlier pool (never the OoD kinds a filter is tested on).

    x        = [h, energy(z) / 10]       box features h, energy = logsumexp of the logits z
    x'       = (x - mu) / sigma          standardised on the fit boxes (`standardize`)
    logit(x) = w . x' + b                 (`hidden` = 0, logistic regression)
             = w2 . relu(W1 x' + b1) + b2 (`hidden` > 0, one hidden layer)
    score    = logit(x)                   log-odds of ID; higher = more ID

Loss: cross-entropy with the two sides weighted equally (ID boxes usually outnumber the
outliers), plus `l2` / 2 * ||weights||^2; full-batch L-BFGS, seeded (`seed`), so the same
boxes give the same head. `l2="auto"` (default) picks the penalty from L2_GRID by 3-fold
cross-validation on the fit boxes themselves (held-out balanced log loss; ties go to the
stronger penalty), so choosing it never looks at the OoD data a filter is tested on. With
box_features "head+roi" (RoI-aligned neck features) it is the strongest score on the street
world; with the 32-d head feature alone it adds little to energy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer, require_arrays
from pipeline.filter.scores.logit_math import logsumexp

L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3)
CV_FOLDS = 3


def _inputs(boxes: Detections) -> np.ndarray:
    energy = logsumexp(boxes.logits.astype(np.float64), axis=1)
    return np.hstack([boxes.box_features.astype(np.float64), energy[:, None] / 10.0])


@register
class OutlierExposure(Scorer):
    """Log-odds of ID from a logistic (or one-hidden-layer) head fitted on ID vs outlier boxes."""

    name = "oe"
    needs_outliers = True

    def __init__(self, hidden: int = 0, l2: float | str = "auto", standardize: bool = False, max_iter: int = 500,
                 seed: int = 0) -> None:
        if int(hidden) < 0:
            raise GhostboxError(f"oe: hidden must be >= 0, got {hidden}")
        if l2 != "auto":
            try:
                l2 = float(l2)
            except (TypeError, ValueError):
                raise GhostboxError(f"oe: l2 must be 'auto' or a number >= 0, got {l2!r}") from None
            if not l2 >= 0:
                raise GhostboxError(f"oe: l2 must be >= 0, got {l2}")
        if int(max_iter) < 1:
            raise GhostboxError(f"oe: max_iter must be >= 1, got {max_iter}")
        super().__init__(hidden=int(hidden), l2=l2, standardize=bool(standardize), max_iter=int(max_iter),
                         seed=int(seed))

    def _fit(self, boxes: Detections) -> None:  # pragma: no cover - Scorer.fit routes to _fit_with_outliers
        raise GhostboxError("oe: needs outlier boxes to fit")

    def _fit_with_outliers(self, boxes: Detections, outliers: Detections) -> None:
        x = np.vstack([_inputs(boxes), _inputs(outliers)])
        y = np.r_[np.ones(len(boxes)), np.zeros(len(outliers))]
        l2 = self.params["l2"]
        self.cv_loss: dict[str, float] = {}
        if l2 == "auto":
            l2 = self._cross_validate(x, y)
        self.l2_used = float(l2)
        self._train(x, y, self.l2_used)
        self.fit_counts = (len(boxes), len(outliers))

    def _cross_validate(self, x: np.ndarray, y: np.ndarray) -> float:
        folds = np.empty(len(y), np.int64)
        rng = np.random.default_rng(self.params["seed"])
        for label in (0, 1):  # stratified: each fold holds its share of both sides
            idx = np.flatnonzero(y == label)
            folds[idx] = rng.permutation(len(idx)) % CV_FOLDS
        if min(np.bincount(folds[y == 0], minlength=CV_FOLDS).min(),
               np.bincount(folds[y == 1], minlength=CV_FOLDS).min()) == 0:
            return L2_GRID[1]  # too few boxes to hold any out: a middling penalty
        best, best_loss = L2_GRID[-1], np.inf
        for l2 in sorted(L2_GRID, reverse=True):  # strongest first: ties keep the stronger penalty
            losses = []
            for k in range(CV_FOLDS):
                train, held = folds != k, folds == k
                self._train(x[train], y[train], l2)
                logit = self._forward((x[held] - self.mean) / self.scale)
                yk = y[held]
                losses.append(0.5 * np.mean(np.logaddexp(0, -logit[yk == 1]))
                              + 0.5 * np.mean(np.logaddexp(0, logit[yk == 0])))
            loss = float(np.mean(losses))
            self.cv_loss[f"{l2:g}"] = round(loss, 6)
            if loss < best_loss - 1e-4:
                best, best_loss = l2, loss
        return best

    def _train(self, x: np.ndarray, y: np.ndarray, l2: float) -> None:
        import torch  # imported when used: scoring is numpy; only fitting trains with torch

        n_id, n_out = int((y == 1).sum()), int((y == 0).sum())
        if self.params["standardize"]:
            self.mean, self.scale = x.mean(0), x.std(0)
            self.scale[self.scale < 1e-6] = 1.0
        else:
            self.mean, self.scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
        xs = torch.from_numpy((x - self.mean) / self.scale).float()
        yt = torch.from_numpy(y).float()
        # each side weighs one half, however many boxes it has
        weight = torch.from_numpy(np.where(y == 1, 0.5 / n_id, 0.5 / n_out)).float()
        hidden = self.params["hidden"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params["seed"])
            if hidden:
                net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                                          torch.nn.Linear(hidden, 1))
            else:
                linear = torch.nn.Linear(x.shape[1], 1)
                torch.nn.init.zeros_(linear.weight)
                torch.nn.init.zeros_(linear.bias)
                net = torch.nn.Sequential(linear)
        weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
        optimizer = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=self.params["max_iter"],
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            logit = net(xs).squeeze(1)
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logit, yt, reduction="none") * weight).sum()
            loss = loss + 0.5 * l2 * sum((w * w).sum() for w in weights)
            loss.backward()
            return loss

        optimizer.step(closure)
        layers = [m for m in net if isinstance(m, torch.nn.Linear)]
        self.layers = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in layers]

    def _forward(self, h: np.ndarray) -> np.ndarray:
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]

    def _score(self, boxes: Detections) -> np.ndarray:
        return self._forward((_inputs(boxes) - self.mean) / self.scale)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"mean": self.mean, "scale": self.scale}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        return arrays, {"layers": len(self.layers), "id_boxes": self.fit_counts[0], "outlier_boxes": self.fit_counts[1],
                        "l2_used": self.l2_used, "cv_loss": self.cv_loss}

    def _load_state(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        n = int(fitted["layers"])
        self.mean, self.scale = require_arrays(arrays, self.name, "mean", "scale")
        self.layers = []
        for i in range(n):
            w, b = require_arrays(arrays, self.name, f"w{i}", f"b{i}")
            self.layers.append((w, b))
        self.fit_counts = (int(fitted.get("id_boxes", 0)), int(fitted.get("outlier_boxes", 0)))
        self.l2_used = float(fitted.get("l2_used", 0.0))
        self.cv_loss = dict(fitted.get("cv_loss", {}))
        d = int(self.feature_dim or 0) + 1  # set from the file's header before this runs
        if self.mean.shape != (d,) or self.scale.shape != (d,) or self.layers[0][0].shape[1] != d \
                or self.layers[-1][0].shape[0] != 1:
            raise GhostboxError(f"oe: stored arrays do not fit feature dim D={self.feature_dim}")
