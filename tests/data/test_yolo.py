"""Ultralytics YOLO-format loader."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data import load_yolo
from pipeline.data.yolo import label_path_for
from pipeline.errors import GhostboxError


def write_yolo(root: Path, data_yaml: str | None = None) -> Path:
    for split, names in (("val", ["a.jpg", "b.png", "c.jpg"]), ("train", ["t.jpg"])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(root / "images" / split / name), np.zeros((50, 100, 3), np.uint8))
    (root / "labels" / "val" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n"
        "\n"
        "2 0.95 0.1 0.2 0.4\n"  # reaches past the right and top edges
    )
    (root / "labels" / "val" / "b.txt").write_text(
        "1 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6\n"  # polygon
        "1 0.5 0.5 0.0 0.1\n"  # no width
    )
    # c.jpg has no label file: a background image.
    (root / "labels" / "train" / "t.txt").write_text("1 0.5 0.5 1 1\n")
    path = root / "data.yaml"
    path.write_text(data_yaml or (
        f"path: {root}\ntrain: images/train\nval: images/val\n"
        "names:\n  0: pedestrian\n  1: car\n  2: traffic sign\n"))
    return path


def test_yolo_val_split(tmp_path: Path) -> None:
    dataset = load_yolo(write_yolo(tmp_path), "val")
    assert dataset.class_names == ("pedestrian", "car", "traffic sign")
    assert [r.file_name for r in dataset] == ["images/val/a.jpg", "images/val/b.png",
                                             "images/val/c.jpg"]
    a = dataset[0]
    assert (a.width, a.height) == (100, 50)
    np.testing.assert_allclose(a.boxes_xyxy, [[40, 15, 60, 35], [85, 0, 100, 15]], atol=1e-4)
    assert a.class_ids.tolist() == [0, 2]
    assert a.path == tmp_path / "images" / "val" / "a.jpg"
    b = dataset[1]
    np.testing.assert_allclose(b.boxes_xyxy, [[10, 10, 30, 30]], atol=1e-4)
    assert len(dataset[2]) == 0
    assert dataset.warnings["box_clipped"] == 1
    assert dataset.warnings["box_degenerate"] == 1
    assert dataset.warnings["segment_to_box"] == 1
    assert dataset.warnings["label_file_missing"] == 1
    assert load_yolo(tmp_path / "data.yaml", "train")[0].boxes_xyxy.tolist() == [[0, 0, 100, 50]]


def test_yolo_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_yolo(tmp_path)
    label = tmp_path / "labels" / "val" / "b.txt"
    label.write_text("1 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1\n")
    with pytest.raises(GhostboxError, match=r"b\.txt:2: expected 'class cx cy w h', got 4"):
        load_yolo(path)
    label.write_text("1 0.5 0.5 0.1 0.1\n\n1 0.5 0.5 abc 0.1\n")
    with pytest.raises(GhostboxError, match=r"b\.txt:3: non-numeric value"):
        load_yolo(path)
    label.write_text("1.5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(GhostboxError, match=r"b\.txt:1: invalid value"):
        load_yolo(path)


def test_yolo_class_beyond_names(tmp_path: Path) -> None:
    path = write_yolo(tmp_path)
    (tmp_path / "labels" / "val" / "c.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(GhostboxError, match=r"c\.txt:1: class 7 is beyond the 3 names"):
        load_yolo(path)
    assert load_yolo(path, strict=False).warnings["unknown_category"] == 1


def test_yolo_class_subset(tmp_path: Path) -> None:
    dataset = load_yolo(write_yolo(tmp_path), class_names=["traffic sign", "pedestrian"])
    assert dataset[0].class_ids.tolist() == [1, 0]
    assert dataset.warnings["ignored_category"] == 2  # the two car lines of b.txt


def test_yolo_list_file_and_names_list(tmp_path: Path) -> None:
    write_yolo(tmp_path)
    (tmp_path / "val.txt").write_text("./images/val/c.jpg\nimages/val/a.jpg\n")
    path = tmp_path / "list.yaml"
    path.write_text("val: [val.txt, images/train/t.jpg]\nnames: [pedestrian, car, sign]\n")
    dataset = load_yolo(path)
    assert [r.file_name for r in dataset] == ["images/train/t.jpg", "images/val/a.jpg",
                                             "images/val/c.jpg"]
    (tmp_path / "val.txt").write_text("images/val/a.jpg\nimages/val/missing.jpg\n")
    with pytest.raises(GhostboxError, match=r"val\.txt:2: image 'images/val/missing.jpg' not found"):
        load_yolo(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("val: images/val\n", "field 'names' is missing"),
        ("val: images/val\nnames: {0: a, 2: b}\n", "field 'names' has keys"),
        ("val: images/val\nnames: [a, b]\nnc: 3\n", "field 'nc' is 3"),
        ("train: images/train\nnames: [a]\n", "no 'val' entry \\(has train\\)"),
        ("val: images/nothing\nnames: [a]\n", "field 'val' is 'images/nothing'"),
        ("val: [images/val\nnames: [a]\n", "invalid YAML at line"),
        ("path: nowhere\nval: images/val\nnames: [a]\n", "field 'path' is 'nowhere'"),
    ],
)
def test_yolo_yaml_errors(tmp_path: Path, text: str, message: str) -> None:
    write_yolo(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GhostboxError, match=message):
        load_yolo(path)


def test_label_path_rule() -> None:
    assert label_path_for(Path("/d/images/val/x.y.jpg")) == Path("/d/labels/val/x.y.txt")
    assert label_path_for(Path("/images/d/images/a.png")) == Path("/images/d/labels/a.txt")
