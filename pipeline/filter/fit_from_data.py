"""Fit a filter from data on disk: the one path `ghostbox calibrate` and `ghostbox finetune` share.

    request = FitRequest(method="oe", id_spec="world/id/train", outliers=["proxies/"])
    detector_cfg = request.detector_config(base_cfg)   # RoI features for outlier-trained scores
    filt, notes = fit_filter(Detector(detector_cfg), request)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.data.review_file import (
    GALLERY_INDEX,
    REVIEW_FILE,
    head_arrays,
    reviewed_gallery_rows,
    run_folder,
    track_key,
)
from pipeline.detect.detector import Detector, DetectorConfig
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.calibrate import MIN_BIN_BOXES, THRESHOLD_SHAPE, Shape
from pipeline.filter.filter_file import load_filter
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.id_collection import collect_id_boxes
from pipeline.filter.ood_metrics import TARGET_TPR
from pipeline.filter.outlier_collection import collect_outlier_boxes
from pipeline.filter.registry import create, names
from pipeline.filter.splits import CALIBRATION_FRACTION
from pipeline.sources.media_files import MediaReport
from pipeline.tracks import MIN_TRACK_FRAMES


def parse_params(text: str, flag: str = "--params") -> dict[str, Any]:
    """A JSON object from the command line, or GhostboxError naming the flag."""

    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GhostboxError(f"{flag}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(params, dict):
        raise GhostboxError(f"{flag}: expected a JSON object, got {text!r}")
    return params


FUSION_KEYS = ("method", "weights", "reference_fraction", "seed")  # fusion's own parameters in --params


def parse_methods(text: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """'knn' -> ('knn', params); 'knn,mahalanobis' -> a fusion of both: params keyed by member, plus the
    fusion's own (`FUSION_KEYS`: '{"method": "logistic"}' learns the combination, e.g. for oe,crop)."""
    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in names()]
    if unknown or not methods:
        raise GhostboxError(f"--method: unknown {unknown or text!r}; available: {', '.join(names())}")
    if len(methods) > 1:
        stray = sorted(set(params) - set(methods) - set(FUSION_KEYS))
        if stray:
            raise GhostboxError(f"--params: {stray} is neither a member ({', '.join(methods)}) nor a fusion "
                                f"parameter ({', '.join(FUSION_KEYS)})")
        return "fusion", {"members": [{"name": m, "params": params.get(m, {})} for m in methods],
                          **{k: params[k] for k in FUSION_KEYS if k in params}}
    return methods[0], params


class FitRequest(BaseModel):
    """What `ghostbox calibrate` fits: the one home of its settings' defaults."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="score name (a registered method, or 'fusion')")
    id_spec: str = Field(description="ID data the score is fitted on")
    params: dict[str, Any] = Field(default_factory=dict, description="the method's parameters")
    outliers: list[str] = Field(default_factory=list, description="outlier data, for scores that learn from it")
    outlier_conf: float | None = Field(None, description="confidence of outlier detections (None: the detector's)")
    tpr: float = Field(TARGET_TPR, description="ID true-positive rate the thresholds keep")
    min_boxes: int = Field(MIN_BIN_BOXES, description="boxes a confidence bin needs before it has a threshold of "
                           "its own")
    calibration_fraction: float = Field(CALIBRATION_FRACTION, description="ID boxes held out for the thresholds")
    seed: int = Field(0, description="seed of the held-out split")
    policy: Literal["flag", "drop"] = Field("flag", description="what the filter does with a hallucination")
    thresholds: Shape = Field(THRESHOLD_SHAPE, description="one overall threshold, or one per class and "
                              "confidence bin (95% kept in every bin)")
    unlabelled_conf: float | None = Field(
        None, description="unlabelled data: lowest confidence of ID boxes (None: the detector's, the range "
        "the filter will judge)")
    max_images: int | None = Field(None, description="read at most this many images of each set")
    calibration_id: str | None = Field(
        None, description="a set of its own for the thresholds (labelled, or a camera's clip)")
    min_track_frames: int = Field(
        MIN_TRACK_FRAMES, description="unlabelled data: frames a track must last for its boxes to count as ID")
    reviewed: list[str] = Field(default_factory=list, description="`ghostbox run` output folders whose review "
                                "confirmed tracks real: their boxes join the ID set")

    @cached_property
    def needs_outliers(self) -> bool:
        return create(self.method, **self.params).needs_outliers

    @cached_property
    def needs_crops(self) -> bool:
        """The score reads each box's pixels (a crop model): collect the boxes with their crops."""
        return create(self.method, **self.params).uses_crops

    def check(self) -> None:
        if self.min_track_frames < 1:
            raise GhostboxError(f"--min-track-frames: must be >= 1, got {self.min_track_frames}")
        if self.needs_outliers and not self.outliers:
            raise GhostboxError(f"--method {self.method}: learns from outliers; give --outliers SPEC (e.g. a proxy "
                                f"set from `ghostbox proxies`, or images without ID objects)")

    def detector_config(self, config: DetectorConfig) -> DetectorConfig:
        """Scores that learn from outliers get RoI features unless the user chose box features."""
        if self.needs_outliers and config.box_features is None:
            # the 32-d head vector alone barely tells ID boxes from outliers; RoI features do
            return config.model_copy(update={"box_features": "head+roi"})
        return config


class _NoBar:
    def advance(self, n: int = 1) -> None:
        pass


def _collect(detector: Detector, spec: str, label: str, progress: Callable[[str], Any] | None,
             unlabelled_conf: float | None, max_images: int | None, min_track_frames: int,
             crops: bool = False) -> BoxSet:
    bar = progress or (lambda label: nullcontext(_NoBar()))
    with bar(label) as b:
        return collect_id_boxes(detector, spec, conf=detector.config.conf, unlabelled_conf=unlabelled_conf,
                                max_images=max_images, advance=b.advance, min_track_frames=min_track_frames,
                                crops=crops)


def _gallery_crops(run: str, rows: list[dict[str, Any]]) -> list[np.ndarray]:
    """The crop image of each gallery line (OUT/tracks/FILE), or GhostboxError naming the file."""
    folder = run_folder(run) / GALLERY_INDEX.parent
    crops = []
    for row in rows:
        path = folder / str(row.get("file", ""))
        image = cv2.imread(str(path)) if path.is_file() else None
        if image is None:
            raise GhostboxError(f"--reviewed {run}: gallery crop {path} is missing or unreadable; the crop model "
                                f"fits on the crops themselves")
        crops.append(image)
    return crops


def reviewed_real_boxes(run: str, detector: Detector, crops: bool = False) -> tuple[Detections, np.ndarray]:
    """The gallery boxes (logits, box features; their crops with `crops`) of the tracks a person confirmed
    real in `run`'s review, and their track (one number per stream and track); refused when another
    detector made them."""
    rows = list(reviewed_gallery_rows(run, "real"))
    if not rows:
        raise GhostboxError(f"--reviewed {run}: no track confirmed real in {Path(run) / REVIEW_FILE} (answer "
                            "'real object' on the review page: `ghostbox review OUT`)")
    weights = detector.info.weights_sha256
    other = sorted({str(r.get("detector"))[:12] for r in rows if r.get("detector") not in (None, weights)})
    if other:
        raise GhostboxError(f"--reviewed {run}: its boxes come from another detector (weights {', '.join(other)}, "
                            f"this one {weights[:12]}); review a run of this model")
    logits, features, cls, level = head_arrays(rows, f"--reviewed {run}")
    if features.shape[1] != detector.feature_dim:
        raise GhostboxError(f"--reviewed {run}: box features of dimension {features.shape[1]}, the detector here "
                            f"gives {detector.feature_dim} (set --box-features as in the run's graph)")
    keys = [track_key(str(r["stream"]), int(r["track_id"])) for r in rows]
    tracks = np.unique(keys, return_inverse=True)[1]
    boxes = Detections.from_head(features, logits, cls, level, detector.class_names)
    return (boxes.with_meta(crops=_gallery_crops(run, rows)) if crops else boxes), tracks


def _calibrated_at(detector: Detector, unlabelled_conf: float | None) -> dict[str, Any]:
    """The settings a filter's thresholds hold for, recorded in its file and enforced when it is applied."""
    conf = detector.config.conf
    return {"detector_conf": conf if unlabelled_conf is None else max(conf, unlabelled_conf),
            "imgsz": detector.imgsz}


def input_report(*reports: MediaReport, fitted: dict[str, Any] | None = None) -> dict[str, Any]:
    """The read reports of the data a filter was made from, recorded in its file: a filter fitted on a
    truncated clip says so, and the command that wrote it can exit 1 (`inputs_complete` false).
    `fitted`: the metadata of the filter this one was re-calibrated or adapted from; the problems of
    the data its score was fitted on stay listed (`fit_input_problems`)."""
    problems = [line for report in reports for line in report.problems()]
    earlier = (fitted or {}).get("fit_input_problems") or (fitted or {}).get("input_problems")
    return {"inputs_complete": not problems, "input_problems": problems,
            **({"fit_input_problems": earlier} if earlier else {})}


def fit_filter(detector: Detector, request: FitRequest,
               progress: Callable[[str], Any] | None = None) -> tuple[HallucinationFilter, list[str]]:
    """Collect ID (and outlier) boxes with `detector`, fit and calibrate; returns (filter, notes)."""

    request.check()
    bar = progress or (lambda label: nullcontext(_NoBar()))

    def collect(spec: str, label: str) -> BoxSet:
        return _collect(detector, spec, label, progress, request.unlabelled_conf, request.max_images,
                        request.min_track_frames, request.needs_crops)

    collected = collect(request.id_spec, "ID boxes")
    for run in request.reviewed:
        boxes, tracks = reviewed_real_boxes(run, detector, request.needs_crops)
        collected = collected.with_reviewed(boxes, tracks)
    notes = [collected.description]
    calibration: BoxSet | None = None
    reports = [collected.media]
    if request.calibration_id is not None:
        calibration = collect(request.calibration_id, "calibration boxes")
        reports.append(calibration.media)
        notes.append(f"calibration set: {calibration.description}")
    outliers = None
    if request.needs_outliers:
        outlier_conf = detector.config.conf if request.outlier_conf is None else request.outlier_conf
        reports.append(MediaReport())
        with bar("outlier boxes") as b:
            outliers, text = collect_outlier_boxes(detector, request.outliers, conf=outlier_conf,
                                                   max_images=request.max_images, advance=b.advance,
                                                   report=reports[-1], crops=request.needs_crops)
        notes.append(text)
    filt = HallucinationFilter.fit(
        request.method, collected, detector.class_names, detector.fingerprint(), params=request.params,
        tpr=request.tpr, min_boxes=request.min_boxes, calibration_fraction=request.calibration_fraction,
        seed=request.seed, policy=request.policy, outliers=outliers, calibration=calibration,
        shape=request.thresholds,
        metadata={"id_data": request.id_spec, "labelled": collected.labelled, "id_images": collected.images,
                  **_calibrated_at(detector, request.unlabelled_conf), **input_report(*reports),
                  **({"calibration_data": request.calibration_id, "calibration_labelled": calibration.labelled}
                     if calibration is not None else {}),
                  **({"outlier_data": list(request.outliers)} if outliers is not None else {})},
    )
    return filt, notes


def recalibrate_filter(detector: Detector, path: str, spec: str, tpr: float | None = None,
                       min_boxes: int | None = None, seed: int = 0, min_track_frames: int = MIN_TRACK_FRAMES,
                       max_images: int | None = None, unlabelled_conf: float | None = None,
                       progress: Callable[[str], Any] | None = None) -> tuple[HallucinationFilter, list[str]]:
    """New thresholds for the filter file at `path` from the ID data `spec` (labelled, or a camera's footage)."""

    old = load_filter(path)
    old.check_detector(detector.fingerprint())
    held = _collect(detector, spec, "calibration boxes", progress, unlabelled_conf, max_images, min_track_frames,
                    old.needs_crops)
    filt = old.recalibrate(held, tpr=tpr, min_boxes=min_boxes, seed=seed, metadata={
        "calibration_data": spec, "calibration_labelled": held.labelled, **_calibrated_at(detector, unlabelled_conf),
        **input_report(held.media, fitted=old.metadata)})
    return filt, [held.description]
