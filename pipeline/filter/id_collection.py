"""Collect the ID boxes a filter is fitted on, from labelled or unlabelled ID data.

Labelled (a dataset spec with ground truth): the detector's boxes at `conf` that match a
ground-truth box of the same class with IoU >= 0.5, i.e. its ID true positives.
Unlabelled (a folder of images, a glob, or a video): every box at `unlabelled_conf` or
above, for users without labels; a higher confidence keeps the set cleaner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.detect.detector import Detector
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.boxes import BoxSet

log = logging.getLogger(__name__)

_LABEL_FILES = ("labels.json", "instances.json", "data.yaml")


@dataclass
class IdBoxes:
    boxes: BoxSet
    images: int
    labelled: bool
    description: str


def is_unlabelled_source(spec: str) -> bool:
    """A video, an image, a glob, or a folder of images without a label file."""
    from pipeline.sources.media_files import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    if any(ch in spec for ch in "*?["):
        return True
    path = Path(spec)
    if path.is_file():
        return path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES
    if path.is_dir():
        return not any((path / name).is_file() for name in _LABEL_FILES)
    return False


def collect_id_boxes(
    detector: Detector, spec: str, conf: float = 0.25, unlabelled_conf: float = 0.5, max_images: int | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> IdBoxes:
    if is_unlabelled_source(spec):
        return _unlabelled(detector, spec, unlabelled_conf, max_images, advance)
    return _labelled(detector, spec, conf, max_images, advance)


def _labelled(detector: Detector, spec: str, conf: float, max_images: int | None,
              advance: Callable[[int], None]) -> IdBoxes:
    from pipeline.data import image_batches, parse_dataset_spec
    from pipeline.evaluate.matching import match_true_positives, model_class_ids

    dataset = parse_dataset_spec(spec, class_names=list(detector.class_names))
    if max_images is not None and len(dataset) > max_images:
        dataset = dataset.select(np.arange(max_images))
    to_model = model_class_ids(dataset.class_names, detector.class_names)
    found: list[Detections] = []
    for chunk in image_batches(dataset, detector.config.batch):
        results = detector.detect([image for _, image in chunk], conf=conf)
        for (record, _), dets in zip(chunk, results):
            known = to_model[record.class_ids] >= 0
            tp, _ = match_true_positives(dets.xyxy, dets.confidence, dets.class_id, record.boxes_xyxy[known],
                                         to_model[record.class_ids][known], record.crowd[known])
            found.append(dets[tp])
        advance(len(chunk))
    boxes = _box_set(found, detector)
    if len(boxes) == 0:
        raise GhostboxError(
            f"ID data '{spec}': the detector found no true positives at conf {conf} in {len(dataset)} images; "
            f"check that the labels' classes {list(dataset.class_names)} match the model's"
        )
    return IdBoxes(boxes, len(dataset), True, f"{len(boxes)} ID true positives (IoU>=0.5) in {len(dataset)} images")


def detect_unlabelled(detector: Detector, spec: str, conf: float, max_images: int | None,
                      advance: Callable[[int], None]) -> tuple[list[Detections], int]:
    """(detections per frame, frames read) for a video, image, glob or folder of images."""
    from pipeline.sources.media_files import iter_frames

    found: list[Detections] = []
    frames: list[np.ndarray] = []
    seen = 0
    for frame in iter_frames([spec]):
        frames.append(frame.image)
        seen += 1
        if len(frames) >= detector.config.batch:
            found += detector.detect(frames, conf=conf)
            advance(len(frames))
            frames = []
        if max_images is not None and seen >= max_images:
            break
    if frames:
        found += detector.detect(frames, conf=conf)
        advance(len(frames))
    return found, seen


def _unlabelled(detector: Detector, spec: str, conf: float, max_images: int | None,
                advance: Callable[[int], None]) -> IdBoxes:
    found, seen = detect_unlabelled(detector, spec, conf, max_images, advance)
    boxes = _box_set(found, detector)
    if len(boxes) == 0:
        raise GhostboxError(f"ID data '{spec}': no detections at conf {conf} in {seen} frames")
    log.info("unlabelled ID data: using %d detections at conf >= %.2f as ID boxes", len(boxes), conf)
    return IdBoxes(boxes, seen, False, f"{len(boxes)} detections at conf>={conf} in {seen} unlabelled frames")


def _box_set(found: list[Detections], detector: Detector) -> BoxSet:
    found = [d for d in found if len(d)]
    if not found:
        return BoxSet.empty(detector.feature_dim, len(detector.class_names))
    return BoxSet.from_detections(found)
