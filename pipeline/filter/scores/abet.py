"""AbeT: Ablated Learned Temperature Energy (LeVine et al., 2024).

*Learning to Detect Out-of-Distribution Samples with Ablated Learned Temperature Energy*
(W. LeVine, B. Pikus, J. Phillips, B. Norman, F. Amat Gil, S. Hendryx),
https://arxiv.org/abs/2401.12129

A small head on the frozen box features h (optionally centred on the ID mean, `center`):

    T(h)     = sigmoid(BN(w . h + b)) + eps                 learned temperature
    f_c(h)   = cos(h, w_c) / T(h)                            cosine classifier
    score(h) = logsumexp_c f_c(h)                            (higher = more ID)

trained with cross-entropy on the ID class labels. Energy with a learned temperature
would be T(h) logsumexp_c f_c; AbeT ablates the leading T(h).

Training: Adam, minibatches, `epochs` passes, on the CPU; seeded (`seed`) inside
`torch.random.fork_rng`, so the global torch RNG is untouched and the same seed gives the
same weights. Scoring is numpy: the batch norm is folded into w, b (eval mode: running
statistics), equal to the torch head within float32 rounding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer, require_arrays
from pipeline.filter.scores.feature_math import l2_normalise
from pipeline.filter.scores.logit_math import logsumexp

log = logging.getLogger(__name__)


def _build_head(feature_dim: int, num_classes: int) -> Any:
    import torch  # imported when used: a filter stage scoring other methods needs no torch
    from torch import nn

    class AbetHead(nn.Module):
        def __init__(self, eps: float = 1e-4) -> None:
            super().__init__()
            self.eps = eps
            self.temperature = nn.Linear(feature_dim, 1)
            self.norm = nn.BatchNorm1d(1)
            self.class_weight = nn.Parameter(torch.randn(num_classes, feature_dim) / feature_dim**0.5)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            t = torch.sigmoid(self.norm(self.temperature(h))) + self.eps
            cos = nn.functional.normalize(h, dim=1) @ nn.functional.normalize(self.class_weight, dim=1).T
            return cos / t

    return AbetHead


@register
class AbeT(Scorer):
    """logsumexp_c cos(h, w_c) / T(h) of a learned-temperature cosine head on the box features."""

    name = "abet"

    def __init__(self, epochs: int = 8, batch_size: int = 256, lr: float = 0.01, weight_decay: float = 0.0,
                 eps: float = 1e-4, center: bool = True, seed: int = 0) -> None:
        if int(epochs) < 1 or int(batch_size) < 2:
            raise GhostboxError(f"abet: need epochs >= 1 and batch_size >= 2, got {epochs}, {batch_size}")
        if not float(lr) > 0 or not float(eps) > 0:
            raise GhostboxError(f"abet: lr and eps must be > 0, got {lr}, {eps}")
        super().__init__(epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                         weight_decay=float(weight_decay), eps=float(eps), center=bool(center), seed=int(seed))
        self._head: Any = None  # the trained torch module, kept after fit (not persisted)

    def _fit(self, boxes: Detections) -> None:
        import torch

        counts = boxes.class_counts()
        if np.count_nonzero(counts) < 2:
            log.warning("abet: the ID boxes hold %d class(es); the classifier has nothing to separate "
                        "and the learned temperature carries the score", np.count_nonzero(counts))
        self.center = boxes.box_features.mean(axis=0).astype(np.float32) if self.params["center"] \
            else np.zeros(boxes.feature_dim, np.float32)
        feats = torch.from_numpy(boxes.box_features - self.center)
        labels = torch.from_numpy(boxes.class_id)
        p = self.params
        batch = min(p["batch_size"], len(boxes))
        # Minibatches of a few hundred rows: intra-op threads cost more in start-up and
        # contention than they save (measured: 8 epochs over 50k boxes take ~1.4 s on one
        # thread, ~2 min on two busy cores). The setting is process-wide: restore it after.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            head = self._train(feats, labels, batch)
        finally:
            torch.set_num_threads(threads)
        self._head = head
        with torch.no_grad():
            norm = head.norm
            gain = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # fold the batch norm into w, b
            self.temp_weight = (head.temperature.weight[0] * gain).numpy().astype(np.float64)
            self.temp_bias = ((head.temperature.bias - norm.running_mean) * gain + norm.bias).numpy().astype(np.float64)
            self.class_weight = l2_normalise(head.class_weight.numpy(), np.float64)

    def _train(self, feats: Any, labels: Any, batch: int) -> Any:
        import torch

        p = self.params
        n, dim = feats.shape
        num_classes = self.num_classes or 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p["seed"])
            head = _build_head(dim, num_classes)(eps=p["eps"])
            order_rng = torch.Generator().manual_seed(p["seed"])
            optim = torch.optim.Adam(head.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
            loss_fn = torch.nn.CrossEntropyLoss()
            head.train()
            last_loss = torch.tensor(float("nan"))
            for _ in range(p["epochs"]):
                order = torch.randperm(n, generator=order_rng)
                for start in range(0, n, batch):
                    idx = order[start:start + batch]
                    if len(idx) < 2:
                        continue  # batch norm needs two rows
                    loss = loss_fn(head(feats[idx]), labels[idx])
                    optim.zero_grad(set_to_none=True)
                    loss.backward()
                    optim.step()
                    last_loss = loss.detach()
            head.eval()
        self.final_loss = float(last_loss) if torch.isfinite(last_loss) else None
        return head

    def _score(self, boxes: Detections) -> np.ndarray:
        h = boxes.box_features.astype(np.float64) - self.center
        t = 1.0 / (1.0 + np.exp(-(h @ self.temp_weight + self.temp_bias))) + self.params["eps"]
        cos = l2_normalise(h, np.float64) @ self.class_weight.T
        return logsumexp(cos / t[:, None])

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"center": self.center, "temp_weight": self.temp_weight, "temp_bias": self.temp_bias,
                 "class_weight": self.class_weight}, {"final_loss": self.final_loss})

    def _load_state(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        self.center, self.temp_weight, self.temp_bias, self.class_weight = require_arrays(
            arrays, self.name, "center", "temp_weight", "temp_bias", "class_weight")
        self.temp_bias = np.asarray(self.temp_bias, np.float64).reshape(1)
        self.final_loss = fitted.get("final_loss")
