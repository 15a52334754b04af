"""The one interface every box-level OOD score implements.

Convention, stated once for all scorers: **higher score = more in-distribution (ID)**. A box
whose score falls below its class's threshold is flagged as a hallucination.

Life cycle, as pytorch-ood's feature-level detectors (`fit_features` / `predict_features`):

    scorer = create("knn", k=50)      # constructor params: keyword arguments with defaults
    scorer.fit(id_boxes)              # class_id = the ID class label of each box
    scorer.fit(id_boxes, outliers)    # scorers with needs_outliers (oe) also read
                                      # boxes known to be non-ID (proxy/outlier detections)
    scores = scorer.score(boxes)      # (N,) float64, higher = more ID

Persistence without pickle: `get_state()` returns `(arrays, params)`, numpy arrays plus a
JSON-able dict `{"params": <constructor params>, "fitted": <fitted scalars>}`, and
`Scorer.from_state(arrays, params)` rebuilds an equal scorer.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)


class Scorer(ABC):
    """Base class: fit on ID boxes, score boxes (higher = more ID), export/import state.

    Subclasses implement `_fit`, `_score` and, when fitting leaves arrays behind,
    `_state` / `_load_state`. The base class validates inputs, records the feature dim and
    class count seen at fit, and refuses boxes that do not match them.
    """

    name: ClassVar[str]
    #: False for scores that read only the logits (msp, maxlogit, energy): they accept any D.
    uses_features: ClassVar[bool] = True
    #: True for scores learnt from ID boxes *and* outlier boxes (outlier exposure).
    needs_outliers: ClassVar[bool] = False
    #: True for scores that read each box's pixels (`Detections.crops`), not only the head's arrays.
    uses_crops: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = params
        self.feature_dim: int | None = None
        self.num_classes: int | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # -- public interface --------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return self.num_classes is not None

    def fit(self, boxes: Detections, outliers: Detections | None = None) -> Scorer:
        """Fit on ID boxes (class_id = ID class label); returns self.

        `outliers` (boxes on non-ID objects) are read only by scorers with `needs_outliers`,
        which refuse to fit without them; the others ignore them.
        """
        boxes.validate()
        if len(boxes) == 0:
            raise GhostboxError(f"{self.name}: no ID boxes to fit on (the ID box set is empty)")
        if self.needs_outliers:
            if outliers is None or len(outliers) == 0:
                raise GhostboxError(
                    f"{self.name}: needs outlier boxes (detections on non-ID objects) to fit; "
                    f"pass some, e.g. `ghostbox calibrate --outliers SPEC` with a proxy set or an outlier pool")
            outliers.validate()
            if (outliers.feature_dim, outliers.num_classes) != (boxes.feature_dim, boxes.num_classes):
                raise GhostboxError(
                    f"{self.name}: outlier boxes have D={outliers.feature_dim}, nc={outliers.num_classes}; "
                    f"the ID boxes have D={boxes.feature_dim}, nc={boxes.num_classes}")
        self.feature_dim, self.num_classes = boxes.feature_dim, boxes.num_classes
        if self.needs_outliers:
            self._fit_with_outliers(boxes, outliers)  # type: ignore[arg-type]
        else:
            self._fit(boxes)
        return self

    def score(self, boxes: Detections) -> np.ndarray:
        """(N,) float64 scores, higher = more ID."""
        if not self.is_fitted:
            raise GhostboxError(f"{self.name}: scorer is not fitted; call fit() on ID boxes first")
        self.check_dims(boxes.feature_dim, boxes.num_classes)
        boxes.validate()
        if len(boxes) == 0:
            return np.zeros(0, np.float64)
        return np.asarray(self._score(boxes), dtype=np.float64).reshape(len(boxes))

    def check_dims(self, feature_dim: int, num_classes: int) -> None:
        """Raise GhostboxError naming both values when boxes do not match the fit."""
        if num_classes != self.num_classes:
            raise GhostboxError(
                f"{self.name}: boxes have {num_classes} class logits, the scorer was fitted on {self.num_classes}")
        if self.uses_features and feature_dim != self.feature_dim:
            raise GhostboxError(
                f"{self.name}: boxes have feature dim D={feature_dim}, the scorer was fitted on D={self.feature_dim}")

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and a JSON-able dict `{"params": ..., "fitted": ...}` that `from_state` reads."""
        if not self.is_fitted:
            raise GhostboxError(f"{self.name}: cannot export the state of an unfitted scorer")
        arrays, fitted = self._state()
        fitted = {"feature_dim": self.feature_dim, "num_classes": self.num_classes, **fitted}
        return arrays, {"params": dict(self.params), "fitted": fitted}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> Scorer:
        """Rebuild a fitted scorer from `get_state()`'s output (params = its JSON-able dict)."""
        try:
            ctor, fitted = dict(params["params"]), dict(params["fitted"])
            scorer = cls(**ctor)
            scorer.feature_dim = int(fitted.pop("feature_dim"))
            scorer.num_classes = int(fitted.pop("num_classes"))
            scorer._load_state(arrays, fitted)
        except (KeyError, TypeError, ValueError) as exc:
            raise GhostboxError(
                f"{cls.name}: stored state is incomplete or invalid ({type(exc).__name__}: {exc})") from exc
        return scorer

    # -- for subclasses ----------------------------------------------------------------

    @abstractmethod
    def _fit(self, boxes: Detections) -> None: ...

    def _fit_with_outliers(self, boxes: Detections, outliers: Detections) -> None:
        raise NotImplementedError(f"{self.name} declares needs_outliers but does not implement _fit_with_outliers")

    @abstractmethod
    def _score(self, boxes: Detections) -> np.ndarray: ...

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {}, {}

    def _load_state(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        """Optional hook: restore what `_state` stored; scorers that store nothing keep this no-op."""
        return None


def require_arrays(arrays: dict[str, np.ndarray], scorer: str, *names: str) -> list[np.ndarray]:
    """The named arrays of a stored state, or GhostboxError naming the missing one."""
    missing = [n for n in names if n not in arrays]
    if missing:
        raise GhostboxError(f"{scorer}: stored state lacks array(s) {', '.join(missing)}")
    return [np.asarray(arrays[n]) for n in names]
