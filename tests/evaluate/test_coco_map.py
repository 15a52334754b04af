"""mAP equals pycocotools within 1e-4 on randomized detections."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from pipeline.evaluate.coco_map import coco_map


def random_case(seed: int, images: int = 30, classes: int = 4):
    rng = np.random.default_rng(seed)
    categories = [{"id": 10 + k, "name": f"c{k}"} for k in range(classes)]
    gt_images, annotations, detections = [], [], []
    for image_id in range(1, images + 1):
        gt_images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for _ in range(int(rng.integers(0, 8))):
            x, y = rng.uniform(0, 560), rng.uniform(0, 400)
            w, h = rng.uniform(8, 80), rng.uniform(8, 80)
            cat = categories[int(rng.integers(classes))]["id"]
            crowd = int(rng.random() < 0.05)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})
            if rng.random() < 0.8:  # a detection near the object, jittered, sometimes the wrong class
                jitter = rng.normal(0, 6, 4)
                det_cat = cat if rng.random() < 0.85 else categories[int(rng.integers(classes))]["id"]
                detections.append({"image_id": image_id, "category_id": det_cat,
                                   "bbox": [x + jitter[0], y + jitter[1], max(2, w + jitter[2]), max(2, h + jitter[3])],
                                   "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 4))):  # false positives
            detections.append({"image_id": image_id, "category_id": categories[int(rng.integers(classes))]["id"],
                               "bbox": [rng.uniform(0, 560), rng.uniform(0, 400),
                                        rng.uniform(8, 80), rng.uniform(8, 80)],
                               "score": float(rng.random() * 0.6)})
    return {"images": gt_images, "annotations": annotations, "categories": categories}, detections


def pycocotools_map(gt_dict, detections):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]
    per_class = []
    for k in range(len(gt_dict["categories"])):
        p = precision[:, :, k, 0, -1]
        per_class.append(float(p[p > -1].mean()) if (p > -1).any() else None)
    return ev.stats[1], ev.stats[0], per_class


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_pycocotools(seed):
    gt, detections = random_case(seed)
    ours = coco_map(gt, detections, [c["name"] for c in gt["categories"]])
    map50, map50_95, per_class = pycocotools_map(gt, detections)
    assert abs(ours.map50 - map50) <= 1e-4
    assert abs(ours.map50_95 - map50_95) <= 1e-4
    for name, theirs in zip(ours.per_class, per_class):
        mine = ours.per_class[name]["ap50_95"]
        assert (mine is None and theirs is None) or abs(mine - theirs) <= 1e-4
    assert 0.05 < ours.map50 < 0.99  # a case with real ranking work in it


def test_perfect_and_empty_detections():
    gt, _ = random_case(5)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"] if not a["iscrowd"]]
    names = [c["name"] for c in gt["categories"]]
    assert coco_map(gt, perfect, names).map50 == pytest.approx(1.0)
    empty = coco_map(gt, [], names)
    assert empty.map50 == 0.0 and all(v["ap50"] == 0.0 for v in empty.per_class.values() if v["gt"])
