"""Collect the ID boxes a filter is fitted and calibrated on, from labelled or unlabelled ID data.

Every box is collected at the confidence the filter will be deployed at (the detector's
`conf`), so the thresholds cover the boxes the filter will judge.

Labelled (a dataset spec with ground truth): the detector's boxes that match a ground-truth
box of the same class with IoU >= 0.5, i.e. its ID true positives, grouped by image.
Unlabelled (a video, a folder of frames, a glob): the boxes that ByteTrack (Ultralytics')
follows through at least `min_track_frames` frames, with their frame and track, grouped in
time blocks of the frames. Persistence removes one-frame flickers, but a hallucination on a
parked bench persists too: those tracks are trimmed later against the filter's reference
thresholds (`track_trimming.trim_tracks`).

Both come as a `box_set.BoxSet`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np

from pipeline.data import load_image, parse_dataset_spec
from pipeline.detect.config import DEFAULT_CONF
from pipeline.detect.detector import Detector
from pipeline.detect.frame_loop import detect_frames
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.matching import match_true_positives, model_class_ids
from pipeline.sources.media_files import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Frame, MediaReport, iter_frames
from pipeline.tracks import MIN_TRACK_FRAMES, track_sequence

log = logging.getLogger(__name__)

_LABEL_FILES = ("labels.json", "instances.json", "data.yaml")


def is_unlabelled_source(spec: str) -> bool:
    """A video, an image, a glob, or a folder of images without a label file."""

    if any(ch in spec for ch in "*?["):
        return True
    path = Path(spec)
    if path.is_file():
        return path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES
    if path.is_dir():
        return not any((path / name).is_file() for name in _LABEL_FILES)
    return False


def collect_id_boxes(
    detector: Detector, spec: str, conf: float = DEFAULT_CONF, unlabelled_conf: float | None = None,
    max_images: int | None = None, advance: Callable[[int], None] = lambda n: None,
    min_track_frames: int = MIN_TRACK_FRAMES, crops: bool = False,
) -> BoxSet:
    """`unlabelled_conf`: None = `conf`; a higher value leaves the boxes below it without calibration.
    `crops`: keep each box's crop (for scores that read pixels, `Scorer.uses_crops`)."""
    if is_unlabelled_source(spec):
        return _unlabelled(detector, spec, conf if unlabelled_conf is None else unlabelled_conf, max_images,
                           advance, min_track_frames, crops)
    return _labelled(detector, spec, conf, max_images, advance, crops)


def _labelled(detector: Detector, spec: str, conf: float, max_images: int | None,
              advance: Callable[[int], None], crops: bool = False) -> BoxSet:
    dataset = parse_dataset_spec(spec, class_names=list(detector.class_names))
    if max_images is not None and len(dataset) > max_images:
        dataset = dataset.select(np.arange(max_images))
    to_model = model_class_ids(dataset.class_names, detector.class_names)
    found: list[Detections] = []
    groups: list[np.ndarray] = []
    for record, dets in detect_frames(detector, dataset, image=load_image, conf=conf, crops=crops, advance=advance):
        known = to_model[record.class_ids] >= 0
        tp, _ = match_true_positives(dets.xyxy, dets.confidence, dets.class_id, record.boxes_xyxy[known],
                                     to_model[record.class_ids][known], record.crowd[known])
        groups.append(np.full(int(tp.sum()), len(groups), np.int64))
        found.append(dets[tp])
    boxes = _box_set(found, detector)
    if len(boxes) == 0:
        raise GhostboxError(
            f"ID data '{spec}': the detector found no true positives at conf {conf} in {len(dataset)} images; "
            f"check that the labels' classes {list(dataset.class_names)} match the model's"
        )
    return BoxSet(boxes, groups=np.concatenate(groups),
                  description=f"{len(boxes)} ID true positives (IoU>=0.5) in {len(dataset)} images",
                  images=len(dataset))


def detect_unlabelled(detector: Detector, spec: str, conf: float, max_images: int | None,
                      advance: Callable[[int], None], report: MediaReport | None = None, crops: bool = False
                      ) -> tuple[list[Detections], int]:
    """(detections per frame, frames read) for a video, image, glob or folder of images; what the
    read skipped or cut (a truncated video, unreadable files in a folder) goes to `report`."""

    frames: Iterator[Frame] = iter_frames([spec], report)
    if max_images is not None:  # read no frame past the limit (one below 1 reads one frame, as ever)
        frames = islice(frames, max(1, max_images))
    found = [dets for _, dets in detect_frames(detector, frames, image=lambda frame: frame.image, conf=conf,
                                               crops=crops, advance=advance)]
    return found, len(found)


def _unlabelled(detector: Detector, spec: str, conf: float, max_images: int | None,
                advance: Callable[[int], None], min_track_frames: int, crops: bool = False) -> BoxSet:
    report = MediaReport()
    found, seen = detect_unlabelled(detector, spec, conf, max_images, advance, report, crops)
    # a cut clip still gives boxes: the caller records the report instead of fitting on it silently
    return replace(tracked_id_boxes(found, detector, f"ID data '{spec}'", conf, min_track_frames), media=report)


def tracked_id_boxes(found: list[Detections], detector: Detector, what: str, conf: float,
                     min_track_frames: int = MIN_TRACK_FRAMES) -> BoxSet:
    """The boxes of one source's frames (in order) that ByteTrack follows for >= `min_track_frames` frames."""

    seen = len(found)
    total = sum(len(d) for d in found)
    if total == 0:
        raise GhostboxError(f"{what}: no detections at conf {conf} in {seen} frames, so no track of >= "
                            f"{min_track_frames} frames; is this footage of the classes {list(detector.class_names)}?")
    frames = np.concatenate([np.full(len(d), i, np.int64) for i, d in enumerate(found)])
    # one frame is enough: unrelated photos, every box its own "track" (trimmed alone)
    track_ids = np.arange(total) if min_track_frames <= 1 else np.concatenate(track_sequence(found))
    tracked, lengths = np.unique(track_ids[track_ids >= 0], return_counts=True)
    long_enough = np.isin(track_ids, tracked[lengths >= min_track_frames])
    if not long_enough.any():
        raise GhostboxError(f"{what}: none of the {total} detections at conf {conf} in {seen} frames "
                            f"belongs to a track of >= {min_track_frames} frames; give a video or an ordered "
                            f"frame sequence (for unrelated photos use --min-track-frames 1)")
    keep = np.split(long_enough, np.cumsum([len(d) for d in found])[:-1])
    boxes = _box_set([d[k] for d, k in zip(found, keep)], detector)
    n_tracks = int(np.sum(lengths >= min_track_frames))
    log.info("%s: %d of %d detections at conf >= %.2f lie on %d tracks of >= %d frames",
             what, len(boxes), total, conf, n_tracks, min_track_frames)
    return BoxSet.footage(boxes, frames[long_enough], track_ids[long_enough],
                          f"{len(boxes)} of {total} detections at conf>={conf} on {n_tracks} tracks of >= "
                          f"{min_track_frames} frames in {seen} unlabelled frames", images=seen)


def _box_set(found: list[Detections], detector: Detector) -> Detections:
    found = [d for d in found if len(d)]
    if not found:
        return Detections.empty(len(detector.class_names), detector.feature_dim)
    return Detections.merge(found)
