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

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_serializer

DRIFT_WINDOW = 1000    # boxes per source the statistics look back over
DRIFT_MIN_BOXES = 200  # fewer boxes than this: no PSI yet (too noisy)
PSI_ALARM = 0.2
_FLOOR = 1e-4          # empty bins would make the log infinite


def decile_edges(margins: np.ndarray) -> list[float]:
    """The 9 inner decile edges of the calibration margins."""
    return [float(v) for v in np.quantile(np.asarray(margins, np.float64), np.linspace(0.1, 0.9, 9))]


def psi(margins: np.ndarray, edges: np.ndarray) -> float:
    """PSI of `margins` against a reference that puts an equal share in each bin between `edges`."""
    return _psi_of_counts(np.bincount(np.searchsorted(edges, margins, side="right"), minlength=len(edges) + 1))


def _psi_of_counts(counts: np.ndarray) -> float:
    actual = np.maximum(counts / max(int(counts.sum()), 1), _FLOOR)
    expected = 1.0 / len(counts)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class DriftState(BaseModel):
    """One source's drift figures; ``model_dump()`` is summary.json's ``per_source.drift`` (rounded)."""

    model_config = ConfigDict(frozen=True)

    boxes: int = Field(description="boxes in the window")
    flag_rate: float = Field(description="share of the window's boxes flagged")
    psi: float | None = Field(description="PSI of the window's margins; null: fewer than DRIFT_MIN_BOXES boxes, "
                              "or no reference deciles")
    alarm: bool = Field(description="psi above the alarm level")

    @field_serializer("flag_rate", "psi")
    def _rounded(self, value: float | None) -> float | None:
        return None if value is None else round(value, 4)


class _Window:
    """The last `size` boxes of one source as decile bins and flags in a ring, with running totals,
    so a frame costs its own boxes, not the window."""

    def __init__(self, size: int, bins: int) -> None:
        self.bins = np.zeros(size, np.int16)
        self.flags = np.zeros(size, bool)
        self.counts = np.zeros(bins, np.int64)
        self.flagged = 0
        self.n = self.pos = 0

    def push(self, bins: np.ndarray, flags: np.ndarray) -> None:
        size = len(self.bins)
        bins, flags = bins[-size:], flags[-size:]
        slots = (self.pos + np.arange(len(bins))) % size
        old = slots[(self.n == size) | (slots < self.n)]  # slots that held a box before
        self.counts -= np.bincount(self.bins[old], minlength=len(self.counts))
        self.flagged -= int(self.flags[old].sum())
        self.bins[slots], self.flags[slots] = bins, flags
        self.counts += np.bincount(bins, minlength=len(self.counts))
        self.flagged += int(flags.sum())
        self.n = min(size, self.n + len(bins))
        self.pos = (self.pos + len(bins)) % size


class DriftMonitor:
    """Rolling flag rate and margin PSI per source; bounded memory (`window` boxes a source)."""

    def __init__(self, deciles: list[float] | None, window: int = DRIFT_WINDOW, min_boxes: int = DRIFT_MIN_BOXES,
                 alarm: float = PSI_ALARM) -> None:
        self.edges = None if not deciles else np.asarray(deciles, np.float64)
        self.window, self.min_boxes, self.alarm = window, min_boxes, alarm
        self._windows: dict[str, _Window] = {}

    def update(self, source: str, margins: np.ndarray, flags: np.ndarray) -> DriftState:
        window = self._windows.get(source)
        if window is None:
            window = self._windows[source] = _Window(self.window, 1 if self.edges is None else len(self.edges) + 1)
        bins = np.zeros(len(margins), np.int64) if self.edges is None else \
            np.searchsorted(self.edges, np.asarray(margins, np.float64), side="right")
        window.push(bins, np.asarray(flags, bool))
        return self.state(source)

    def state(self, source: str) -> DriftState:
        window = self._windows.get(source)
        if window is None or window.n == 0:
            return DriftState(boxes=0, flag_rate=0.0, psi=None, alarm=False)
        value = None
        if self.edges is not None and window.n >= self.min_boxes:
            value = _psi_of_counts(window.counts)
        return DriftState(boxes=window.n, flag_rate=window.flagged / window.n, psi=value,
                          alarm=value is not None and value > self.alarm)

    def forget(self, source: str) -> None:
        """A source ended: free its window."""
        self._windows.pop(source, None)
