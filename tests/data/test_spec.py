"""Dataset spec strings: grammar, format detection, errors, and image exclusion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.data import exclude_images, parse_dataset_spec, split_dataset_spec
from pipeline.errors import GhostboxError

FRAMES = [
    {"name": "a.jpg", "labels": [{"id": "1", "category": "car",
                                  "box2d": {"x1": 1, "y1": 1, "x2": 9, "y2": 9}}]},
    {"name": "b.jpg", "labels": [{"id": "2", "category": "bus",
                                  "box2d": {"x1": 1, "y1": 1, "x2": 9, "y2": 9}}]},
    {"name": "c.jpg"},
]
COCO = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
                   {"id": 2, "file_name": "dir/b.jpg", "width": 10, "height": 10}],
        "annotations": [], "categories": [{"id": 1, "name": "cone", "ood": True}]}


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    """A synthetic-world folder (labels.json + images/) and loose files beside it."""
    root = tmp_path / "world"
    (root / "images").mkdir(parents=True)
    (root / "labels.json").write_text(json.dumps(FRAMES))
    (tmp_path / "ood").mkdir()
    (tmp_path / "ood" / "instances.json").write_text(json.dumps(COCO))
    (tmp_path / "yolo" / "images" / "val").mkdir(parents=True)
    (tmp_path / "yolo" / "data.yaml").write_text("val: images/val\nnames: [a, b]\n")
    return tmp_path


def test_split_grammar() -> None:
    assert split_dataset_spec("bdd:/x/det_val.json") == ("bdd", Path("/x/det_val.json"), {})
    assert split_dataset_spec("coco:/x/i.json:images=/im:name=ood far") == (
        "coco", Path("/x/i.json"), {"images": "/im", "name": "ood far"})
    assert split_dataset_spec("yolo:/d/data.yaml:val") == ("yolo", Path("/d/data.yaml"),
                                                           {"split": "val"})
    assert split_dataset_spec("/d/data.yml:train:name=t") == (
        None, Path("/d/data.yml"), {"split": "train", "name": "t"})
    # Colons inside paths and option values survive.
    assert split_dataset_spec("bdd:/a:b/l.json:images=/c:d/img") == (
        "bdd", Path("/a:b/l.json"), {"images": "/c:d/img"})
    assert split_dataset_spec("relative/labels.json:classes=car,bus") == (
        None, Path("relative/labels.json"), {"classes": "car,bus"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("voc:/x/a.json", "unknown dataset type 'voc'"),
        ("bdd:/x/a.json:name=a:name=b", "option 'name' given twice"),
        ("bdd:/x/a.json:name=", "option 'name' has no value"),
        ("yolo:/d/data.yaml:val:split=train", "split given twice"),
        ("bdd:", "no path"),
    ],
)
def test_split_errors(spec: str, message: str) -> None:
    with pytest.raises(GhostboxError, match=message):
        split_dataset_spec(spec)


def test_detects_each_format(world: Path) -> None:
    bdd = parse_dataset_spec(str(world / "world"))
    assert (bdd.format, bdd.name, len(bdd)) == ("bdd", "world", 3)
    assert bdd.image_dir == world / "world" / "images"
    assert parse_dataset_spec(str(world / "world" / "labels.json")).format == "bdd"
    coco = parse_dataset_spec(str(world / "ood"))
    assert (coco.format, coco.image_dir, coco.name) == ("coco", world / "ood" / "images", "ood")
    assert coco.categories[0]["ood"] is True
    assert parse_dataset_spec(str(world / "ood" / "instances.json")).format == "coco"
    yolo = parse_dataset_spec(str(world / "yolo"))
    assert (yolo.format, yolo.class_names, len(yolo)) == ("yolo", ("a", "b"), 0)
    assert parse_dataset_spec(f"{world}/yolo/data.yaml:val").format == "yolo"


def test_options_apply(world: Path) -> None:
    dataset = parse_dataset_spec(
        f"bdd:{world}/world/labels.json:images={world}/im:name=id val:size=10x5"
        ":classes=car, pedestrian")
    assert dataset.name == "id val"
    assert dataset.image_dir == world / "im"
    assert dataset.class_names == ("car", "pedestrian")
    assert (dataset[0].width, dataset[0].height) == (10, 5)
    assert dataset.warnings["ignored_category"] == 1  # the bus
    frames = FRAMES + [{"name": "d.jpg", "labels": [
        {"id": "3", "category": "kar", "box2d": {"x1": 1, "y1": 1, "x2": 2, "y2": 2}}]}]
    (world / "world" / "labels.json").write_text(json.dumps(frames))
    with pytest.raises(GhostboxError, match="unknown category 'kar'"):
        parse_dataset_spec(str(world / "world"))
    assert parse_dataset_spec(f"{world}/world:strict=no").warnings["unknown_category"] == 1
    assert parse_dataset_spec(str(world / "world"), strict=False).warnings["unknown_category"] == 1


def test_path_with_colon(world: Path) -> None:
    odd = world / "odd:dir"
    odd.mkdir()
    (odd / "labels.json").write_text(json.dumps(FRAMES))
    assert len(parse_dataset_spec(str(odd / "labels.json"))) == 3
    assert parse_dataset_spec(f"{odd}/labels.json:name=odd").name == "odd"
    assert parse_dataset_spec(f"bdd:{odd}/labels.json").format == "bdd"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bdd:{w}/missing.json", "missing.json not found"),
        ("{w}/world/labels.json:imgs=/x", r"not found \(options are images=, name="),
        ("{w}", "holds none of labels.json"),
        ("bdd:{w}/world", "is a folder; give the bdd label file"),
        ("{w}/yolo/data.yaml:train", "no 'train' entry"),
        ("coco:{w}/ood/instances.json:size=10x10", "'size=' applies to bdd only"),
        ("{w}/world:size=big", "size='big', expected WIDTHxHEIGHT"),
        ("{w}/world:strict=maybe", "strict='maybe'"),
        ("bdd:{w}/world/labels.json:val", "not found"),
        ("{w}/yolo/data.yaml:images=/x", "'images=' does not apply to yolo"),
    ],
)
def test_spec_errors(world: Path, spec: str, message: str) -> None:
    with pytest.raises(GhostboxError, match=message):
        parse_dataset_spec(spec.format(w=world))


def test_json_that_is_neither(world: Path) -> None:
    odd = world / "odd.json"
    odd.write_text('"just a string"')
    with pytest.raises(GhostboxError, match="expected a JSON list \\(bdd\\) or object \\(coco\\)"):
        parse_dataset_spec(str(odd))
    text = world / "notes.txt"
    text.write_text("x")
    with pytest.raises(GhostboxError, match="cannot tell the format"):
        parse_dataset_spec(str(text))


def test_exclude_text_and_json_lists(world: Path) -> None:
    dataset = parse_dataset_spec(str(world / "world"))
    listing = world / "exclude.txt"
    listing.write_text("# contaminated\nb.jpg\n\nnot-there.jpg\n")
    kept = exclude_images(dataset, listing)
    assert [r.file_name for r in kept] == ["a.jpg", "c.jpg"]
    assert kept.warnings["image_excluded"] == 1
    assert kept.warnings["exclude_not_found"] == 1
    assert dataset.warnings["image_excluded"] == 0  # the original is untouched
    assert len(dataset) == 3

    coco = parse_dataset_spec(str(world / "ood"))
    as_json = world / "exclude.json"
    as_json.write_text(json.dumps(["b.jpg", "a.jpg"]))  # a bare name matches dir/b.jpg too
    assert len(exclude_images(coco, as_json)) == 0
    as_json.write_text(json.dumps(["other/b.jpg"]))  # a path must match the whole file_name
    assert len(exclude_images(coco, as_json)) == 2

    via_spec = parse_dataset_spec(f"{world}/world:exclude={listing}:name=clean")
    assert (len(via_spec), via_spec.name) == (2, "clean")
    assert via_spec.warnings["image_excluded"] == 1

    as_json.write_text("[1, 2]")
    with pytest.raises(GhostboxError, match="expected a list of file names, found 1"):
        exclude_images(dataset, as_json)
    with pytest.raises(GhostboxError, match="nothing.txt: file not found"):
        exclude_images(dataset, world / "nothing.txt")
