"""`HallucinationFilter`: a fitted scorer plus per-class thresholds, applied to detections.

    filt = HallucinationFilter.fit("knn", id_set, class_names, detector.fingerprint())   # id_set: a BoxSet
    filt.check_detector(detector.fingerprint())
    dets = filt.apply(dets)    # adds score, threshold, hallucination per box

A box is a hallucination when its score (higher = more ID) is below the threshold of its
predicted class. The filter only scores and flags: `apply` returns every box, marked. Its
`policy` ("flag" or "drop") is a setting stored in the filter file for the outputs, which
leave flagged boxes out under "drop" (`pipeline.sinks.policy`, the one place boxes are dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.calibrate import (
    CONF_EDGES,
    MIN_BIN_BOXES,
    THRESHOLD_SHAPE,
    Calibration,
    Shape,
    calibrate,
    offset_calibration,
)
from pipeline.filter.ood_metrics import TARGET_TPR
from pipeline.filter.registry import create
from pipeline.filter.scorer import Scorer
from pipeline.filter.splits import CALIBRATION_FRACTION
from pipeline.filter.track_trimming import trim_tracks

POLICIES = ("flag", "drop")


def thresholds_on(scorer: Scorer, calibration: BoxSet, class_names: Sequence[str], tpr: float,
                  min_boxes: int, conf_edges: Sequence[float], seed: int, reference: Calibration | None,
                  fallback: Calibration | None, shape: Shape = THRESHOLD_SHAPE) -> tuple[Calibration, dict[str, Any]]:
    """Thresholds from calibration boxes. Unlabelled footage is first trimmed of the tracks that
    score below `reference` on average (`track_trimming`), then moves the reference's thresholds
    by one offset (`calibrate.offset_calibration`); labelled boxes set a threshold per class and
    confidence bin, `fallback` covering the classes they lack. Returns (calibration, metadata notes)."""
    notes: dict[str, Any] = {}
    tracks = calibration.track_ids
    if tracks is not None:
        if reference is None:
            raise GhostboxError("unlabelled calibration footage needs reference thresholds to trim hallucinations")
        boxes = calibration.boxes
        keep = trim_tracks(scorer.score(boxes), tracks, reference.thresholds_for(boxes.class_id,
                                                                                 boxes.class_confidence()))
        notes["calibration_trimmed"] = {
            "boxes": int((~keep).sum()), "of": len(boxes),
            "tracks": int(len(np.unique(tracks[~keep]))), "of_tracks": int(len(np.unique(tracks)))}
        if not keep.any():
            raise GhostboxError(
                f"calibration data: every one of the {len(boxes)} tracked boxes scores below the reference "
                f"thresholds, as hallucinations would; this footage shows nothing the filter takes for ID "
                f"(wrong camera or classes?)")
        calibration = calibration.select(keep)  # each kept box keeps its time block, cut over the whole clip
        # a clip's few objects set one offset to the reference, not a threshold per cell
        thresholds = offset_calibration(scorer, calibration.boxes, reference, tpr, class_names, calibration.groups,
                                        calibration.group_kind, seed, units=calibration.track_ids)
    else:
        thresholds = calibrate(scorer, calibration.boxes, tpr=tpr, min_boxes=min_boxes, class_names=class_names,
                               conf_edges=conf_edges, groups=calibration.groups, group_kind=calibration.group_kind,
                               seed=seed, fallback=fallback, shape=shape)
    notes["calibration_boxes"] = len(calibration)
    return thresholds, notes


def check_calibrated_conf(calibrated: Any, conf: float, what: str = "filter") -> None:
    """Refuse a detector whose boxes reach below the confidence a filter's thresholds were calibrated at."""
    if isinstance(calibrated, (int, float)) and conf < calibrated - 1e-9:
        raise GhostboxError(
            f"{what} calibrated on boxes at conf >= {calibrated:g}, but the detector runs at conf {conf:g}: "
            f"boxes below {calibrated:g} would be judged by thresholds set on other boxes. Run with "
            f"--conf {calibrated:g} (detector.conf in a graph config), or re-calibrate at this confidence "
            f"(ghostbox calibrate ... --conf {conf:g})")


def _short(value: Any) -> str:
    text = str(value)
    # sha256 digests: the first 12 hex digits are enough to tell two apart
    if len(text) == 64 and all(ch in "0123456789abcdef" for ch in text.lower()):
        return text[:12]
    return text if len(text) <= 60 else text[:57] + "..."


def fingerprint_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """'key: filter value vs detector value' for every key whose values differ (or is missing on one side)."""
    diffs = []
    for key in sorted(set(expected) | set(actual)):
        a, b = expected.get(key, "<absent>"), actual.get(key, "<absent>")
        if a != b:
            diffs.append(f"{key} {_short(a)} vs {_short(b)}")
    return diffs


class HallucinationFilter:
    """Scores boxes with a fitted scorer and flags those below their class's threshold."""

    def __init__(self, scorer: Scorer, thresholds: Calibration, class_names: Sequence[str],
                 fingerprint: dict[str, Any], policy: str = "flag", metadata: dict[str, Any] | None = None) -> None:
        if not scorer.is_fitted:
            raise GhostboxError(f"HallucinationFilter: the {scorer.name} scorer is not fitted")
        if policy not in POLICIES:
            raise GhostboxError(f"policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
        nc = scorer.num_classes
        if len(thresholds.per_class) != nc:
            raise GhostboxError(
                f"HallucinationFilter: {len(thresholds.per_class)} class thresholds for a scorer of {nc} classes")
        if class_names and len(class_names) != nc:
            raise GhostboxError(f"HallucinationFilter: {len(class_names)} class names for a scorer of {nc} classes")
        self.scorer = scorer
        self.thresholds = thresholds
        self.class_names = tuple(class_names)
        self.fingerprint = dict(fingerprint)
        self.policy = policy
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return (f"HallucinationFilter({self.scorer!r}, classes={self.num_classes}, "
                f"D={self.feature_dim}, policy={self.policy!r})")

    @classmethod
    def fit(cls, method: str, id_set: BoxSet, class_names: Sequence[str], fingerprint: dict[str, Any],
            params: dict[str, Any] | None = None, tpr: float = TARGET_TPR, min_boxes: int = MIN_BIN_BOXES,
            calibration_fraction: float = CALIBRATION_FRACTION, seed: int = 0, policy: str = "flag",
            metadata: dict[str, Any] | None = None, outliers: Detections | None = None,
            calibration: BoxSet | None = None, conf_edges: Sequence[float] = CONF_EDGES,
            shape: Shape = THRESHOLD_SHAPE) -> HallucinationFilter:
        """Fit `method` on ID boxes and set thresholds on calibration boxes the fit never saw.

        Without `calibration`, `id_set` is split: its whole groups (images, time blocks) on one
        side, else per box. With labelled `calibration` boxes, every ID box fits the score.
        With unlabelled ones (`calibration.track_ids` set), the ID boxes are still split, so
        that their held-out part gives reference thresholds to trim hallucinated tracks with.
        An `id_set` of unlabelled footage (`track_ids` set) has its held-out blocks trimmed of
        hallucinated tracks against thresholds set on those blocks themselves (a weaker
        reference than labelled boxes: see `track_trimming`).
        `outliers`: boxes on non-ID objects, for scores that learn from them (`oe`); all of
        them go to the fit, the thresholds come from ID boxes only.
        """
        held_out = None
        if calibration is None or calibration.track_ids is not None:
            fit_mask = id_set.fit_mask(calibration_fraction, seed)
            fit_boxes, held_out = id_set.boxes[fit_mask], id_set.select(~fit_mask)
        else:
            fit_boxes = id_set.boxes
        scorer = create(method, **(params or {})).fit(fit_boxes, outliers)
        info: dict[str, Any] = {"fit_boxes": len(fit_boxes), "split_seed": seed,
                                **({"outlier_boxes": len(outliers)} if outliers is not None and scorer.needs_outliers
                                   else {})}
        if calibration is None and id_set.track_ids is not None:
            calibration = held_out  # footage: its held-out blocks, trimmed against themselves
        if calibration is None:
            assert held_out is not None  # split above: no calibration set was given
            thresholds = calibrate(scorer, held_out.boxes, tpr=tpr, min_boxes=min_boxes, class_names=class_names,
                                   conf_edges=conf_edges, groups=held_out.groups, group_kind=held_out.group_kind,
                                   seed=seed, shape=shape)
            info["calibration_boxes"] = len(held_out)
        else:
            reference = None
            if calibration.track_ids is not None:
                # labelled held-out boxes, or (unlabelled ID data) the footage itself, as the reference
                reference_boxes = (calibration if id_set.track_ids is not None or held_out is None
                                   else held_out).boxes
                reference = calibrate(scorer, reference_boxes, tpr=tpr, min_boxes=min_boxes,
                                      class_names=class_names, conf_edges=conf_edges, shape=shape)
            thresholds, notes = thresholds_on(scorer, calibration, class_names, tpr, min_boxes, conf_edges, seed,
                                              reference, None, shape)
            info.update(notes)
        info.update(metadata or {})
        return cls(scorer, thresholds, class_names, fingerprint, policy=policy, metadata=info)

    def recalibrate(self, calibration: BoxSet, tpr: float | None = None, min_boxes: int | None = None,
                    seed: int = 0, metadata: dict[str, Any] | None = None) -> HallucinationFilter:
        """The same fitted score with thresholds set on other ID boxes, e.g. a camera's own frames.

        This filter's thresholds are the reference: tracks of unlabelled footage that score
        below them on average are trimmed, and classes the footage shows too little of keep them.
        """
        old = self.thresholds
        tpr = old.target_tpr if tpr is None else tpr
        min_boxes = old.min_boxes if min_boxes is None else min_boxes
        edges = old.conf_edges or CONF_EDGES
        reference = old.rebinned(edges)
        thresholds, notes = thresholds_on(self.scorer, calibration, self.class_names, tpr, min_boxes, edges, seed,
                                          reference if calibration.track_ids is not None else None, reference,
                                          old.shape)  # type: ignore[arg-type]
        info = {**self.metadata, **notes, "recalibrated_from": {"num_boxes": old.num_boxes,
                                                               "global_threshold": old.global_threshold},
                **(metadata or {})}
        return HallucinationFilter(self.scorer, thresholds, self.class_names, self.fingerprint, policy=self.policy,
                                   metadata=info)

    @property
    def method(self) -> str:
        return self.scorer.name

    @property
    def needs_crops(self) -> bool:
        """The filter reads each box's pixels (a crop model): the boxes it judges must carry their crops."""
        return bool(self.scorer.uses_crops)

    @property
    def feature_dim(self) -> int:
        return int(self.scorer.feature_dim or 0)

    @property
    def num_classes(self) -> int:
        return int(self.scorer.num_classes or 0)

    def check_detector(self, fingerprint: dict[str, Any]) -> None:
        """Raise GhostboxError if the detector is not the one the filter was fitted for.

        That includes the int8 export of the filter's own float model (`ghostbox export --int8`),
        by measurement (docs/detect.md#int8): int8 moves the box features the thresholds were set
        on, by how much depends on the calibration frames (calibrated on one camera's clip, a
        float-fitted filter flagged 7.6% of the ID true positives it should flag 5% of; fitted on
        the int8 model, 5.1%). A filter fitted on an int8 model is tied to its calibration.
        """
        diffs = fingerprint_differences(self.fingerprint, fingerprint)
        if not diffs:
            return
        int8_keys = ("precision", "int8_calibration")  # what an int8 export adds to Detector.fingerprint()
        if not fingerprint_differences({k: v for k, v in self.fingerprint.items() if k not in int8_keys},
                                       {k: v for k, v in fingerprint.items() if k not in int8_keys}):
            fitted, running = self.fingerprint.get("precision", "float"), fingerprint.get("precision", "float")
            what = ("an int8 export calibrated on other frames than the filter's" if fitted == running
                    else f"the int8 export of the {fitted} model the filter was fitted on" if running == "int8"
                    else f"the {running} model whose {fitted} export the filter was fitted on")
            model = "MODEL.int8.onnx" if running == "int8" else "MODEL"
            raise GhostboxError(
                f"filter was fitted for another precision or int8 calibration of this detector: the detector is "
                f"{what} ({'; '.join(diffs)}), whose box features differ from those the thresholds were set on; "
                f"fit the filter on the model you run: `ghostbox calibrate --model {model} ...`")
        raise GhostboxError("filter was fitted for another detector (filter vs detector): " + "; ".join(diffs))

    def check_conf(self, conf: float) -> None:
        """Refuse a detector whose boxes reach below the confidence the thresholds were calibrated at."""
        check_calibrated_conf(self.metadata.get("detector_conf"), conf)

    def _check_detections(self, dets: Detections) -> None:
        try:
            self.scorer.check_dims(dets.feature_dim, dets.num_classes)
        except GhostboxError:
            raise GhostboxError(
                f"detections have {dets.num_classes} classes and D={dets.feature_dim} box features; "
                f"the filter was fitted on {self.num_classes} classes and D={self.feature_dim}") from None
        if self.needs_crops and dets.crops is None and len(dets):
            raise GhostboxError(
                "this filter has a crop model, which reads each box's pixels, but the detections carry no crops: "
                "let the workers send them (workers.crops: auto, raw or jpeg in the graph; not none), or detect "
                "with crops=True")
        if dets.class_names and self.class_names and tuple(dets.class_names) != self.class_names:
            raise GhostboxError(f"detections' class names {list(dets.class_names)} differ from the filter's "
                                f"{list(self.class_names)}")

    def judge(self, boxes: Detections, scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score float64, threshold float64, hallucination bool) per box; `scores`: this filter's scorer's
        scores of `boxes`, when already computed (filters that share a scorer and differ in thresholds)."""
        scores = self.scorer.score(boxes) if scores is None else np.asarray(scores, np.float64)
        thresholds = self.thresholds.thresholds_for(boxes.class_id, boxes.class_confidence())
        return scores, thresholds, scores < thresholds

    def apply(self, dets: Detections) -> Detections:
        """Every box with `score`, `threshold` and `hallucination` added (whatever the policy: the outputs drop)."""
        self._check_detections(dets)
        if len(dets) == 0:
            return dets.with_data(score=np.zeros(0, np.float32), threshold=np.zeros(0, np.float32),
                                  hallucination=np.zeros(0, bool))
        bad = (dets.class_id < 0) | (dets.class_id >= self.num_classes)
        if bad.any():
            raise GhostboxError(f"detections: class_id {int(dets.class_id[bad][0])} outside 0..{self.num_classes - 1}")
        scores, thresholds, flags = self.judge(dets)
        return dets.with_data(score=scores.astype(np.float32), threshold=thresholds.astype(np.float32),
                              hallucination=flags)
