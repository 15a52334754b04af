"""Is the footage still like what the filter was calibrated on? A rolling check per source.

Two numbers over the last `window` boxes of one source:
- the flag rate (share of boxes flagged): near the nominal 5% plus the share of
  hallucinations on a camera that looks like its calibration;
- the Population Stability Index of the boxes' margins (score minus their own threshold)
  against the calibration boxes' margins, over the calibration's deciles:

      PSI = sum_i (a_i - e_i) * ln(a_i / e_i),   e_i = 0.1 for each decile bin,
                                                 a_i = the window's share in bin i

  0 when the window spreads over the deciles as the calibration did; above 0.2 is the
  usual alarm (new light, a moved camera, a new kind of object). Margins, not raw scores, so
  the comparison holds across classes and confidence bins, each with its own threshold.

The calibration's deciles are stored in the filter file (`Calibration.margin_deciles`);
a filter from before them gets the flag rate only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

DRIFT_WINDOW = 1000    # boxes per source the statistics look back over
DRIFT_MIN_BOXES = 200  # fewer boxes than this: no PSI yet (too noisy)
PSI_ALARM = 0.2
_FLOOR = 1e-4          # empty bins would make the log infinite


def decile_edges(margins: np.ndarray) -> list[float]:
    """The 9 inner decile edges of the calibration margins."""
    return [float(v) for v in np.quantile(np.asarray(margins, np.float64), np.linspace(0.1, 0.9, 9))]


def psi(margins: np.ndarray, edges: np.ndarray) -> float:
    """PSI of `margins` against a reference that puts an equal share in each bin between `edges`."""
    counts = np.bincount(np.searchsorted(edges, margins, side="right"), minlength=len(edges) + 1)
    actual = np.maximum(counts / max(len(margins), 1), _FLOOR)
    expected = 1.0 / (len(edges) + 1)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class DriftState:
    boxes: int
    flag_rate: float
    psi: float | None  # None: fewer than DRIFT_MIN_BOXES boxes, or no reference deciles
    alarm: bool

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return {"boxes": self.boxes, "flag_rate": round(self.flag_rate, 4),
                "psi": None if self.psi is None else round(self.psi, 4), "alarm": self.alarm}


class DriftMonitor:
    """Rolling flag rate and margin PSI per source; bounded memory (`window` boxes a source)."""

    def __init__(self, deciles: list[float] | None, window: int = DRIFT_WINDOW, min_boxes: int = DRIFT_MIN_BOXES,
                 alarm: float = PSI_ALARM) -> None:
        self.edges = None if not deciles else np.asarray(deciles, np.float64)
        self.window, self.min_boxes, self.alarm = window, min_boxes, alarm
        self._margins: dict[str, deque[float]] = {}
        self._flags: dict[str, deque[bool]] = {}

    def update(self, source: str, margins: np.ndarray, flags: np.ndarray) -> DriftState:
        kept_m = self._margins.setdefault(source, deque(maxlen=self.window))
        kept_f = self._flags.setdefault(source, deque(maxlen=self.window))
        kept_m.extend(np.asarray(margins, np.float64).tolist())
        kept_f.extend(np.asarray(flags, bool).tolist())
        return self.state(source)

    def state(self, source: str) -> DriftState:
        flags = self._flags.get(source, ())
        n = len(flags)
        rate = float(np.mean(np.fromiter(flags, bool, n))) if n else 0.0
        value = None
        if self.edges is not None and n >= self.min_boxes:
            value = psi(np.fromiter(self._margins[source], np.float64, n), self.edges)
        return DriftState(n, rate, value, value is not None and value > self.alarm)

    def forget(self, source: str) -> None:
        """A source ended: free its window."""
        self._margins.pop(source, None)
        self._flags.pop(source, None)
