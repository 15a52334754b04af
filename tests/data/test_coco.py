"""COCO instances loader and the COCO ground-truth writer."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data import load_bdd, load_coco, to_coco_dict
from pipeline.errors import GhostboxError


def coco_content() -> dict:
    return {
        "images": [
            {"id": 7, "file_name": "x.jpg", "width": 100, "height": 80},
            {"id": 3, "file_name": "y.png"},  # size comes from the image header
            {"id": 9, "file_name": "sub/z.jpg", "width": 50, "height": 50},
        ],
        "annotations": [
            # Listed out of image order on purpose.
            {"id": 1, "image_id": 3, "category_id": 20, "bbox": [5, 5, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 10, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 20, "bbox": [0, 0, 100, 80], "iscrowd": 1},
            {"id": 4, "image_id": 7, "category_id": 10, "bbox": [90, 70, 30, 30]},  # clipped
            {"id": 5, "image_id": 7, "category_id": 10, "bbox": [5, 5, 0, 10]},  # no area
            {"id": 6, "image_id": 3, "category_id": 30, "bbox": [-10, 2, 30, 40]},  # clipped
        ],
        "categories": [
            {"id": 10, "name": "mailbox", "ood": True, "tier": "near", "group": "street"},
            {"id": 20, "name": "cone", "ood": True, "tier": "near", "supercategory": "x"},
            {"id": 30, "name": "elephant", "ood": True, "tier": "far"},
        ],
    }


def write_coco(tmp_path: Path, content: dict, images: bool = True) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(content))
    if images:
        (tmp_path / "images" / "sub").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "images" / "x.jpg"), np.zeros((80, 100, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "images" / "y.png"), np.zeros((30, 40, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "images" / "sub" / "z.jpg"), np.zeros((50, 50, 3), np.uint8))
    return path


def test_coco_boxes_categories_and_crowd(tmp_path: Path) -> None:
    dataset = load_coco(write_coco(tmp_path, coco_content()))
    assert dataset.class_names == ("mailbox", "cone", "elephant")
    assert dataset.categories[0] == {"id": 10, "name": "mailbox", "ood": True, "tier": "near",
                                     "group": "street"}
    assert dataset.categories[2]["tier"] == "far"
    assert [r.image_id for r in dataset] == [7, 3, 9]

    x = dataset[0]
    assert (x.width, x.height) == (100, 80)
    np.testing.assert_allclose(x.boxes_xyxy, [[10, 20, 40, 60], [0, 0, 100, 80],
                                              [90, 70, 100, 80]])
    assert x.class_ids.tolist() == [0, 1, 0]
    assert x.crowd.tolist() == [False, True, False]
    assert x.path == tmp_path / "images" / "x.jpg"

    y = dataset[1]
    assert (y.width, y.height) == (40, 30)
    np.testing.assert_allclose(y.boxes_xyxy, [[5, 5, 15, 15], [0, 2, 20, 30]])
    assert y.class_ids.tolist() == [1, 2]

    assert dataset[2].path == tmp_path / "images" / "sub" / "z.jpg"
    assert dataset.warnings["box_degenerate"] == 1
    assert dataset.warnings["box_clipped"] == 2  # one at load (size known), one lazily


def test_coco_class_subset(tmp_path: Path) -> None:
    dataset = load_coco(write_coco(tmp_path, coco_content()), class_names=["elephant", "cone"])
    assert [c["id"] for c in dataset.categories] == [30, 20]
    assert dataset[1].class_ids.tolist() == [1, 0]
    assert dataset.warnings["ignored_category"] == 3
    with pytest.raises(GhostboxError, match="'dog' is not a category"):
        load_coco(write_coco(tmp_path, coco_content()), class_names=["dog"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["annotations"][1].update(bbox=[1, "2", 3, 4]),
         r"annotation id 2: field 'bbox' is \[1, '2', 3, 4\]"),
        (lambda c: c["annotations"][1].update(bbox=[1, 2, 3]), "annotation id 2: field 'bbox'"),
        (lambda c: c["images"][1].pop("file_name"), r"images\[1\] \(id 3\): field 'file_name'"),
        (lambda c: c["images"].append({"id": 7, "file_name": "dup.jpg"}), "id 7 is listed twice"),
        (lambda c: c["images"][0].update(width=-1), "field 'width' is -1"),
        (lambda c: c["annotations"][0].update(category_id=99), "'category_id' is 99"),
        (lambda c: c["annotations"][0].update(image_id=99), "'image_id' is 99"),
        (lambda c: c.pop("categories"), "field 'categories' is missing"),
        (lambda c: c["categories"][1].update(id=10), "category id 10 is listed twice"),
    ],
)
def test_coco_validation_errors(tmp_path: Path, change, message: str) -> None:
    content = coco_content()
    change(content)
    path = write_coco(tmp_path, content, images=False)
    with pytest.raises(GhostboxError, match=message) as error:
        load_coco(path)
    assert str(path) in str(error.value)


def test_coco_lenient_counts_unknown_references(tmp_path: Path) -> None:
    content = coco_content()
    content["annotations"][0]["category_id"] = 99
    content["annotations"][1]["image_id"] = 99
    dataset = load_coco(write_coco(tmp_path, content), strict=False)
    assert dataset.warnings["unknown_category"] == 1
    assert dataset.warnings["unknown_image"] == 1
    assert sum(len(r) for r in dataset) == 3


def test_coco_not_a_coco_file(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text("[]")
    with pytest.raises(GhostboxError, match="expected a COCO object"):
        load_coco(path)
    path.write_text('{"categories": []}')
    with pytest.raises(GhostboxError, match="field 'images' is missing"):
        load_coco(path)


def test_coco_image_dir_defaults(tmp_path: Path) -> None:
    annotations = tmp_path / "coco" / "annotations"
    annotations.mkdir(parents=True)
    (tmp_path / "coco" / "val2017").mkdir()
    path = annotations / "instances_val2017_ood_rm_overlap.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert load_coco(path).image_dir == tmp_path / "coco" / "val2017"
    lonely = tmp_path / "lonely.json"
    lonely.write_text(json.dumps({"images": [], "categories": []}))
    dataset = load_coco(lonely)
    assert dataset.image_dir == tmp_path / "images"
    assert dataset.warnings["image_dir_missing"] == 1
    assert dataset.warnings["no_annotations_key"] == 1


def test_to_coco_dict_round_trip_and_cocoeval(tmp_path: Path) -> None:
    dataset = load_coco(write_coco(tmp_path, coco_content()))
    ground_truth = to_coco_dict(dataset)
    again_path = tmp_path / "again.json"
    again_path.write_text(json.dumps(ground_truth))
    again = load_coco(again_path, tmp_path / "images")
    assert again.categories == dataset.categories
    for first, second in zip(dataset, again):
        assert first.image_id == second.image_id
        np.testing.assert_allclose(first.boxes_xyxy, second.boxes_xyxy)
        assert first.crowd.tolist() == second.crowd.tolist()
    crowd = [a for a in ground_truth["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["area"] == 100 * 80

    detections = [{"image_id": a["image_id"], "category_id": a["category_id"],
                   "bbox": a["bbox"], "score": 0.9}
                  for a in ground_truth["annotations"] if not a["iscrowd"]]
    # Every box found and the crowd region ignored: AP50 is 1 in both COCO implementations.
    assert _ap50_faster_coco_eval(ground_truth, detections) == pytest.approx(1.0)
    assert _ap50_pycocotools(ground_truth, detections) == pytest.approx(1.0)
    # A wrong class on one box must show.
    detections[0]["category_id"] = 30 if detections[0]["category_id"] != 30 else 10
    assert _ap50_faster_coco_eval(ground_truth, detections) < 0.99


def _ap50_faster_coco_eval(ground_truth: dict, detections: list[dict]) -> float:
    from faster_coco_eval import COCO, COCOeval_faster

    coco = COCO(copy.deepcopy(ground_truth))
    evaluator = COCOeval_faster(coco, coco.loadRes(copy.deepcopy(detections)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[1])


def _ap50_pycocotools(ground_truth: dict, detections: list[dict]) -> float:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(ground_truth)
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(detections)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


def test_to_coco_dict_from_bdd_uses_category_ids(tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"name": "a.jpg", "labels": [
        {"id": "1", "category": "car", "box2d": {"x1": 1, "y1": 2, "x2": 11, "y2": 7}},
        {"id": "2", "category": "pedestrian", "attributes": {"crowd": True},
         "box2d": {"x1": 0, "y1": 0, "x2": 4, "y2": 4}}]}]))
    ground_truth = to_coco_dict(load_bdd(labels, class_names=["pedestrian", "car"],
                                         image_size=(20, 10)))
    assert ground_truth["categories"] == [{"id": 1, "name": "pedestrian"}, {"id": 2, "name": "car"}]
    assert ground_truth["images"] == [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}]
    assert ground_truth["annotations"][0] == {"id": 1, "image_id": 1, "category_id": 2,
                                              "bbox": [1.0, 2.0, 10.0, 5.0], "area": 50.0,
                                              "iscrowd": 0}
    assert ground_truth["annotations"][1]["iscrowd"] == 1
