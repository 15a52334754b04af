"""Match detections to ground-truth boxes (IoU >= 0.5), as COCO's evaluation does per image."""

from __future__ import annotations

import numpy as np


def model_class_ids(dataset_names: list[str] | tuple[str, ...], model_names: tuple[str, ...]) -> np.ndarray:
    """Dataset class id -> model class id, matched by name (-1 for classes the model lacks)."""
    index = {n: i for i, n in enumerate(model_names)}
    return np.array([index.get(n, -1) for n in dataset_names], np.int64)


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersection areas (len(a), len(b)), areas of a, areas of b) of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    return inter, (a[:, 2:] - a[:, :2]).clip(0).prod(-1), (b[:, 2:] - b[:, :2]).clip(0).prod(-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    inter, area_a, area_b = _overlap(a, b)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_true_positives(
    det_xyxy: np.ndarray, det_conf: np.ndarray, det_cls: np.ndarray,
    gt_xyxy: np.ndarray, gt_cls: np.ndarray, gt_crowd: np.ndarray | None = None, iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy by confidence: each detection takes the best unmatched same-class GT box.

    Returns (true_positive (N,) bool, ignored (N,) bool): detections matching only a crowd
    region are neither true nor false positives, as in COCO.
    """
    n = len(det_xyxy)
    tp = np.zeros(n, bool)
    ignored = np.zeros(n, bool)
    if n == 0 or len(gt_xyxy) == 0:
        return tp, ignored
    crowd = np.zeros(len(gt_xyxy), bool) if gt_crowd is None else gt_crowd.astype(bool)
    ious = box_iou(det_xyxy, gt_xyxy)
    ious[det_cls[:, None] != gt_cls[None, :]] = 0.0
    taken = np.zeros(len(gt_xyxy), bool)
    for i in np.argsort(-det_conf, kind="stable"):
        candidates = np.where(~taken & ~crowd & (ious[i] >= iou), ious[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= iou:
            taken[j] = True
            tp[i] = True
        elif crowd.any() and (ious[i][crowd] >= iou).any():
            ignored[i] = True
    return tp, ignored


def best_match(det_xyxy: np.ndarray, gt_xyxy: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Index of the GT box each detection overlaps most (class-agnostic), -1 below `iou`."""
    if len(det_xyxy) == 0:
        return np.zeros(0, np.int64)
    if len(gt_xyxy) == 0:
        return np.full(len(det_xyxy), -1, np.int64)
    ious = box_iou(det_xyxy, gt_xyxy)
    best = ious.argmax(1)
    return np.where(ious[np.arange(len(det_xyxy)), best] >= iou, best, -1)


def intersection_over_first(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)): the share of each box of `a` that lies inside each box of `b`."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    inter, area_a, _ = _overlap(a, b)
    return inter / np.maximum(area_a[:, None], 1e-9)


MATCH_NONE, MATCH_IOU, MATCH_INSIDE = 0, 1, 2


def match_occluded(det_xyxy: np.ndarray, visible_xyxy: np.ndarray, full_xyxy: np.ndarray, iou: float = 0.5,
                   inside: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(object index or -1, how) per detection, for ground truth of partly hidden objects.

    A stream's object is known by two boxes: its visible pixels and its whole extent. A
    detection of a half-hidden car may fit either, so a detection is *on* an object when its
    IoU with either box reaches `iou` (how = MATCH_IOU, the object with the higher IoU). A
    detection that reaches no such IoU but lies mostly inside an object's whole box
    (intersection over the detection >= `inside`: a "pedestrian" on a bench's backrest) is
    on a part of it (how = MATCH_INSIDE, the object holding most of it).
    """
    n = len(det_xyxy)
    index = np.full(n, -1, np.int64)
    how = np.full(n, MATCH_NONE, np.int8)
    if n == 0 or len(visible_xyxy) == 0:
        return index, how
    overlap = np.maximum(box_iou(det_xyxy, visible_xyxy), box_iou(det_xyxy, full_xyxy))
    best = overlap.argmax(1)
    hit = overlap[np.arange(n), best] >= iou
    index[hit], how[hit] = best[hit], MATCH_IOU
    share = intersection_over_first(det_xyxy, full_xyxy)
    holder = share.argmax(1)
    part = ~hit & (share[np.arange(n), holder] >= inside)
    index[part], how[part] = holder[part], MATCH_INSIDE
    return index, how
