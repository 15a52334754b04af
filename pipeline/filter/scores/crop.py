"""crop: a (K + 1)-way CNN on each box's pixels, asked whether the crop shows the class the detector said.

    z        = crop_net(letterbox(crop))            K ID-class logits and one "not ID" logit
    score    = z_c - logsumexp(z_j, j != c)         c = the detector's class for the box:
                                                    log-odds that the crop shows class c
A bench the detector calls a car scores low twice over: the crop model finds it neither a car
nor any ID class. The network (`crop_net`) is trained on the ID boxes' crops against the
outlier boxes' crops (`needs_outliers`, as `oe`) and crops synthesised from the ID ones
(`synth`). It reads `Detections.crops`, cut from the source frame at its own resolution: a
filter with a crop model needs the workers to send crops (`workers.crops` not "none").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.crop_net import CROP_SIZE, SYNTH_KINDS, WIDTH, CropNet, letterbox_crops, synth_outliers, train_net
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer
from pipeline.filter.scores.logit_math import logsumexp


def crops_of(boxes: Detections, what: str) -> list[np.ndarray]:
    if boxes.crops is None:
        raise GhostboxError(
            f"crop: the {what} carry no crops; the crop model reads each box's pixels. In a stream, let the "
            f"workers send them (workers.crops: auto, raw or jpeg; not none); in Python, detect with crops=True")
    return boxes.crops


@register
class CropModel(Scorer):
    """Log-odds, from a small CNN on the box's crop, that the crop shows the detector's class."""

    name = "crop"
    uses_features = False
    uses_crops = True
    needs_outliers = True

    def __init__(self, size: int = CROP_SIZE, width: int = WIDTH, epochs: int = 12,
                 synth: list[str] = list(SYNTH_KINDS), synth_ratio: float = 0.5, seed: int = 0) -> None:  # noqa: B006
        if int(size) < 8 or int(size) % 4:
            raise GhostboxError(f"crop: size must be a multiple of 4 and >= 8, got {size}")
        if int(width) < 1 or int(epochs) < 1:
            raise GhostboxError(f"crop: width and epochs must be >= 1, got {width}, {epochs}")
        unknown = set(synth) - set(SYNTH_KINDS)
        if unknown:
            raise GhostboxError(f"crop: unknown synth kinds {sorted(unknown)}; known: {', '.join(SYNTH_KINDS)}")
        if not 0 <= float(synth_ratio) <= 10:
            raise GhostboxError(f"crop: synth_ratio must be in [0, 10], got {synth_ratio}")
        super().__init__(size=int(size), width=int(width), epochs=int(epochs), synth=list(synth),
                         synth_ratio=float(synth_ratio), seed=int(seed))

    def _fit(self, boxes: Detections) -> None:  # pragma: no cover - Scorer.fit routes to _fit_with_outliers
        raise GhostboxError("crop: needs outlier boxes to fit")

    def _fit_with_outliers(self, boxes: Detections, outliers: Detections) -> None:
        size, nc = self.params["size"], int(self.num_classes or 0)
        x_id = letterbox_crops(crops_of(boxes, "ID boxes"), size)
        y_id = boxes.class_id
        x_out = letterbox_crops(crops_of(outliers, "outlier boxes"), size)
        rng = np.random.default_rng(self.params["seed"])
        per_kind = int(round(len(x_id) * self.params["synth_ratio"] / max(1, len(self.params["synth"]))))
        x_synth = synth_outliers(x_id, y_id, self.params["synth"], per_kind, rng)
        x = np.concatenate([x_id, x_out, x_synth])
        y = np.r_[y_id, np.full(len(x_out) + len(x_synth), nc)]
        self.arrays = train_net(x, y, nc + 1, self.params["width"], self.params["epochs"], self.params["seed"])
        self.net = CropNet(self.arrays, nc + 1, self.params["width"], size)
        self.fit_counts = {"id_crops": len(x_id), "outlier_crops": len(x_out), "synthetic_crops": len(x_synth)}

    def crop_logits(self, boxes: Detections) -> np.ndarray:
        """(N, K + 1) logits of the crop model."""
        return self.net.logits(letterbox_crops(crops_of(boxes, "boxes to score"), self.params["size"]))

    def _score(self, boxes: Detections) -> np.ndarray:
        z = self.crop_logits(boxes)
        rows = np.arange(len(z))
        c = np.clip(boxes.class_id, 0, z.shape[1] - 2)
        others = z.copy()
        others[rows, c] = -np.inf
        return z[rows, c] - logsumexp(others)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {f"net.{k}": v for k, v in self.arrays.items()}, dict(self.fit_counts)

    def _load_state(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        self.arrays = {k[len("net."):]: v for k, v in arrays.items() if k.startswith("net.")}
        self.net = CropNet(self.arrays, int(self.num_classes or 0) + 1, self.params["width"], self.params["size"])
        self.fit_counts = {k: int(v) for k, v in fitted.items()}
