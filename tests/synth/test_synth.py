"""The synthetic street world: determinism, file formats, split contents, stream, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import yaml

from pipeline.errors import GhostboxError
from pipeline.synth import ID_CLASSES, OOD_KINDS, WorldConfig, generate_world, render_split_image, render_stream_frame
from pipeline.synth.writers import RenderedImage, bdd_frames

TINY = dict(seed=3, width=352, height=288, train=6, val=6, near_test=6, far_test=6, pool=6, mixed_test=6,
            contaminated=10, contamination_fraction=0.3, stream_frames=10)
OOD_SPLITS = ("near_test", "far_test", "pool", "mixed_test", "contaminated")
KIND = {k.name: k for k in OOD_KINDS}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    generate_world(WorldConfig(**TINY), out, workers=2)
    return out


@pytest.fixture(scope="module")
def world_again(tmp_path_factory) -> Path:
    """Same config, rendered in this process: must not differ from the 2-worker world."""
    out = tmp_path_factory.mktemp("world_again") / "w"
    generate_world(WorldConfig(**TINY), out, workers=1)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path: Path):
    return json.loads(path.read_text())


# -- determinism -------------------------------------------------------------------------------
def test_same_seed_gives_identical_files_whatever_the_worker_count(world: Path, world_again: Path) -> None:
    a, b = _files(world), _files(world_again)
    assert a.keys() == b.keys()
    # data.yaml holds the absolute path of its own world, so it differs by design
    differing = [name for name in a if a[name] != b[name] and name != "yolo/data.yaml"]
    assert differing == []
    assert any(name.endswith(".jpg") for name in a)


def test_different_seed_gives_different_world(world: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate_world(WorldConfig(**{**TINY, "seed": TINY["seed"] + 1}), other, workers=1)
    assert (world / "id/train/labels.json").read_bytes() != (other / "id/train/labels.json").read_bytes()
    first = "id/train/images/train_00000.jpg"
    assert (world / first).read_bytes() != (other / first).read_bytes()


def test_an_image_depends_only_on_seed_split_and_index() -> None:
    config = WorldConfig(**TINY)
    image_a, record_a = render_split_image(config, "val", 4)
    render_split_image(config, "val", 2)  # rendering others in between changes nothing
    image_b, record_b = render_split_image(config, "val", 4)
    assert (image_a == image_b).all()
    assert record_a == record_b


# -- BDD-100K det_20 ---------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "val"])
def test_id_labels_are_valid_bdd_det20(world: Path, split: str) -> None:
    config = WorldConfig(**TINY)
    frames = _load(world / f"id/{split}/labels.json")
    assert [f["name"] for f in frames] == [f"{split}_{i:05d}.jpg" for i in range(getattr(config, split))]
    n_labels = 0
    for frame in frames:
        image = cv2.imread(str(world / f"id/{split}/images" / frame["name"]))
        assert image.shape == (config.height, config.width, 3)
        assert frame["attributes"]["scene"] == "city street"
        assert frame["attributes"]["timeofday"] in ("daytime", "dawn/dusk", "night")
        assert "labels" not in frame or frame["labels"], "frames without objects must omit `labels`"
        for label in frame.get("labels", []):
            n_labels += 1
            assert label["category"] in ID_CLASSES
            assert isinstance(label["id"], str)
            b = label["box2d"]
            assert 0 <= b["x1"] < b["x2"] <= config.width
            assert 0 <= b["y1"] < b["y2"] <= config.height
            attrs = label["attributes"]
            assert isinstance(attrs["occluded"], bool) and isinstance(attrs["truncated"], bool)
            if label["category"] == "traffic light":
                assert attrs["trafficLightColor"] in ("G", "Y", "R", "NA")
            else:
                assert "trafficLightColor" not in attrs
    assert n_labels > 0
    ids = [label["id"] for f in frames for label in f.get("labels", [])]
    assert len(ids) == len(set(ids))


def test_empty_frames_have_no_labels_key(tmp_path: Path) -> None:
    frames = bdd_frames([RenderedImage("a.jpg", 320, 320, "night", "clear", [])])
    assert frames == [{"name": "a.jpg", "attributes": {"weather": "clear", "scene": "city street",
                                                       "timeofday": "night"}}]
    out = tmp_path / "empty"
    generate_world(WorldConfig(**{**TINY, "empty_id_fraction": 1.0, "stream_frames": 0}), out, workers=1)
    assert all("labels" not in f for f in _load(out / "id/train/labels.json"))


# -- COCO OoD sets -----------------------------------------------------------------------------
def test_ood_kind_table_has_disjoint_pool_and_test_groups() -> None:
    names = [k.name for k in OOD_KINDS]
    assert len(names) == len(set(names))
    assert not set(names) & set(ID_CLASSES)
    assert sum(k.tier == "near" for k in OOD_KINDS) >= 8
    assert sum(k.tier == "far" for k in OOD_KINDS) >= 5
    for tier in ("near", "far"):
        groups = {k.group for k in OOD_KINDS if k.tier == tier}
        assert groups == {"pool", "test"}
    assert all(k.resembles in ID_CLASSES for k in OOD_KINDS if k.tier == "near")


@pytest.mark.parametrize("split", OOD_SPLITS)
def test_ood_sets_are_valid_coco(world: Path, split: str) -> None:
    config = WorldConfig(**TINY)
    data = _load(world / f"ood/{split}/instances.json")
    images = {im["id"]: im for im in data["images"]}
    cats = {c["id"]: c for c in data["categories"]}
    assert len(images) == getattr(config, split)
    assert data["annotations"]
    for im in images.values():
        assert (world / f"ood/{split}/images" / im["file_name"]).is_file()
        assert (im["width"], im["height"]) == (config.width, config.height)
    ann_ids = [a["id"] for a in data["annotations"]]
    assert len(ann_ids) == len(set(ann_ids))
    for a in data["annotations"]:
        assert a["image_id"] in images and a["category_id"] in cats
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= config.width and y + h <= config.height
        assert a["area"] == pytest.approx(w * h) and a["iscrowd"] == 0
    for c in cats.values():
        if c["ood"]:
            assert (c["tier"], c["group"]) == (KIND[c["name"]].tier, KIND[c["name"]].group)
        else:
            assert c["name"] in ID_CLASSES


def _annotated(world: Path, split: str) -> list[dict]:
    data = _load(world / f"ood/{split}/instances.json")
    cats = {c["id"]: c for c in data["categories"]}
    return [cats[a["category_id"]] for a in data["annotations"]]


def test_each_ood_set_holds_only_its_own_kinds(world: Path) -> None:
    allowed = {
        "near_test": {k.name for k in OOD_KINDS if (k.tier, k.group) == ("near", "test")},
        "far_test": {k.name for k in OOD_KINDS if (k.tier, k.group) == ("far", "test")},
        "pool": {k.name for k in OOD_KINDS if k.group == "pool"},
        "contaminated": {k.name for k in OOD_KINDS if (k.tier, k.group) == ("near", "test")},
    }
    for split, names in allowed.items():
        found = {c["name"] for c in _annotated(world, split)}
        assert found and found <= names, split
        assert all(c["ood"] for c in _annotated(world, split))
    pool = {c["name"] for c in _annotated(world, "pool")}
    assert {KIND[n].tier for n in pool} == {"near", "far"}


@pytest.mark.parametrize("split", ["near_test", "far_test", "pool"])
def test_pure_ood_images_hold_no_id_object(split: str) -> None:
    config = WorldConfig(**TINY)
    for index in range(getattr(config, split)):
        _, record = render_split_image(config, split, index)
        assert record.objects and all(o.tier != "id" for o in record.objects)


def test_mixed_scenes_hold_id_and_test_ood_objects(world: Path) -> None:
    data = _load(world / "ood/mixed_test/instances.json")
    cats = {c["id"]: c for c in data["categories"]}
    for im in data["images"]:
        found = [cats[a["category_id"]] for a in data["annotations"] if a["image_id"] == im["id"]]
        assert any(not c["ood"] for c in found), im["file_name"]
        assert any(c["ood"] for c in found), im["file_name"]
        assert all(c["group"] == "test" for c in found if c["ood"])


def test_contaminated_set_has_the_stated_fraction_and_an_audit_file(world: Path) -> None:
    config = WorldConfig(**TINY)
    truth = _load(world / "ood/contaminated/contamination.json")
    expected = round(config.contamination_fraction * config.contaminated)
    assert truth["contaminated_images"] == len(truth["images"]) == expected
    instances = _load(world / "ood/contaminated/instances.json")
    names = {im["file_name"] for im in instances["images"]}
    assert all(c["ood"] is True for c in instances["categories"])  # OoD categories only
    for entry in truth["images"]:
        assert entry["file_name"] in names
        assert len(entry["objects"]) == 1 and entry["objects"][0]["category"] in ID_CLASSES
        index = int(entry["file_name"].split("_")[1].split(".")[0])
        _, record = render_split_image(config, "contaminated", index)
        assert [o.name for o in record.objects if o.tier == "id"] == [entry["objects"][0]["category"]]
    clean = names - {e["file_name"] for e in truth["images"]}
    for name in sorted(clean)[:3]:
        index = int(name.split("_")[1].split(".")[0])
        _, record = render_split_image(config, "contaminated", index)
        assert all(o.tier != "id" for o in record.objects)


# -- YOLO export -------------------------------------------------------------------------------
def test_yolo_export_matches_bdd_labels(world: Path) -> None:
    config = WorldConfig(**TINY)
    data = yaml.safe_load((world / "yolo/data.yaml").read_text())
    assert Path(data["path"]).is_absolute() and Path(data["path"]) == (world / "yolo").resolve()
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert data["names"] == dict(enumerate(ID_CLASSES))
    assert "download" not in data
    for split in ("train", "val"):
        for frame in _load(world / f"id/{split}/labels.json"):
            image = world / "yolo/images" / split / frame["name"]
            assert image.read_bytes() == (world / f"id/{split}/images" / frame["name"]).read_bytes()
            lines = (world / "yolo/labels" / split / f"{Path(frame['name']).stem}.txt").read_text().splitlines()
            labels = frame.get("labels", [])
            assert len(lines) == len(labels)
            for line, label in zip(lines, labels):
                cls, cx, cy, w, h = line.split()
                b = label["box2d"]
                assert ID_CLASSES[int(cls)] == label["category"]
                assert float(cx) == pytest.approx((b["x1"] + b["x2"]) / 2 / config.width, abs=1e-5)
                assert float(cy) == pytest.approx((b["y1"] + b["y2"]) / 2 / config.height, abs=1e-5)
                assert float(w) == pytest.approx((b["x2"] - b["x1"]) / config.width, abs=1e-5)
                assert float(h) == pytest.approx((b["y2"] - b["y1"]) / config.height, abs=1e-5)


# -- manifest and stream -----------------------------------------------------------------------
def test_manifest_lists_every_split_with_its_image_count(world: Path) -> None:
    manifest = _load(world / "world.json")
    assert manifest["seed"] == TINY["seed"] and manifest["id_classes"] == list(ID_CLASSES)
    assert [(k["name"], k["tier"], k["group"]) for k in manifest["ood_kinds"]] == \
        [(k.name, k.tier, k.group) for k in OOD_KINDS]
    splits = {s["name"]: s for s in manifest["splits"]}
    assert set(splits) == {"train", "val", *OOD_SPLITS}
    for name, s in splits.items():
        assert s["count"] == TINY[name] == len(list((world / s["images"]).glob("*.jpg")))
        assert (world / s["labels"]).is_file()
        assert s["format"] == ("bdd100k-det20" if name in ("train", "val") else "coco")
    assert (world / manifest["stream"]["path"] / manifest["stream"]["video"]).is_file()


def test_stream_has_one_ground_truth_line_and_one_video_frame_per_frame(world: Path) -> None:
    config = WorldConfig(**TINY)
    manifest = _load(world / "world.json")
    rows = [json.loads(line) for line in (world / "stream/ground_truth.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(config.stream_frames))
    capture = cv2.VideoCapture(str(world / "stream" / manifest["stream"]["video"]))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (config.height, config.width, 3)
        frames += 1
    capture.release()
    assert frames == config.stream_frames
    boxes = [b for r in rows for b in r["boxes"]]
    assert boxes and all(b["xyxy"][0] < b["xyxy"][2] and b["xyxy"][1] < b["xyxy"][3] for b in boxes)
    assert all((b["label"] in ID_CLASSES) != b["ood"] for b in boxes)
    assert all(KIND[b["kind"]].group == "test" for b in boxes if b["ood"])
    image, truth = render_stream_frame(config, 7)
    assert image.shape == (config.height, config.width, 3)
    assert truth == rows[7]["boxes"]


def test_stream_objects_move_smoothly() -> None:
    config = WorldConfig(**{**TINY, "stream_frames": 60})
    tracks: dict[int, list[list[float]]] = {}
    for i in range(0, 60, 5):
        for box in render_stream_frame(config, i)[1]:
            tracks.setdefault(box["track_id"], []).append(box["xyxy"])
    moving = [t for t in tracks.values() if len(t) > 2 and t[0] != t[-1]]
    assert moving, "some object must move across the stream"
    for track in moving:
        steps = [abs(b[0] - a[0]) + abs(b[2] - a[2]) for a, b in zip(track, track[1:])]
        assert max(steps) < 0.5 * config.width  # no jumps between sampled frames


def test_progress_counts_every_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    counts = dict(train=2, val=1, near_test=1, far_test=1, pool=1, mixed_test=1, contaminated=2, stream_frames=0)
    generate_world(WorldConfig(**counts), tmp_path / "w", progress=lambda done, total: calls.append((done, total)),
                   workers=1)
    total = sum(v for k, v in counts.items() if k != "stream_frames")
    assert calls == [(i, total) for i in range(1, total + 1)]


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"train": -1}, {"stream_frames": -5}, {"width": 0}, {"height": 0}, {"width": 10},
    {"contamination_fraction": 1.5}, {"stream_fps": 0}, {"seed": -1}, {"id_objects_per_image": (5, 2)},
    {"train": "many"}, {"no_such_field": 1},
])
def test_bad_config_raises_ghostbox_error(bad: dict) -> None:
    with pytest.raises(GhostboxError) as info:
        WorldConfig(**bad)
    assert next(iter(bad)) in str(info.value)


def test_bad_arguments_raise_ghostbox_error(tmp_path: Path) -> None:
    config = WorldConfig(**TINY)
    with pytest.raises(GhostboxError, match="workers"):
        generate_world(config, tmp_path / "w", workers=0)
    with pytest.raises(GhostboxError, match="index"):
        render_stream_frame(config, config.stream_frames)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(GhostboxError, match="refusing"):
        generate_world(config, tmp_path / "busy", workers=1)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
