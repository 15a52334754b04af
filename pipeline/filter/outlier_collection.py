"""Collect outlier boxes: detections on non-ID objects, for scores that learn from them (`oe`).

Sources, as a user has them:
- a labelled set (a proxy set from `ghostbox proxies`, an OoD pool with its own categories):
  every detection at `conf` that hits no ID ground-truth box (IoU >= 0.5, any class) is an
  outlier; ID objects in the images are left out, whatever class the detector gave them;
- unlabelled images or a video known to hold no ID objects: every detection at `conf`.
The OoD kinds a filter is *tested* on must not be among them, or the test says nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from pipeline.data import load_image, parse_dataset_spec
from pipeline.detect.config import DEFAULT_CONF
from pipeline.detect.detector import Detector
from pipeline.detect.frame_loop import detect_frames
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.id_collection import detect_unlabelled, is_unlabelled_source
from pipeline.matching import best_match, model_class_ids
from pipeline.sources.media_files import MediaReport

log = logging.getLogger(__name__)


def collect_outlier_boxes(detector: Detector, specs: Sequence[str], conf: float = DEFAULT_CONF,
                          max_images: int | None = None, advance: Callable[[int], None] = lambda n: None,
                          report: MediaReport | None = None, crops: bool = False) -> tuple[Detections, str]:
    """(boxes, description) from every spec; raises when none of them yields a box. What reading
    unlabelled specs skipped or cut goes to `report`; `crops`: keep each box's crop."""
    found: list[Detections] = []
    parts = []
    for spec in specs:
        if is_unlabelled_source(spec):
            dets, images = detect_unlabelled(detector, spec, conf, max_images, advance, report, crops)
        else:
            dets, images = _labelled(detector, spec, conf, max_images, advance, crops)
        n = sum(len(d) for d in dets)
        parts.append(f"{n} in {images} images of {spec}")
        found += [d for d in dets if len(d)]
    if not found:
        raise GhostboxError(f"outliers: the detector found no boxes at conf {conf} in {', '.join(specs)}; "
                            f"lower --outlier-conf or give more outlier images")
    return Detections.merge(found), "outlier detections: " + "; ".join(parts)


def _labelled(detector: Detector, spec: str, conf: float, max_images: int | None,
              advance: Callable[[int], None], crops: bool = False) -> tuple[list[Detections], int]:
    dataset = parse_dataset_spec(spec)
    if len(dataset) == 0:
        raise GhostboxError(f"outliers '{spec}': no images")
    if max_images is not None and len(dataset) > max_images:
        dataset = dataset.select(np.arange(max_images))
    is_id_class = model_class_ids(dataset.class_names, detector.class_names) >= 0
    kept = []
    for record, dets in detect_frames(detector, dataset, image=load_image, conf=conf, crops=crops, advance=advance):
        id_boxes = record.boxes_xyxy[is_id_class[record.class_ids]] if len(record.class_ids) else record.boxes_xyxy
        kept.append(dets[best_match(dets.xyxy, id_boxes) < 0])
    return kept, len(dataset)
