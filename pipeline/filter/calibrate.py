"""Thresholds per class and confidence bin at a target ID true-positive rate, from ID calibration boxes.

A score's ID distribution moves with the detector's confidence (on the street world the
`oe` score's median rises from 3.4 at conf 0.25-0.4 to 10.2 above 0.8), so one threshold per
class flags low-confidence ID boxes far more often than 5%, and the flag rate on new footage
follows its confidence mix. As Mondrian conformal prediction does per group, every
(class, confidence bin) cell gets its own threshold:

    threshold[c, b] = the k-th smallest ID score in cell (c, b),  k = max(1, round((1 - tpr) (n + 1)))

(`flag_threshold`): a new box like them falls below the k-th smallest of n with probability
k / (n + 1), the split-conformal rank argument, so about 5% of new ID boxes are flagged. The
in-sample rule (the largest t keeping >= 95% of the n boxes, as FPR95 is defined) flags
(floor(0.05 n) + 1) / (n + 1) of new ones: 9.5% for a cell of 20 boxes, 5.9% for 100. A cell
with fewer than `min_boxes` boxes takes its neighbouring bins' boxes too, widening until it
has enough (scores move with confidence,
so the nearest confidences stand in best); a class with fewer than `min_boxes` boxes in all
takes the global threshold (or the `fallback`'s). The bins are
[calibration conf, e1), [e1, e2), ..., [ek, 1] with inner edges `conf_edges`.

The calibration boxes must be disjoint from the fit boxes (a KNN bank contains its fit
boxes, a BAM box encloses them) and, for video, not the same objects a frame later:
`splits.grouped_split` keeps whole images or contiguous time blocks on one side.

`held_out_check` says how sure the thresholds are: K-fold over the same groups, thresholds
from K-1 folds, the flag rate on the held-out fold, pooled, with its Clopper-Pearson 95%
interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.drift import decile_edges
from pipeline.filter.ood_metrics import TARGET_TPR
from pipeline.filter.scorer import Scorer

log = logging.getLogger(__name__)

MIN_BIN_BOXES = 20  # boxes a confidence bin needs before it has a threshold of its own
CONF_EDGES = (0.4, 0.6, 0.8)  # inner edges of the confidence bins
HELD_OUT_FOLDS = 5
Shape = Literal["overall", "per-bin"]
SHAPES: tuple[Shape, ...] = ("overall", "per-bin")
# What "keep 95%" means by default: one threshold over all boxes ("overall"), or one per class and
# confidence bin ("per-bin", 95% in every bin). Chosen by measurement (docs/benchmarks/streets.md): on
# the seed-0 world's images the bundled filter with one overall threshold flags 4.9% of ID true
# positives and removes 86.6% of near- and 97.7% of far-OoD hallucinations, against 4.7%, 73.4% and
# 82.8% per bin (per-bin thresholds give low-confidence bins, where most hallucinations sit, low
# thresholds); on the development streets it catches 52% against 31% and holds 5 +- 2 points on 4 of 4.
THRESHOLD_SHAPE: Shape = "overall"


@dataclass(frozen=True)
class ClassCalibration:
    class_id: int
    name: str
    num_boxes: int          # ID calibration boxes of this class
    threshold: float
    fell_back: bool         # True: too few boxes, the global threshold is used
    kept_fraction: float | None  # fraction of this class's calibration boxes kept (None: no boxes)
    bin_boxes: tuple[int, ...] = ()  # boxes per confidence bin; a bin below min_boxes uses `threshold`
    fell_back_to: str = ""  # "reference": too few boxes here, the reference calibration's thresholds are used


@dataclass(frozen=True)
class Calibration:
    per_class: np.ndarray   # (nc,) float64, threshold by predicted class
    global_threshold: float
    target_tpr: float
    min_boxes: int
    num_boxes: int
    classes: tuple[ClassCalibration, ...]
    conf_edges: tuple[float, ...] = ()  # inner edges of the confidence bins; () = one bin
    # (nc, bins) float64; empty (the default) = per_class in every bin
    per_bin: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    held_out: dict[str, Any] | None = field(default=None, compare=False)
    # deciles of the calibration boxes' margins (score - own threshold): the drift reference
    margin_deciles: tuple[float, ...] = ()
    # set by `offset_calibration`: the reference's thresholds moved by this much (None: per-cell quantiles)
    offset: float | None = None
    # which thresholds judge a box: "per-bin" its cell's, "overall" the global one; both are kept (and
    # moved together), so a filter can be judged either way (files from before the field: per-bin)
    shape: str = "per-bin"

    def __post_init__(self) -> None:
        if self.per_bin.size == 0:
            object.__setattr__(self, "per_bin", np.asarray(self.per_class, np.float64)[:, None].repeat(
                len(self.conf_edges) + 1, axis=1))
        if self.per_bin.shape != (len(self.per_class), len(self.conf_edges) + 1):
            raise GhostboxError(f"calibration: per-bin thresholds of shape {self.per_bin.shape} for "
                                f"{len(self.per_class)} classes and {len(self.conf_edges) + 1} confidence bins")

    def rebinned(self, conf_edges: Sequence[float]) -> Calibration:
        """These thresholds on other confidence bins (each new bin takes its class's threshold when the bins differ)."""
        edges = tuple(float(e) for e in conf_edges)
        if edges == self.conf_edges:
            return self
        per_bin = np.asarray(self.per_class, np.float64)[:, None].repeat(len(edges) + 1, axis=1)
        return Calibration(self.per_class, self.global_threshold, self.target_tpr, self.min_boxes, self.num_boxes,
                           self.classes, edges, per_bin, self.held_out, self.margin_deciles, self.offset, self.shape)

    def thresholds_for(self, class_id: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """The threshold of every box: the global one ("overall"), or by its predicted class and confidence bin."""
        if self.shape == "overall":
            return np.full(len(np.asarray(class_id)), self.global_threshold, np.float64)
        return self.per_bin[np.asarray(class_id, np.int64), conf_bins(confidence, self.conf_edges)]

    def with_shape(self, shape: str) -> Calibration:
        """These thresholds judged in another shape (the same cells and global threshold)."""
        if shape not in SHAPES:
            raise GhostboxError(f"thresholds must be one of {', '.join(SHAPES)}, got {shape!r}")
        return replace(self, shape=shape)

    def to_json(self) -> dict[str, Any]:
        return {
            "target_tpr": self.target_tpr,
            "min_boxes": self.min_boxes,
            "num_boxes": self.num_boxes,
            "global_threshold": self.global_threshold,
            "conf_edges": list(self.conf_edges),
            "classes": [{**vars(c), "bin_boxes": list(c.bin_boxes)} for c in self.classes],
            "held_out": self.held_out,
            "margin_deciles": list(self.margin_deciles),
            "offset": self.offset,
            "shape": self.shape,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], per_bin: np.ndarray | None = None) -> Calibration:
        classes = tuple(ClassCalibration(**{**c, "bin_boxes": tuple(c.get("bin_boxes", ()))})
                        for c in data["classes"])
        return cls(per_class=np.array([c.threshold for c in classes], np.float64),
                   global_threshold=float(data["global_threshold"]), target_tpr=float(data["target_tpr"]),
                   min_boxes=int(data["min_boxes"]), num_boxes=int(data["num_boxes"]), classes=classes,
                   conf_edges=tuple(float(e) for e in data.get("conf_edges", ())),
                   per_bin=np.zeros((0, 0)) if per_bin is None else np.asarray(per_bin, np.float64),
                   held_out=data.get("held_out"),
                   margin_deciles=tuple(float(v) for v in data.get("margin_deciles", ())),
                   offset=data.get("offset"), shape=str(data.get("shape", "per-bin")))

    def summary(self) -> str:
        """One line per class: boxes, threshold, kept fraction, fallback; then the held-out check."""
        bins = "one confidence bin" if not self.conf_edges else \
            "confidence bins split at " + ", ".join(f"{e:g}" for e in self.conf_edges)
        if self.shape == "overall":
            bins = (f"one overall threshold {self.global_threshold:.6g} judges every box (the thresholds per class "
                    "and confidence bin below are kept, for --thresholds per-bin)")
        lines = [f"target ID TPR {self.target_tpr:.3f}, global threshold {self.global_threshold:.6g} "
                 f"over {self.num_boxes} boxes; {bins} (a bin with fewer than {self.min_boxes} boxes "
                 f"borrows its neighbours')"]
        for c in self.classes:
            kept = "-" if c.kept_fraction is None else f"{c.kept_fraction:.3f}"
            source = "the reference's" if c.fell_back_to == "reference" else "global"
            note = f"  {source} (fewer than {self.min_boxes} boxes)" if c.fell_back else ""
            per_bin = f"  boxes per bin {list(c.bin_boxes)}" if len(c.bin_boxes) > 1 else ""
            lines.append(f"  {c.class_id:>3} {c.name:<20} {c.num_boxes:>7} boxes  "
                         f"threshold {c.threshold:.6g}  kept {kept}{note}{per_bin}")
        if self.offset is not None:
            lines.append(f"  set as the reference's thresholds {self.offset:+.4g} (one offset from this footage)")
        if self.held_out:
            lines.append(describe_held_out(self.held_out))
        return "\n".join(lines)


def conf_bins(confidence: np.ndarray, conf_edges: Sequence[float]) -> np.ndarray:
    """The confidence bin of every box: 0 below the first inner edge, len(conf_edges) above the last."""
    return np.searchsorted(np.asarray(conf_edges, np.float64), np.asarray(confidence, np.float64), side="right")


def describe_held_out(check: dict[str, Any]) -> str:
    over = check.get("interval_over", "boxes")
    return (f"held-out check ({check['folds']} folds over {check['groups']} {check['group_kind']}): "
            f"{check['flagged']} of {check['boxes']} held-out ID boxes flagged = {100 * check['rate']:.1f}% "
            f"(95% interval {100 * check['low']:.1f}-{100 * check['high']:.1f}%"
            f"{'' if over == 'boxes' else ' counting ' + over + ' as the trials'}, nominal "
            f"{100 * check['nominal']:.1f}%)")


def flag_threshold(scores: np.ndarray, tpr: float) -> float:
    """The threshold below which about (1 - tpr) of *new* boxes like `scores` fall (see the module doc)."""
    s = np.asarray(scores, np.float64)
    if len(s) == 0:
        raise GhostboxError("calibrate: no scores to set a threshold on")
    k = min(len(s), max(1, int(round((1.0 - tpr) * (len(s) + 1)))))
    return float(np.partition(s, k - 1)[k - 1])


def _thresholds(scores: np.ndarray, class_id: np.ndarray, confidence: np.ndarray, nc: int, tpr: float,
                min_boxes: int, conf_edges: Sequence[float], fallback: Calibration | None = None,
                ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(global, per_class (nc,), per_bin (nc, bins), boxes per cell (nc, bins)).

    A class with too few boxes takes `fallback`'s thresholds when given (same bins), else the global one.
    """
    global_threshold = flag_threshold(scores, tpr)
    bins = conf_bins(confidence, conf_edges)
    per_class = np.full(nc, global_threshold)
    per_bin = np.full((nc, len(conf_edges) + 1), global_threshold)
    counts = np.zeros_like(per_bin, dtype=np.int64)
    for c in range(nc):
        mine = class_id == c
        if mine.sum() >= min_boxes:
            per_class[c] = flag_threshold(scores[mine], tpr)
        elif fallback is not None:
            per_class[c], per_bin[c] = fallback.per_class[c], fallback.per_bin[c]
        else:
            per_bin[c] = per_class[c]
        counts[c] = np.bincount(bins[mine], minlength=per_bin.shape[1])
        if mine.sum() < min_boxes:
            continue
        for b in range(per_bin.shape[1]):
            # a sparse bin borrows its neighbours' boxes (the nearest confidences), not the whole class's
            lo = hi = b
            while counts[c, lo:hi + 1].sum() < min_boxes:
                lo, hi = max(lo - 1, 0), min(hi + 1, per_bin.shape[1] - 1)
            per_bin[c, b] = flag_threshold(scores[mine & (bins >= lo) & (bins <= hi)], tpr)
    return float(global_threshold), per_class, per_bin, counts


def calibrate(scorer: Scorer, boxes: Detections, tpr: float = TARGET_TPR, min_boxes: int = MIN_BIN_BOXES,
              class_names: Sequence[str] = (), conf_edges: Sequence[float] = CONF_EDGES,
              groups: np.ndarray | None = None, group_kind: str = "boxes", seed: int = 0,
              fallback: Calibration | None = None, shape: Shape = THRESHOLD_SHAPE) -> Calibration:
    """Thresholds that keep `tpr` of the ID calibration boxes: per (class, confidence bin) cell
    (`shape="per-bin"`), or one over all boxes in every cell (`shape="overall"`).

    `groups` (one id per box: its image, or its time block in a video) keeps a group in one
    fold of the held-out check; without it every box is its own group. `fallback`: thresholds
    (same bins) for the classes this set has too few boxes of, e.g. the labelled reference
    when a camera's clip shows no traffic lights; without it they take the global threshold.
    """
    if not 0.0 < tpr <= 1.0:
        raise GhostboxError(f"calibrate: tpr must be in (0, 1], got {tpr}")
    if shape not in SHAPES:
        raise GhostboxError(f"calibrate: thresholds must be one of {', '.join(SHAPES)}, got {shape!r}")
    if min_boxes < 1:
        raise GhostboxError(f"calibrate: min_boxes must be >= 1, got {min_boxes}")
    if len(boxes) == 0:
        raise GhostboxError("calibrate: no ID calibration boxes")
    edges = tuple(float(e) for e in conf_edges)
    if list(edges) != sorted(set(edges)) or any(not 0.0 < e < 1.0 for e in edges):
        raise GhostboxError(f"calibrate: confidence bin edges must be increasing values in (0, 1), got {list(edges)}")
    scores = scorer.score(boxes)
    confidence = boxes.class_confidence()
    nc = boxes.num_classes
    if fallback is not None and (fallback.conf_edges != edges or len(fallback.per_class) != nc):
        raise GhostboxError("calibrate: the fallback thresholds have other classes or confidence bins")
    global_threshold, per_class, per_bin, counts = _thresholds(
        scores, boxes.class_id, confidence, nc, tpr, min_boxes, edges, fallback)
    bins = conf_bins(confidence, edges)
    own_thresholds = np.full(len(boxes), global_threshold) if shape == "overall" else per_bin[boxes.class_id, bins]
    report = []
    for c in range(nc):
        mine = boxes.class_id == c
        n = int(mine.sum())
        kept = float(np.mean(scores[mine] >= own_thresholds[mine])) if n else None
        name = class_names[c] if c < len(class_names) else str(c)
        report.append(ClassCalibration(c, name, n, float(per_class[c]), n < min_boxes, kept,
                                       tuple(int(v) for v in counts[c]),
                                       "reference" if n < min_boxes and fallback is not None else ""))
    _warn_fell_back(report, min_boxes, shape, fallback is not None)

    def flagged_in(rest: np.ndarray, held: np.ndarray) -> int:
        if shape == "overall":
            return int(np.sum(scores[held] < flag_threshold(scores[rest], tpr)))
        _, _, cells, _ = _thresholds(scores[rest], boxes.class_id[rest], confidence[rest], nc, tpr, min_boxes, edges,
                                     fallback)
        return int(np.sum(scores[held] < cells[boxes.class_id[held], bins[held]]))

    held_out = held_out_check(len(boxes), flagged_in, tpr, groups, group_kind, seed)
    return Calibration(per_class, global_threshold, float(tpr), int(min_boxes), len(boxes), tuple(report),
                       edges, per_bin, held_out, tuple(decile_edges(scores - own_thresholds)), shape=shape)


def _warn_fell_back(report: Sequence[ClassCalibration], min_boxes: int, shape: str, reference: bool) -> None:
    """Name the classes with too few ID boxes (none, for a class the camera never shows) to set their own."""
    few = [f"{c.name} ({c.num_boxes})" for c in report if c.fell_back]
    if not few or shape == "overall":  # one threshold judges every box: no class has one of its own to miss
        return
    log.warning("calibrate: fewer than %d ID calibration boxes of %s: their boxes are judged by %s; calibrate "
                "on footage that shows them to give them their own", min_boxes, ", ".join(few),
                "the reference's thresholds" if reference else "the global threshold")


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval for k successes in n trials."""
    from scipy.stats import beta  # imported when used: scipy.stats is slow to import

    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def held_out_check(n: int, flagged_in: Callable[[np.ndarray, np.ndarray], int], tpr: float,
                   groups: np.ndarray | None = None, group_kind: str = "boxes", seed: int = 0,
                   units: np.ndarray | None = None, folds: int = HELD_OUT_FOLDS) -> dict[str, Any] | None:
    """Pooled flag rate of K-fold held-out groups, each judged by thresholds set on the other folds.

    `flagged_in(rest, held)` sets thresholds on the boxes of mask `rest` and counts the flagged
    boxes of mask `held`. `units` (e.g. track ids): boxes of one unit are one object seen many
    times, not independent trials, so the interval is computed over the number of units (the
    pooled rate applied to them) and comes out as wide as the evidence is thin.
    """
    group_ids = np.arange(n) if groups is None else np.asarray(groups)
    unique = np.unique(group_ids)
    folds = min(folds, len(unique))
    if folds < 2:
        return None
    rng = np.random.default_rng(seed)
    fold_of_group = rng.permutation(len(unique)) % folds
    fold = fold_of_group[np.searchsorted(unique, group_ids)]
    flagged = 0
    for k in range(folds):
        rest, held = fold != k, fold == k
        if rest.any() and held.any():
            flagged += int(flagged_in(rest, held))
    rate = flagged / n
    trials = n if units is None else int(len(np.unique(units)))
    low, high = clopper_pearson(int(round(rate * trials)), trials)
    nominal = 1.0 - tpr
    return {"boxes": n, "flagged": flagged, "rate": rate, "low": low, "high": high, "nominal": nominal,
            "folds": folds, "groups": int(len(unique)), "group_kind": group_kind,
            "interval_over": "boxes" if units is None else f"{trials} tracks",
            "holds": bool(low <= nominal <= high)}


def offset_calibration(scorer: Scorer, boxes: Detections, reference: Calibration, tpr: float = TARGET_TPR,
                       class_names: Sequence[str] = (), groups: np.ndarray | None = None,
                       group_kind: str = "time blocks", seed: int = 0, units: np.ndarray | None = None) -> Calibration:
    """The reference's thresholds moved by one offset, so that `tpr` of these boxes are kept.

    For a camera's own clip: a few dozen objects cannot fill every (class, confidence bin)
    cell with enough boxes, and per-cell quantiles of so few objects come out tight (on the
    street world's streams, 6-17% of later real objects flagged against 4-9% this way). The
    reference keeps the shape (how thresholds differ across classes and bins, from many
    labelled boxes); the clip sets one number, how far this camera's scores sit from it.
    """
    if len(boxes) == 0:
        raise GhostboxError("calibrate: no ID calibration boxes")
    confidence = boxes.class_confidence()
    margins = scorer.score(boxes) - reference.thresholds_for(boxes.class_id, confidence)
    offset = flag_threshold(margins, tpr)
    per_bin = reference.per_bin + offset
    per_class = np.asarray(reference.per_class, np.float64) + offset
    edges = reference.conf_edges
    bins = conf_bins(confidence, edges)
    report = []
    for c in range(boxes.num_classes):
        mine = boxes.class_id == c
        n = int(mine.sum())
        name = class_names[c] if c < len(class_names) else str(c)
        # the class's threshold follows the reference's; where that fell back, this one does too
        fell_back = reference.classes[c].fell_back if c < len(reference.classes) else False
        report.append(ClassCalibration(c, name, n, float(per_class[c]), fell_back,
                                       float(np.mean(margins[mine] >= offset)) if n else None,
                                       tuple(int(v) for v in np.bincount(bins[mine], minlength=len(edges) + 1)),
                                       reference.classes[c].fell_back_to if fell_back else ""))

    def flagged_in(rest: np.ndarray, held: np.ndarray) -> int:
        return int(np.sum(margins[held] < flag_threshold(margins[rest], tpr)))

    held_out = held_out_check(len(boxes), flagged_in, tpr, groups, group_kind, seed, units)
    return Calibration(per_class, float(reference.global_threshold + offset), float(tpr), reference.min_boxes,
                       len(boxes), tuple(report), edges, per_bin, held_out, tuple(decile_edges(margins - offset)),
                       offset=float(offset), shape=reference.shape)
