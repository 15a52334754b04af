"""Synthetic box sets with known answers, for tests, benchmarks and demos.

`ToyBoxWorld` draws box features from Gaussian clusters, one per ID class, that share a
low-rank covariance (as real features do) plus small isotropic noise; the logits are an
exact per-level linear map of the features, as in a YOLO Detect head (logits = W_l h + b_l).
OOD boxes come from clusters at new centres (objects of unseen classes) and are labelled
with the class the logits predict, as a detector would report them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.detections import Detections

CROP_PX = 12  # side of a toy box's crop


@dataclass
class ToyBoxWorld:
    num_classes: int = 4
    feature_dim: int = 64
    num_levels: int = 3
    separation: float = 6.0   # distance scale of the class centres
    latent_rank: int = 8      # rank of the shared within-class covariance
    noise: float = 0.3        # isotropic noise on top of it
    seed: int = 0
    centres: np.ndarray = field(init=False)
    mixing: np.ndarray = field(init=False)
    palette: np.ndarray = field(init=False)  # (D, 6) features -> the two colours of a toy crop
    weights: np.ndarray = field(init=False)  # (L, nc, D)
    biases: np.ndarray = field(init=False)   # (L, nc)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        d, nc = self.feature_dim, self.num_classes
        self.offset = rng.normal(size=d) * 2.0  # features are not centred at 0
        self.centres = self.offset + rng.normal(size=(nc, d)) * self.separation / np.sqrt(d) * 2
        self.mixing = rng.normal(size=(self.latent_rank, d)) / np.sqrt(self.latent_rank)
        # drawn from its own stream: adding crops leaves every feature and logit as before
        self.palette = np.random.default_rng([self.seed, 1]).normal(size=(d, 6)) / np.sqrt(d) / self.separation * 2
        direction = self.centres - self.centres.mean(axis=0)
        base = direction / np.square(np.linalg.norm(direction, axis=1, keepdims=True)) * 6.0
        self.weights = np.stack([base + rng.normal(size=(nc, d)) * 0.02 for _ in range(self.num_levels)])
        self.biases = np.stack([-self.weights[lv] @ self.centres.mean(axis=0) - 1.0 + rng.normal(size=nc) * 0.1
                                for lv in range(self.num_levels)])

    def _draw(self, centres: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        which = rng.integers(0, len(centres), n)
        feats = (centres[which] + rng.normal(size=(n, self.latent_rank)) @ self.mixing
                 + rng.normal(size=(n, self.feature_dim)) * self.noise)
        return feats, which

    def _boxes(self, feats: np.ndarray, class_id: np.ndarray | None, rng: np.random.Generator) -> Detections:
        level = rng.integers(0, self.num_levels, len(feats))
        feats32 = feats.astype(np.float32)
        logits = np.einsum("ncd,nd->nc", self.weights[level], feats32.astype(np.float64)) + self.biases[level]
        if class_id is None:
            class_id = logits.argmax(axis=1)
        boxes = Detections.from_head(feats32, logits.astype(np.float32), class_id, level.astype(np.int8))
        return boxes.with_meta(crops=self._crops(feats, rng))

    def _crops(self, feats: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """A CROP_PX square BGR crop per box: a two-colour pattern read off the box's features, so a
        crop model can tell the clusters apart from pixels alone (scores that read crops)."""
        colours = np.tanh((feats - self.offset) @ self.palette)  # (n, 6) in (-1, 1)
        top, bottom = (127.5 * (1 + colours[:, :3])), (127.5 * (1 + colours[:, 3:]))
        half = CROP_PX // 2
        crops = np.empty((len(feats), CROP_PX, CROP_PX, 3), np.float64)
        crops[:, :half] = top[:, None, None, :]
        crops[:, half:] = bottom[:, None, None, :]
        crops += rng.normal(0, 6, crops.shape)
        return list(np.clip(crops, 0, 255).astype(np.uint8))

    def id_boxes(self, n: int, seed: int = 1) -> Detections:
        """n ID boxes; class_id is the true class."""
        rng = np.random.default_rng(seed)
        feats, which = self._draw(self.centres, n, rng)
        return self._boxes(feats, which, rng)

    def ood_boxes(self, n: int, seed: int = 2, mode: str = "far", clusters: int = 3, distance: float = 1.0,
                  sample_seed: int | None = None) -> Detections:
        """n OOD boxes from `clusters` new centres; class_id = argmax logit, as a detector reports.

        mode "far": centres drawn like the ID centres (unseen classes; the logits see them).
        mode "hidden": ID centres moved by `distance` x separation along directions the logit
        layers of all levels cannot see (their null space): logit-based scores are blind to
        these, feature-based scores are not.
        `seed` places the centres; `sample_seed` (default: `seed`) draws the boxes around
        them, so two calls can sample the same OOD kinds twice.
        """
        rng = np.random.default_rng(seed)
        d = self.feature_dim
        mid = self.centres.mean(axis=0)
        if mode == "far":
            new = self.offset + rng.normal(size=(clusters, d)) * self.separation / np.sqrt(d) * 2
            new = mid + (new - mid) * distance
        elif mode == "hidden":
            stacked = self.weights.reshape(-1, d)
            _, _, vt = np.linalg.svd(stacked)
            null = vt[np.linalg.matrix_rank(stacked):]  # rows spanning the null space of every W_l
            steps = rng.normal(size=(clusters, len(null))) @ null
            steps *= distance * self.separation / np.linalg.norm(steps, axis=1, keepdims=True)
            new = self.centres[rng.integers(0, self.num_classes, clusters)] + steps
        else:
            raise ValueError(f"mode must be 'far' or 'hidden', got {mode!r}")
        if sample_seed is not None:
            rng = np.random.default_rng([seed, sample_seed])
        feats, _ = self._draw(new, n, rng)
        return self._boxes(feats, None, rng)
