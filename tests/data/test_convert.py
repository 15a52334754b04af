"""BDD -> Ultralytics YOLO conversion and its round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.data import BDD10, LoadWarnings, convert_bdd_to_yolo, load_bdd, load_yolo
from pipeline.errors import GhostboxError

WIDTH, HEIGHT = 320, 180


def write_split(root: Path, split: str, seed: int, n_frames: int = 6) -> Path:
    """A BDD layout: labels/det_20/det_<split>.json and images/100k/<split>/."""
    rng = np.random.default_rng(seed)
    images = root / "images" / "100k" / split
    images.mkdir(parents=True)
    frames = []
    for k in range(n_frames):
        name = f"{split}{k:03d}.jpg"
        cv2.imwrite(str(images / name), np.full((HEIGHT, WIDTH, 3), k * 10, np.uint8))
        labels = []
        for j in range(int(rng.integers(0, 5))):
            x1, y1 = rng.uniform(-20, WIDTH - 10), rng.uniform(-20, HEIGHT - 10)
            x2, y2 = x1 + rng.uniform(3, 150), y1 + rng.uniform(3, 90)
            labels.append({"id": f"{k}-{j}", "category": BDD10[int(rng.integers(0, 10))],
                           "attributes": {"crowd": bool(j == 3)},
                           "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}})
        frames.append({"name": name, "labels": labels} if labels else {"name": name})
    path = root / "labels" / "det_20" / f"det_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(frames))
    return path


def test_round_trip_bdd_yolo_bdd(tmp_path: Path) -> None:
    labels = write_split(tmp_path / "bdd100k", "val", seed=1, n_frames=12)
    out = tmp_path / "yolo"
    tally = LoadWarnings()
    data_yaml = convert_bdd_to_yolo(labels, None, out, warnings=tally)
    assert data_yaml == out.resolve() / "data.yaml"
    config = yaml.safe_load(data_yaml.read_text())
    assert config["path"] == str(out.resolve()) and Path(config["path"]).is_absolute()
    assert config["val"] == "images/val" and config["train"] == "images/val"
    assert config["names"] == dict(enumerate(BDD10))
    assert "download" not in config

    source = load_bdd(labels)
    converted = load_yolo(data_yaml, "val")
    assert converted.class_names == BDD10
    assert len(converted) == len(source) == 12
    # Six decimals of a normalised coordinate: x = (cx -/+ w/2) * W errs by <= W * 1e-6.
    tolerance = 1e-6 * max(WIDTH, HEIGHT) + 1e-4
    n_boxes = n_crowd = 0
    for original, again in zip(source, converted):
        assert Path(again.file_name).name == original.file_name
        keep = ~original.crowd
        n_crowd += int(original.crowd.sum())
        n_boxes += int(keep.sum())
        assert again.class_ids.tolist() == original.class_ids[keep].tolist()
        np.testing.assert_allclose(again.boxes_xyxy, original.boxes_xyxy[keep], atol=tolerance,
                                   rtol=0)
    assert n_boxes > 10 and n_crowd >= 1
    assert tally["crowd_skipped"] == n_crowd
    assert tally["val.box_clipped"] >= 1
    # Hard links by default: the image is the same file, not a copy.
    first = source[0]
    assert os.path.samefile(out / "images" / "val" / first.file_name, first.path)
    assert (out / "labels" / "val" / first.file_name).with_suffix(".txt").is_file()


def test_empty_frame_gets_empty_label_file(tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "e.jpg"), np.zeros((8, 8, 3), np.uint8))
    labels.write_text(json.dumps([{"name": "e.jpg"}]))
    data_yaml = convert_bdd_to_yolo(labels, None, tmp_path / "out", link="copy")
    assert (tmp_path / "out" / "labels" / "val" / "e.txt").read_text() == ""
    assert len(load_yolo(data_yaml)[0]) == 0


def test_two_splits_and_link_modes(tmp_path: Path) -> None:
    root = tmp_path / "bdd100k"
    files = {"train": write_split(root, "train", seed=2), "val": write_split(root, "val", seed=3)}
    out = tmp_path / "yolo"
    data_yaml = convert_bdd_to_yolo(files, None, out, link="symlink",
                                    class_names=["car", "pedestrian"])
    config = yaml.safe_load(data_yaml.read_text())
    assert (config["train"], config["val"]) == ("images/train", "images/val")
    assert config["names"] == {0: "car", 1: "pedestrian"}
    assert (out / "images" / "train" / "train000.jpg").is_symlink()
    assert len(load_yolo(data_yaml, "train")) == 6

    with pytest.raises(GhostboxError, match="already holds files; use overwrite"):
        convert_bdd_to_yolo(files["val"], None, out, class_names=["car", "pedestrian"])
    convert_bdd_to_yolo(files["val"], None, out, link="copy", overwrite=True,
                        class_names=["car", "pedestrian"])
    copied = out / "images" / "val" / "val000.jpg"
    assert copied.is_file() and not copied.is_symlink()
    assert not os.path.samefile(copied, root / "images" / "100k" / "val" / "val000.jpg")
    config = yaml.safe_load(data_yaml.read_text())
    assert config["train"] == "images/train"  # the earlier split is kept

    with pytest.raises(GhostboxError, match="field 'names' is"):
        convert_bdd_to_yolo(files["val"], None, out, overwrite=False)
    with pytest.raises(GhostboxError, match="link: 'move'"):
        convert_bdd_to_yolo(files["val"], None, tmp_path / "other", link="move")


def test_val_then_train_into_one_folder(tmp_path: Path) -> None:
    root = tmp_path / "bdd100k"
    val, train = write_split(root, "val", seed=4), write_split(root, "train", seed=5)
    out = tmp_path / "yolo"
    convert_bdd_to_yolo(val, None, out)
    config = yaml.safe_load(convert_bdd_to_yolo(train, None, out).read_text())
    assert (config["train"], config["val"]) == ("images/train", "images/val")


def test_missing_image_is_an_error(tmp_path: Path) -> None:
    labels = write_split(tmp_path / "bdd100k", "val", seed=6)
    (tmp_path / "bdd100k" / "images" / "100k" / "val" / "val002.jpg").unlink()
    with pytest.raises(GhostboxError, match=r"val002\.jpg: image file not found"):
        convert_bdd_to_yolo(labels, None, tmp_path / "out")


def test_place_file_falls_back_when_symlinks_are_refused(tmp_path, monkeypatch):
    """Windows without the symlink privilege: a hard link (or copy) instead, counted, same bytes."""
    from pathlib import Path

    from pipeline.data.convert import place_file
    from pipeline.data.records import LoadWarnings

    source = tmp_path / "a.jpg"
    source.write_bytes(b"pixels")

    def refuse(self, target):
        raise OSError("symlinks not allowed")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    tally = LoadWarnings()
    place_file(source, tmp_path / "b.jpg", "symlink", tally)
    assert (tmp_path / "b.jpg").read_bytes() == b"pixels" and not (tmp_path / "b.jpg").is_symlink()
    assert tally["symlink_fallback"] == 1
