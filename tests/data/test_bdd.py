"""BDD-100K loader: det_20 and 2018 quirks, clipping, warnings, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data import BDD10, load_bdd, load_image
from pipeline.data.bdd import default_bdd_image_dir
from pipeline.errors import GhostboxError

WIDTH, HEIGHT = 160, 120


def box(x1: float, y1: float, x2: float, y2: float) -> dict:
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def tricky_frames() -> list[dict]:
    return [
        {
            "name": "a.jpg",
            "attributes": {"weather": "clear", "scene": "city street", "timeofday": "daytime"},
            "labels": [
                {"id": "1", "category": "car", "attributes": {"occluded": True,
                 "truncated": False, "trafficLightColor": "none"}, "box2d": box(10, 20, 50, 60)},
                {"id": "2", "category": "pedestrian", "attributes": {"crowd": True,
                 "occluded": False}, "box2d": box(60, 10, 90, 100)},
                # Reaches past the right and bottom edges: clipped to the image.
                {"id": "3", "category": "traffic light", "attributes":
                 {"trafficLightColor": "green"}, "box2d": box(140, 100, 175.5, 130)},
                # x2 < x1: dropped.
                {"id": "4", "category": "truck", "box2d": box(80, 20, 70, 40)},
                # A real BDD class outside the 10 benchmark classes.
                {"id": "5", "category": "other vehicle", "box2d": box(1, 1, 5, 5)},
            ],
        },
        {"name": "b.jpg", "attributes": {"weather": "rainy"}},  # no `labels` at all
        {
            "name": "c.jpg",
            "labels": [  # 2018 format
                {"id": 10, "category": "person", "box2d": box(1, 2, 11, 22),
                 "manualShape": True},
                {"id": 11, "category": "bike", "box2d": box(20, 20, 40, 40)},
                {"id": 12, "category": "motor", "box2d": box(50, 50, 70, 70)},
                {"id": 13, "category": "lane", "attributes": {"laneDirection": "parallel"},
                 "poly2d": [{"vertices": [[0, 0], [10, 10]], "types": "LL", "closed": False}]},
                {"id": 14, "category": "drivable area", "poly2d": [
                    {"vertices": [[0, 0], [10, 0], [10, 10]], "types": "LLL", "closed": True}]},
            ],
        },
        {"name": "d.jpg", "labels": []},
    ]


def write_bdd(tmp_path: Path, frames: list, images: bool = True) -> Path:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(frames), encoding="utf-8")
    if images:
        (tmp_path / "images").mkdir(exist_ok=True)
        for frame in frames:
            image = np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
            cv2.imwrite(str(tmp_path / "images" / frame["name"]), image)
    return labels


def test_tricky_frames_load_with_clipping_crowd_and_2018_names(tmp_path: Path) -> None:
    dataset = load_bdd(write_bdd(tmp_path, tricky_frames()))
    assert len(dataset) == 4
    assert dataset.class_names == BDD10
    assert [r.file_name for r in dataset] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]

    a = dataset[0]
    assert (a.width, a.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(a.boxes_xyxy, [[10, 20, 50, 60], [60, 10, 90, 100],
                                              [140, 100, WIDTH, HEIGHT]])
    assert a.boxes_xyxy.dtype == np.float32
    assert a.class_ids.tolist() == [BDD10.index("car"), BDD10.index("pedestrian"),
                                    BDD10.index("traffic light")]
    assert a.crowd.tolist() == [False, True, False]
    assert a.attributes == {"weather": "clear", "scene": "city street", "timeofday": "daytime"}
    assert a.box_attributes["occluded"].tolist() == [True, False, None]
    assert a.box_attributes["trafficLightColor"].tolist() == ["none", None, "green"]
    assert "crowd" not in a.box_attributes

    b = dataset[1]
    assert len(b) == 0 and b.boxes_xyxy.shape == (0, 4)
    assert b.attributes == {"weather": "rainy"}

    c = dataset[2]
    assert c.class_ids.tolist() == [BDD10.index("pedestrian"), BDD10.index("bicycle"),
                                    BDD10.index("motorcycle")]
    np.testing.assert_allclose(c.boxes_xyxy[0], [1, 2, 11, 22])
    assert dataset[-1].file_name == "d.jpg"

    warnings = dataset.warnings
    assert warnings["box_degenerate"] == 1
    assert warnings["box_clipped"] == 1
    assert warnings["ignored_category"] == 1
    assert warnings["non_box_label"] == 2
    assert warnings["unknown_category"] == 0
    assert any("a.jpg" in line for line in warnings.lines())


def test_lazy_clip_is_counted_once(tmp_path: Path) -> None:
    dataset = load_bdd(write_bdd(tmp_path, tricky_frames()))
    assert dataset.warnings["box_clipped"] == 0  # sizes not read yet
    for _ in range(2):
        list(dataset)
    assert dataset.warnings["box_clipped"] == 1


def test_box_pushed_wholly_outside_is_dropped(tmp_path: Path) -> None:
    frames = [{"name": "a.jpg", "labels": [
        {"id": "1", "category": "car", "box2d": box(170, 10, 200, 20)},
        {"id": "2", "category": "car", "box2d": box(-30, -5, 20, 20)}]}]
    dataset = load_bdd(write_bdd(tmp_path, frames))
    record = dataset[0]
    np.testing.assert_allclose(record.boxes_xyxy, [[0, 0, 20, 20]])
    assert dataset.warnings["box_degenerate"] == 1
    assert dataset.warnings["box_clipped"] == 1


def test_image_size_argument_clips_at_load_without_images(tmp_path: Path) -> None:
    labels = write_bdd(tmp_path, tricky_frames(), images=False)
    dataset = load_bdd(labels, image_size=(WIDTH, HEIGHT))
    assert dataset.warnings["box_clipped"] == 1
    assert dataset.warnings["image_dir_missing"] == 1
    record = dataset[0]
    assert (record.width, record.height) == (WIDTH, HEIGHT)
    assert record.boxes_xyxy[2].tolist() == [140, 100, WIDTH, HEIGHT]


def test_missing_images_leave_size_unknown_and_boxes_unclipped(tmp_path: Path) -> None:
    dataset = load_bdd(write_bdd(tmp_path, tricky_frames(), images=False))
    record = dataset[0]
    assert record.width is None and record.height is None
    assert record.boxes_xyxy[2].tolist() == [140, 100, 175.5, 130]
    assert dataset.warnings["image_size_unknown"] == 1
    with pytest.raises(GhostboxError, match=r"a\.jpg: image file not found"):
        load_image(record)


def test_load_image_returns_bgr_and_names_unreadable_file(tmp_path: Path) -> None:
    dataset = load_bdd(write_bdd(tmp_path, tricky_frames()))
    image = load_image(dataset[0])
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    (tmp_path / "images" / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(GhostboxError, match=r"b\.jpg: cannot decode image"):
        load_image(dataset[1])


def test_class_subset_reindexes_and_counts_others(tmp_path: Path) -> None:
    world = ("pedestrian", "car", "traffic light", "traffic sign")
    dataset = load_bdd(write_bdd(tmp_path, tricky_frames()), class_names=world)
    assert dataset.class_names == world
    assert [c["name"] for c in dataset.categories] == list(world)
    assert dataset[0].class_ids.tolist() == [1, 0, 2]
    assert dataset[2].class_ids.tolist() == [0]  # person -> pedestrian; bike, motor ignored
    # other vehicle, truck (its bad box is never looked at), bike, motor
    assert dataset.warnings["ignored_category"] == 4
    assert dataset.warnings["box_degenerate"] == 0


def test_bad_class_names_are_rejected(tmp_path: Path) -> None:
    labels = write_bdd(tmp_path, tricky_frames(), images=False)
    with pytest.raises(GhostboxError, match="'person' is not a BDD-100K box class.*pedestrian"):
        load_bdd(labels, class_names=["person", "car"])
    with pytest.raises(GhostboxError, match="listed twice"):
        load_bdd(labels, class_names=["car", "car"])


def test_unknown_category_is_an_error_when_strict_and_counted_otherwise(tmp_path: Path) -> None:
    frames = tricky_frames()
    frames[3]["labels"] = [{"id": "77", "category": "cra", "box2d": box(1, 1, 9, 9)}]
    labels = write_bdd(tmp_path, frames, images=False)
    with pytest.raises(GhostboxError) as error:
        load_bdd(labels)
    message = str(error.value)
    assert str(labels) in message and "'d.jpg'" in message and "77" in message
    assert "'cra'" in message and "\n" not in message
    dataset = load_bdd(labels, strict=False)
    assert dataset.warnings["unknown_category"] == 1
    assert len(dataset[3]) == 0


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    labels = tmp_path / "det_val.json"
    labels.write_text('[\n  {"name": "a.jpg", "labels": []},\n  {"name": "b.jpg",, }\n]')
    with pytest.raises(GhostboxError, match=r"det_val\.json: invalid JSON at line 3 column"):
        load_bdd(labels)
    labels.write_text('[{"name": "a.jpg"} {"name": "b.jpg"}]')
    with pytest.raises(GhostboxError, match=r"line 1 column 20: expecting ',' or ']'"):
        load_bdd(labels)
    labels.write_text('{"frames": []}')
    with pytest.raises(GhostboxError, match="expected a JSON list"):
        load_bdd(labels)


def test_frame_without_name_names_its_index(tmp_path: Path) -> None:
    frames = tricky_frames()
    del frames[2]["name"]
    with pytest.raises(GhostboxError, match=r"frame 2: field 'name' is missing"):
        load_bdd(_write_only(tmp_path, frames))


def _write_only(tmp_path: Path, frames: list) -> Path:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(frames))
    return path


def test_non_numeric_coordinate_names_frame_and_label(tmp_path: Path) -> None:
    frames = tricky_frames()
    frames[0]["labels"][1]["box2d"]["x2"] = "90"
    with pytest.raises(GhostboxError) as error:
        load_bdd(_write_only(tmp_path, frames))
    message = str(error.value)
    assert "'a.jpg'" in message and "label 2" in message and "'x2'" in message
    assert "'90'" in message


def test_label_without_geometry_is_error_when_strict(tmp_path: Path) -> None:
    frames = [{"name": "a.jpg", "labels": [{"id": "9", "category": "car"}]}]
    with pytest.raises(GhostboxError, match="label 9: no 'box2d'"):
        load_bdd(_write_only(tmp_path, frames))
    assert load_bdd(_write_only(tmp_path, frames), strict=False).warnings["missing_box"] == 1


def test_default_image_dir_follows_bdd_layout(tmp_path: Path) -> None:
    det = tmp_path / "bdd100k" / "labels" / "det_20" / "det_val.json"
    old = tmp_path / "bdd100k" / "labels" / "bdd100k_labels_images_train.json"
    det.parent.mkdir(parents=True)
    assert default_bdd_image_dir(det) == (tmp_path / "bdd100k/images/100k/val").resolve()
    assert default_bdd_image_dir(old) == (tmp_path / "bdd100k/images/100k/train").resolve()
    assert default_bdd_image_dir(tmp_path / "w" / "labels.json") == tmp_path / "w" / "images"
    det.write_text("[]")
    dataset = load_bdd(det, tmp_path / "elsewhere")
    assert dataset.image_dir == tmp_path / "elsewhere" and len(dataset) == 0
    assert dataset.name == "det_val"


def test_select_shares_labels_and_keeps_order(tmp_path: Path) -> None:
    dataset = load_bdd(write_bdd(tmp_path, tricky_frames()))
    view = dataset.select([2, 0])
    assert [r.file_name for r in view] == ["c.jpg", "a.jpg"]
    assert view[1].image_id == dataset[0].image_id == 1
    assert view.num_boxes() == 6
    with pytest.raises(IndexError):
        view[2]
