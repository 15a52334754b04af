"""Run detector (+ filter) over an ID set and OoD sets and collect what the report needs.

ID set: the detector runs at conf 0.001 as COCO mAP wants; boxes at `conf` (DEFAULT_CONF) are
matched to ground truth, and the true positives are the ID boxes of the OOD metrics.
OoD sets: every detection at `conf` on an image without ID objects is a hallucination; in
a mixed scene (ID and OoD objects both labelled) a detection whose best IoU >= 0.5 match
is an OoD object is a hallucination, one matching nothing is a background false positive.
A dataset says which categories are OoD with an `"ood": true` key on the category; a
set without such keys is all OoD (the VOS OoD splits).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.box_geometry import cut_crops
from pipeline.data import Dataset, load_image, to_coco_dict
from pipeline.detect.frame_loop import detect_frames
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.evaluate.coco_map import MapResult, coco_map, detections_to_coco
from pipeline.matching import best_match, match_true_positives, model_class_ids

if TYPE_CHECKING:  # the runner only calls it: importing it (torch) is the caller's cost
    from pipeline.detect.detector import Detector

log = logging.getLogger(__name__)

MAP_CONF = 0.001  # as COCO/Ultralytics validation: the whole precision-recall curve
MAX_OBJECTS = 100_000  # object numbers: image * MAX_OBJECTS + the object's index among the image's OoD boxes


def stacked(parts: Sequence[Detections], feature_dim: int, num_classes: int) -> Detections:
    """The boxes of many images as one `Detections` (crops kept only where a filter reads them)."""
    parts = [p for p in parts if len(p)]
    return Detections.merge(parts) if parts else Detections.empty(num_classes, feature_dim)


@dataclass
class Worst:
    """A hallucination kept for the report's picture grid."""

    conf: float
    set_name: str
    file_name: str
    label: str
    crop: np.ndarray
    score: float | None = None


@dataclass
class IdResult:
    name: str
    images: int
    map: MapResult
    tp: Detections  # the ID true positives at `conf`
    tp_boxes: int
    fp_boxes: int
    tp_lost: int | None  # ID true positives the filter flagged
    gt_boxes: int
    tp_flagged: np.ndarray | None = None  # (tp_boxes,) the filter's verdict on each true positive


@dataclass
class OodResult:
    name: str
    images: int
    hallucinations: Detections
    hallucination_count: int
    background_fp: int
    id_tp: int
    after_filter: int | None
    id_tp_lost: int | None
    audit: list[dict[str, Any]]
    worst: list[Worst]
    kinds: list[str] = field(default_factory=list)  # OoD category names
    kind_of_hallucination: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1: no object
    objects_per_kind: dict[str, int] = field(default_factory=dict)
    unknown_boxes: int | None = None  # boxes an open-set model called "unknown" (dropped); None: no such class
    object_of_hallucination: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1: no object
    flagged: np.ndarray | None = None  # the filter's verdict on each hallucination


def ood_category_flags(dataset: Dataset) -> np.ndarray:
    """Per class id: is it an OoD category? Sets without any `ood` key are all OoD."""
    categories = getattr(dataset, "categories", None) or []
    if not categories or not any("ood" in c for c in categories):
        return np.ones(max(len(dataset.class_names), 1), bool)
    return np.array([bool(c.get("ood", False)) for c in categories])


def evaluate_id(
    detector: Detector, dataset: Dataset, conf: float, filters: Sequence[Any],
    advance: Callable[[int], None] = lambda n: None, crops: bool = False,
) -> IdResult:
    """`crops`: the true positives keep their crops (for filters with a crop model)."""
    to_model = model_class_ids(dataset.class_names, detector.class_names)
    if (to_model < 0).all():
        raise GhostboxError(
            f"ID set '{dataset.name}': none of its classes {list(dataset.class_names)} is a class of the model "
            f"{list(detector.class_names)}"
        )
    gt = to_coco_dict(dataset)
    # Evaluate on the model's class list: categories the model has, ids remapped.
    model_categories = [{"id": i + 1, "name": n} for i, n in enumerate(detector.class_names)]
    remap = {c["id"]: int(to_model[k]) + 1 for k, c in enumerate(dataset.categories) if to_model[k] >= 0}
    gt_annotations = [dict(a, category_id=remap[a["category_id"]]) for a in gt["annotations"]
                      if a["category_id"] in remap]
    gt = {**gt, "annotations": gt_annotations, "categories": model_categories}
    category_ids = list(range(1, len(model_categories) + 1))
    rows: list[dict[str, Any]] = []
    tp_parts: list[Detections] = []
    tp_flags: list[np.ndarray] = []
    dims = (detector.feature_dim, len(detector.class_names))
    tp_total = fp_total = 0
    lost = 0
    gt_boxes = 0
    with_images = ((record, load_image(record)) for record in dataset)  # the crops are cut from the image
    for (record, image), dets in detect_frames(detector, with_images, image=lambda pair: pair[1], conf=MAP_CONF,
                                               advance=advance):
        rows += detections_to_coco(record.image_id, dets.xyxy, dets.confidence, dets.class_id, category_ids)
        kept = dets[dets.confidence >= conf]
        known = to_model[record.class_ids] >= 0
        gt_cls = to_model[record.class_ids][known]
        gt_boxes += int((~record.crowd[known]).sum())
        tp, ignored = match_true_positives(kept.xyxy, kept.confidence, kept.class_id,
                                           record.boxes_xyxy[known], gt_cls, record.crowd[known])
        tp_total += int(tp.sum())
        fp_total += int((~tp & ~ignored).sum())
        tp_dets = kept[tp]
        if crops:  # cut here, not for the thousands of boxes at MAP_CONF
            tp_dets = tp_dets.with_meta(crops=cut_crops(image, tp_dets.xyxy))
        tp_parts.append(tp_dets)
        if filters:
            flagged = np.asarray(filters[0].apply(tp_dets).data["hallucination"], bool)
            tp_flags.append(flagged)
            lost += int(flagged.sum())
    return IdResult(
        name=dataset.name, images=len(dataset), map=coco_map(gt, rows, list(detector.class_names)),
        tp=stacked(tp_parts, *dims), tp_boxes=tp_total, fp_boxes=fp_total, tp_lost=lost if filters else None,
        gt_boxes=gt_boxes, tp_flagged=np.concatenate(tp_flags) if filters and tp_flags else None,
    )


def evaluate_ood(
    detector: Detector, dataset: Dataset, conf: float, filters: Sequence[Any], audit_conf: float = 0.5,
    worst_k: int = 24, advance: Callable[[int], None] = lambda n: None, crops: bool = False,
) -> OodResult:
    """`crops`: the hallucinations keep their crops (for filters with a crop model)."""
    ood_flags = ood_category_flags(dataset)
    to_model = model_class_ids(dataset.class_names, detector.class_names)
    hallucination_parts: list[Detections] = []
    dims = (detector.feature_dim, len(detector.class_names))
    count = background = id_tp = after = lost = 0
    audit: list[dict[str, Any]] = []
    worst: list[tuple[float, int, Worst]] = []
    serial = 0
    kind_names = list(dataset.class_names)
    kind_of: list[np.ndarray] = []
    object_of: list[np.ndarray] = []  # one number per OoD object in the set: (image, its OoD box)
    flags: list[np.ndarray] = []
    images_seen = 0
    objects_per_kind = dict.fromkeys((n for n, o in zip(kind_names, ood_flags) if o), 0)
    unknown_before = getattr(detector, "unknown_boxes", 0)
    for record, dets in detect_frames(detector, dataset, image=load_image, conf=conf, crops=True, advance=advance):
        is_ood = ood_flags[record.class_ids] if len(record) else np.zeros(0, bool)
        ood_boxes = record.boxes_xyxy[is_ood]
        id_boxes = record.boxes_xyxy[~is_ood]
        if len(id_boxes):
            # Mixed scene: ID objects may be found correctly; only OoD matches are hallucinations.
            id_cls = to_model[record.class_ids[~is_ood]]
            tp, _ = match_true_positives(dets.xyxy, dets.confidence, dets.class_id, id_boxes, id_cls)
            on_ood = best_match(dets.xyxy, ood_boxes) >= 0 if len(ood_boxes) else np.zeros(len(dets), bool)
            ghost = ~tp & on_ood
            background += int((~tp & ~on_ood).sum())
            id_tp += int(tp.sum())
            if filters and tp.any():
                lost += int(np.asarray(filters[0].apply(dets[tp]).data["hallucination"]).sum())
        else:
            ghost = np.ones(len(dets), bool)
        ghosts = dets[ghost]
        hallucination_parts.append(ghosts if crops else ghosts.with_meta(crops=None))
        for cls in record.class_ids[is_ood]:
            objects_per_kind[kind_names[cls]] += 1
        # which OoD object (kind) each hallucination sits on, for per-kind figures; a looser
        # IoU than for matching, since a hallucinated box often covers only part of the object
        on = best_match(ghosts.xyxy, ood_boxes, iou=0.3) if len(ood_boxes) else np.full(len(ghosts), -1)
        ood_cls = record.class_ids[is_ood]
        kind_of.append(np.where(on >= 0, ood_cls[np.maximum(on, 0)] if len(ood_cls) else -1, -1))
        object_of.append(np.where(on >= 0, images_seen * MAX_OBJECTS + on, -1))
        images_seen += 1
        count += len(ghosts)
        scores = None
        if filters and len(ghosts):
            filtered = filters[0].apply(ghosts)
            flags.append(np.asarray(filtered.data["hallucination"], bool))
            after += int((~flags[-1]).sum())
            scores = np.asarray(filtered.data["score"])
        high = dets[dets.confidence >= audit_conf]
        if len(high) and not len(id_boxes):
            audit.append({
                "file_name": record.file_name,
                "max_conf": round(float(high.confidence.max()), 4),
                "boxes": [{"xyxy": [round(float(v), 1) for v in box], "label": label, "conf": round(float(c), 4)}
                          for box, label, c in zip(high.xyxy, high.labels, high.confidence)],
            })
        ghost_crops = ghosts.crops or []  # detected with crops=True: one per box
        for i in range(len(ghosts)):
            serial += 1
            item = Worst(float(ghosts.confidence[i]), dataset.name, record.file_name, ghosts.labels[i],
                         ghost_crops[i], None if scores is None else float(scores[i]))
            entry = (item.conf, serial, item)
            if len(worst) < worst_k:
                heapq.heappush(worst, entry)
            elif entry[0] > worst[0][0]:
                heapq.heapreplace(worst, entry)
    audit.sort(key=lambda a: -a["max_conf"])
    return OodResult(
        name=dataset.name, images=len(dataset),
        hallucinations=stacked(hallucination_parts, *dims), hallucination_count=count,
        background_fp=background, id_tp=id_tp, after_filter=after if filters else None,
        id_tp_lost=lost if filters else None, audit=audit, worst=[w for _, _, w in sorted(worst, reverse=True)],
        kinds=kind_names, kind_of_hallucination=np.concatenate(kind_of) if kind_of else np.zeros(0, np.int64),
        objects_per_kind=objects_per_kind,
        object_of_hallucination=np.concatenate(object_of) if object_of else np.zeros(0, np.int64),
        flagged=(np.concatenate(flags) if flags else np.zeros(0, bool)) if filters else None,
        unknown_boxes=(detector.unknown_boxes - unknown_before
                       if getattr(detector, "unknown_class", None) is not None else None),
    )
