"""`ghostbox proxies`: every strategy keeps ID labels, leaves pastes unlabelled and clear of ID boxes, is seeded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.bundled import default_model
from pipeline.data import parse_dataset_spec
from pipeline.data.convert import yolo_label_text
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.proxies import PlacementRules, ProxySettings, build_proxy_set, read_manifest
from pipeline.proxies.blend import feather_alpha, paste
from pipeline.proxies.id_transforms import (
    cross_class_blend,
    interior_swap,
    outline_of,
    outline_swap,
    patch_shuffle,
    texture_swap,
)
from pipeline.proxies.mining import mine_hard_negatives
from pipeline.proxies.outlier_sources import open_pool
from pipeline.proxies.placement import IdBoxPrior, box_overlaps, find_spot, fits
from pipeline.synth import WorldConfig, generate_world

CLASSES = "pedestrian,car,traffic light,traffic sign"
RULES = PlacementRules(max_iou=0.05, max_cover=0.1)
COMPOSITES = ("paste", "transform", "mined")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    config = WorldConfig(seed=5, train=14, val=0, near_test=0, far_test=0, pool=8, mixed_test=3, contaminated=0,
                         stream_frames=0)
    generate_world(config, out, workers=1)
    return out


@pytest.fixture(scope="module")
def id_spec(world: Path) -> str:
    return f"{world / 'id/train'}:classes={CLASSES}"


@pytest.fixture(scope="module")
def flagged(world: Path, tmp_path_factory) -> Path:
    """A flagged-crop archive as `ghostbox run` writes it: OUT/flagged/<source>/*.jpg + index.jsonl."""
    out = tmp_path_factory.mktemp("run")
    folder = out / "flagged" / "cam0"
    folder.mkdir(parents=True)
    pool = parse_dataset_spec(str(world / "ood/pool"))
    lines = []
    for seq, record in enumerate(list(pool)[:3]):
        image = cv2.imread(str(record.path))
        x1, y1, x2, y2 = (int(v) for v in record.boxes_xyxy[0])
        cv2.imwrite(str(folder / f"{seq:07d}_000.jpg"), image[y1:y2, x1:x2])
        lines.append(json.dumps({"file": f"cam0/{seq:07d}_000.jpg", "stream": "cam0", "seq": seq, "source": "cam0.mp4",
                                 "frame": seq, "xyxy": [x1, y1, x2, y2], "cls": 1, "label": "car", "conf": 0.7,
                                 "level": 0, "score": -2.0, "threshold": 0.1, "detector": "abc"}))
    (out / "flagged" / "index.jsonl").write_text("\n".join(lines) + "\n")
    return out


def _build(out: Path, id_spec: str, world: Path, strategies=("background", "paste", "transform"), count=6, seed=0,
           detector=None, **overrides):
    settings = ProxySettings(id_spec=id_spec, out=out, strategies=tuple(strategies), count=count, seed=seed,
                             pool=overrides.pop("pool", str(world / "ood/pool")), rules=RULES, **overrides)
    return build_proxy_set(settings, detector)


@pytest.fixture(scope="module")
def built(tmp_path_factory, id_spec: str, world: Path) -> Path:
    out = tmp_path_factory.mktemp("proxies") / "P"
    _build(out, id_spec, world)
    return out


def _build_mined(out: Path, world: Path, detector) -> None:
    # No classes= in the spec: with a model, its class names are the set's.
    _build(out, str(world / "id/train"), world, strategies=("mined",), count=4, detector=detector, conf=0.1,
           mine_images=4)


@pytest.fixture(scope="module")
def mined(tmp_path_factory, world: Path) -> tuple[Path, object]:
    from pipeline.detect.detector import Detector

    detector = Detector(model=str(default_model()), device="cpu", conf=0.1)
    out = tmp_path_factory.mktemp("mined") / "P"
    _build_mined(out, world, detector)
    return out, detector


def _labels(path: Path) -> np.ndarray:
    rows = [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]
    return np.array(rows, np.float64).reshape(-1, 5)


def _check_composites(out: Path, id_spec: str, strategies=COMPOSITES) -> int:
    """The per-image promises of the pasting strategies; returns how many images were checked."""
    manifest = read_manifest(out)
    id_set = parse_dataset_spec(id_spec, class_names=manifest["class_names"])
    hosts = {record.file_name: record for record in id_set}
    checked = 0
    for entry in manifest["images"]:
        if entry["strategy"] not in strategies:
            continue
        checked += 1
        host = hosts[entry["host"]]
        image = cv2.imread(str(out / entry["file"]))
        height, width = image.shape[:2]
        # ID labels: exactly the host's boxes and classes, nothing more
        labels = _labels(out / entry["label"])
        keep = ~host.crowd
        assert len(labels) == entry["id_boxes"] == int(keep.sum())
        assert labels[:, 0].astype(int).tolist() == host.class_ids[keep].tolist()
        scale = np.array([width, height, width, height], np.float64)
        boxes = host.boxes_xyxy[keep].astype(np.float64)
        expected = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                             boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) / scale if len(boxes) else \
            np.zeros((0, 4))
        np.testing.assert_allclose(labels[:, 1:], expected, atol=1e-6)
        # pasted regions: present, unlabelled, clear of every ID box and of each other
        pasted = np.array([p["xyxy"] for p in entry["pasted"]], np.float64).reshape(-1, 4)
        assert 1 <= len(pasted) <= entry["wanted_pastes"]
        assert np.all(pasted[:, :2] >= 0) and np.all(pasted[:, 2] <= width) and np.all(pasted[:, 3] <= height)
        for k, region in enumerate(pasted):
            if len(host.boxes_xyxy):
                iou, cover, covered = box_overlaps(region, host.boxes_xyxy)
                assert iou.max() <= RULES.max_iou + 1e-9
                assert max(cover.max(), covered.max()) <= RULES.max_cover + 1e-9
            others = np.delete(pasted, k, axis=0)
            if len(others):
                assert box_overlaps(region, others)[0].max() <= RULES.max_iou + 1e-9
        # the manifest tells the truth: pixels changed inside the regions, not outside
        original = cv2.imread(str(host.path)).astype(np.float32)
        diff = np.abs(image.astype(np.float32) - original).mean(axis=2)
        inside = np.zeros(diff.shape, bool)
        for x1, y1, x2, y2 in pasted.astype(int):
            inside[y1:y2, x1:x2] = True
        assert diff[~inside].mean() < 2.0  # JPEG re-encoding only
        assert diff[inside].mean() > diff[~inside].mean()
    return checked


# -- the promises, per strategy ---------------------------------------------------------------------

def test_paste_and_transform_keep_id_labels_and_leave_pastes_unlabelled(built: Path, id_spec: str) -> None:
    assert _check_composites(built, id_spec, ("paste",)) == 6
    assert _check_composites(built, id_spec, ("transform",)) == 6


def test_mined_pastes_the_detectors_boxes_that_match_no_id_object(mined, world: Path) -> None:
    out, detector = mined
    assert _check_composites(out, str(world / "id/train"), ("mined",)) == 4
    manifest = read_manifest(out)
    assert manifest["class_names"] == list(detector.class_names)
    assert manifest["sources"]["model"]["weights_sha256"] == detector.info.weights_sha256
    params = manifest["strategies"]["mined"]["parameters"]
    assert params["conf"] == 0.1 and params["images_run"] == 4 and params["kept"] >= 1
    pool_files = {r.file_name for r in parse_dataset_spec(str(world / "ood/pool"))}
    for entry in manifest["images"]:
        for region in entry["pasted"]:
            source = region["source"]
            assert source["kind"] == "mined" and source["file"] in pool_files and source["conf"] >= 0.1
            assert source["label"] in detector.class_names


def test_mined_is_deterministic_by_seed(mined, world: Path, tmp_path: Path) -> None:
    out, detector = mined
    _build_mined(tmp_path / "again", world, detector)
    assert _contents(out) == _contents(tmp_path / "again")


def test_background_images_are_whole_pool_images_with_empty_labels(built: Path, world: Path) -> None:
    manifest = read_manifest(built)
    backgrounds = [e for e in manifest["images"] if e["strategy"] == "background"]
    assert len(backgrounds) == 6
    pool_dir = world / "ood/pool/images"
    for entry in backgrounds:
        assert (built / entry["label"]).read_bytes() == b""
        assert entry["host"] is None and entry["pasted"] == [] and entry["id_boxes"] == 0
        assert (built / entry["file"]).read_bytes() == (pool_dir / entry["background"]["file"]).read_bytes()
    # the pool has 8 images without ID objects: 6 backgrounds are 6 different ones
    assert len({e["background"]["file"] for e in backgrounds}) == 6


def test_interior_swap_keeps_the_outline_and_replaces_the_inside() -> None:
    # A sign-like disc: a red rim round a white face with a black bar, on grey.
    context = np.full((80, 80, 3), 120, np.uint8)
    cv2.circle(context, (40, 40), 28, (0, 0, 220), -1)
    cv2.circle(context, (40, 40), 21, (255, 255, 255), -1)
    cv2.rectangle(context, (28, 37), (52, 43), (0, 0, 0), -1)
    box = (12, 12, 69, 69)
    other = np.zeros((30, 30, 3), np.uint8)
    other[:, :15] = (0, 200, 0)
    other[:, 15:] = (200, 0, 200)
    for seed in range(6):
        out, mask, params = interior_swap(context, box, other if seed % 2 else None, np.random.default_rng(seed))
        crop = context[12:69, 12:69]
        assert out.shape == crop.shape and mask.shape == crop.shape[:2]
        assert params["name"] == "interior_swap" and params["mode"] == ("foreign" if seed % 2 else "shuffle")
        assert 0.15 <= params["inside_fraction"] < 1 and params["rim_px"] >= 6
        # the rim stays as it was, the middle does not
        assert np.array_equal(out[28, 2], crop[28, 2]) and np.array_equal(out[2, 28], crop[2, 28])
        assert not np.array_equal(out[20:37, 20:37], crop[20:37, 20:37])
        assert mask[28, 28] > 0.9 and mask[0, 0] < 0.5  # the whole disc is pasted, face included, not the corners
        if seed % 2:
            assert (out[20:37, 20:37, 1] > 150).any()  # the other crop's colours fill the inside
    thin = np.full((40, 40, 3), 120, np.uint8)
    thin[5:35, 18:22] = (0, 0, 220)  # a 4 px pole has no inside
    assert interior_swap(thin, (15, 5, 25, 35), None, np.random.default_rng(0)) is None


def _sign_disc() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A sign-like disc: a red rim round a blue face with a white bar, on grey; and its box."""
    context = np.full((80, 80, 3), 120, np.uint8)
    cv2.circle(context, (40, 40), 28, (0, 0, 220), -1)
    cv2.circle(context, (40, 40), 21, (200, 80, 0), -1)
    cv2.rectangle(context, (30, 37), (50, 43), (255, 255, 255), -1)
    return context, (12, 12, 69, 69)


def test_framed_outlier_puts_a_whole_foreign_crop_inside_the_rim() -> None:
    context, box = _sign_disc()
    crop = context[12:69, 12:69]
    outlier = np.zeros((40, 40, 3), np.uint8)
    outlier[:20] = (0, 200, 0)  # top half green, bottom half magenta: order survives only if not shuffled
    outlier[20:] = (200, 0, 200)
    for seed in range(4):
        out, mask, params = interior_swap(context, box, outlier, np.random.default_rng(seed), outlier=True)
        assert params["name"] == "framed_outlier" and "grid" not in params
        assert np.array_equal(out[28, 2], crop[28, 2])  # the rim stays
        assert out[22, 28, 1] > 150 and out[22, 28, 0] < 80  # green above the middle
        assert out[34, 28, 0] > 150 and out[34, 28, 1] < 80  # magenta below: the crop went in whole
        assert mask[28, 28] > 0.9 and mask[0, 0] < 0.5


def test_outline_swap_moves_the_inside_into_another_outline() -> None:
    context, box = _sign_disc()
    own = outline_of(context, box)
    assert own.shape == (57, 57) and own[28, 28] == 1 and own[0, 0] == 0
    tall = np.zeros((60, 24), np.uint8)
    tall[2:58, 2:22] = 1  # another class's outline: a tall box (a traffic light's housing)
    for seed in range(6):
        out, mask, params = outline_swap(context, box, tall if seed % 2 else None, np.random.default_rng(seed))
        assert params["name"] == "outline_swap" and out.shape[:2] == mask.shape and out.shape[0] == 57
        assert params["iou_with_own"] <= 0.75
        if seed % 2:  # the other class's outline, at the object's height
            assert params["outline"] == "other_class" and out.shape[1] == round(57 * 24 / 60)
        else:
            assert params["outline"] == "superellipse" and 2 <= params["exponent"] <= 6
        inside = out[mask > 0.9]
        # the content is the face (blue, white bar), not the red rim or the grey surroundings
        blue = (inside[:, 0] > 150) & (inside[:, 2] < 80)
        red = (inside[:, 2] > 150) & (inside[:, 0] < 80)
        assert blue.mean() > 0.5 and red.mean() < 0.05
        assert mask[mask.shape[0] // 2, mask.shape[1] // 2] > 0.9
    # the object's own outline is refused: the disc would come back intact
    disc = np.zeros((57, 57), np.uint8)
    cv2.circle(disc, (28, 28), 28, 1, -1)
    out, _, params = outline_swap(context, box, disc, np.random.default_rng(1))
    assert params["outline"] == "superellipse"
    thin = np.full((40, 40, 3), 120, np.uint8)
    thin[5:35, 18:22] = (0, 0, 220)  # a 4 px pole has no inside
    assert outline_swap(thin, (15, 5, 25, 35), None, np.random.default_rng(0)) is None


def test_transform_records_what_was_done_to_which_id_crop(built: Path) -> None:
    manifest = read_manifest(built)
    names = set()
    for entry in manifest["images"]:
        if entry["strategy"] != "transform":
            continue
        for region in entry["pasted"]:
            assert region["source"]["kind"] == "id" and region["source"]["label"] in CLASSES.split(",")
            transform = region["transform"]
            names.add(transform["name"])
            if transform["name"] == "cross_class_blend":
                assert transform["other"]["label"] != region["source"]["label"]
    # the default set: outline_swap and framed_outlier are opt-in
    assert names <= {"patch_shuffle", "cross_class_blend", "texture_swap", "interior_swap"} and len(names) >= 2


def test_manifest_describes_the_set(built: Path, id_spec: str, world: Path) -> None:
    manifest = read_manifest(built)
    assert manifest["format"] == "ghostbox-proxies" and manifest["format_version"] == 1
    assert manifest["seed"] == 0 and manifest["class_names"] == CLASSES.split(",")
    assert manifest["created"].endswith("Z") and manifest["ghostbox_version"]
    assert manifest["sources"]["id"] == id_spec and manifest["sources"]["id_images"] == 14
    assert manifest["sources"]["pool"]["kind"] == "labelled" and manifest["sources"]["model"] is None
    assert manifest["placement"]["max_iou"] == 0.05 and manifest["placement"]["max_cover"] == 0.1
    assert list(manifest["strategies"]) == ["background", "paste", "transform"]
    for name, part in manifest["strategies"].items():
        assert part["requested"] == 6 and part["written"] + part["gave_up"] >= 6 and part["written"] == 6
        assert part["pasted_regions"] == sum(len(e["pasted"]) for e in manifest["images"] if e["strategy"] == name)
    assert manifest["strategies"]["paste"]["parameters"]["max_pastes"] == 3
    files = sorted(p.name for p in (built / "images").iterdir())
    assert files == sorted(Path(e["file"]).name for e in manifest["images"])
    assert all((built / e["label"]).is_file() for e in manifest["images"])
    for entry in manifest["images"]:
        for region in entry["pasted"]:
            assert {"xyxy", "source", "transform", "flipped", "silhouette"} <= set(region)


def test_the_set_loads_with_the_yolo_loader(built: Path) -> None:
    dataset = parse_dataset_spec(f"yolo:{built / 'data.yaml'}:train")
    manifest = read_manifest(built)
    assert len(dataset) == len(manifest["images"]) == 18
    assert list(dataset.class_names) == manifest["class_names"]
    by_name = {Path(r.file_name).name: r for r in dataset}
    for entry in manifest["images"]:
        assert len(by_name[Path(entry["file"]).name]) == entry["id_boxes"]
    assert not dataset.warnings["label_file_missing"]


# -- determinism --------------------------------------------------------------------------------------

def _contents(out: Path) -> tuple[dict[str, bytes], dict]:
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and p.name not in ("manifest.json", "data.yaml")}
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("created")
    return files, manifest


def test_same_seed_same_set_other_seed_other_set(built: Path, tmp_path: Path, id_spec: str, world: Path) -> None:
    _build(tmp_path / "again", id_spec, world)
    files, manifest = _contents(built)
    again_files, again_manifest = _contents(tmp_path / "again")
    assert manifest == again_manifest
    assert files.keys() == again_files.keys()
    assert [k for k in files if files[k] != again_files[k]] == []  # labels and JPEG bytes alike

    _build(tmp_path / "other", id_spec, world, seed=1)
    other_files, other_manifest = _contents(tmp_path / "other")
    assert other_manifest["images"] != manifest["images"]
    assert any(other_files[k] != files[k] for k in files if k.startswith("images/paste"))


def test_an_image_does_not_depend_on_how_many_are_made(built: Path, tmp_path: Path, id_spec: str,
                                                       world: Path) -> None:
    _build(tmp_path / "few", id_spec, world, strategies=("transform",), count=2)
    few = read_manifest(tmp_path / "few")["images"]
    many = [e for e in read_manifest(built)["images"] if e["strategy"] == "transform"][:2]
    assert few == many
    for entry in few:
        assert (tmp_path / "few" / entry["file"]).read_bytes() == (built / entry["file"]).read_bytes()


# -- other sources ------------------------------------------------------------------------------------

def test_paste_from_a_flagged_archive_alone(tmp_path: Path, id_spec: str, world: Path, flagged: Path) -> None:
    out = tmp_path / "P"
    _build(out, id_spec, world, strategies=("paste",), count=4, pool=None, flagged=str(flagged))
    assert _check_composites(out, id_spec, ("paste",)) == 4
    manifest = read_manifest(out)
    assert manifest["sources"]["flagged"]["crops"] == 3
    for entry in manifest["images"]:
        for region in entry["pasted"]:
            assert region["source"]["kind"] == "flagged" and region["source"]["file"].startswith("cam0/")
            assert region["silhouette"] is False  # a crop file has no surroundings to tell the object from


def test_unlabelled_folder_pool_gives_backgrounds_and_random_crops(tmp_path: Path, id_spec: str, world: Path) -> None:
    folder = tmp_path / "outliers"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        cv2.imwrite(str(folder / f"o{k}.png"), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    out = tmp_path / "P"
    _build(out, id_spec, world, strategies=("background", "paste"), count=4, pool=str(folder))
    assert _check_composites(out, id_spec, ("paste",)) == 4
    manifest = read_manifest(out)
    assert manifest["sources"]["pool"]["kind"] == "folder"
    kinds = {r["source"]["kind"] for e in manifest["images"] for r in e["pasted"]}
    assert kinds == {"pool_random"}
    backgrounds = [e for e in manifest["images"] if e["strategy"] == "background"]
    assert {e["background"]["file"] for e in backgrounds} == {"o0.png", "o1.png", "o2.png"}
    image = cv2.imread(str(out / backgrounds[0]["file"]))
    assert image.shape == (90, 120, 3) and (out / backgrounds[0]["label"]).read_text() == ""


class _FakeDetector:
    """Reports, on every frame, a box on the frame's first ID object and one in its top-left corner."""

    batch = 2  # frames per detect call, as Detector.batch

    def __init__(self, pool) -> None:
        self.pool = pool
        self.calls = 0

    def detect(self, frames, conf=None, crops=False):
        out = []
        for frame in frames:
            entry = self.pool.images[self.calls]
            self.calls += 1
            boxes = np.array([entry.id_boxes[0] + [1, 1, 1, 1], [2, 2, 30, 30]], np.float32)
            out.append(Detections(xyxy=boxes, confidence=np.array([0.9, 0.4]), class_id=np.array([0, 1]),
                                  logits=np.zeros((2, 4)), box_features=np.zeros((2, 8)), level=np.zeros(2, np.int8),
                                  class_names=CLASSES.split(","), image_size=(frame.shape[1], frame.shape[0])))
        return out


def test_a_mixed_pool_never_offers_its_id_objects(world: Path) -> None:
    spec = str(world / "ood/mixed_test")  # COCO with "ood": false categories for the ID objects in it
    pool = open_pool(spec, CLASSES.split(","))
    id_names = {c["name"] for c in parse_dataset_spec(spec).categories if c.get("ood") is False}
    assert id_names == set(CLASSES.split(","))
    assert all(len(image.id_boxes) for image in pool.images) and pool.backgrounds == []
    assert len(pool.crops) and not {c.source["label"] for c in pool.crops.crops} & id_names
    # mining: the box on an ID object is a true positive, not a hallucination
    result = mine_hard_negatives(_FakeDetector(pool), pool, conf=0.25, max_images=10, seed=0)
    assert result.images_run == 3 and result.detections == 6 and result.matched_id == 3
    assert [c.box for c in result.crops.crops] == [(2, 2, 30, 30)] * 3


def test_without_classes_a_bdd_id_set_keeps_bdd_classes_and_says_so(tmp_path: Path, world: Path) -> None:
    result = _build(tmp_path / "P", str(world / "id/train"), world, strategies=("paste",), count=1)
    assert len(result.manifest.class_names) == 10
    assert any("rider" in note for note in result.notes) and result.manifest.notes == result.notes


# -- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("strategies", "overrides", "message"), [
    (("paste",), {"pool": None}, "paste: no outlier crops"),
    (("background",), {"pool": None}, "background: needs --pool"),
    (("mined",), {}, "mined: needs --model"),
    (("mined",), {"pool": None}, "mined: needs --model"),
])
def test_missing_inputs_name_the_problem(tmp_path: Path, id_spec: str, world: Path, strategies, overrides,
                                         message) -> None:
    with pytest.raises(GhostboxError, match=message):
        _build(tmp_path / "P", id_spec, world, strategies=strategies, count=2, **overrides)
    assert not (tmp_path / "P").exists()


@pytest.mark.parametrize(("strategies", "overrides", "message"), [
    (("fly",), {}, "strategies\n.*unknown fly; choose from background, paste"),
    (("paste", "paste"), {}, "paste,paste names a strategy twice"),
    ((), {}, "strategies\n.*none given"),
    (("paste",), {"count": 0}, "count\n.*greater than or equal to 1"),
    (("paste",), {"max_pastes": 0}, "max_pastes\n.*greater than or equal to 1"),
    (("transform",), {"transforms": ("melt",)}, "transforms\n.*unknown melt; choose from"),
    (("paste",), {"rules": {"max_iou": 1.0}}, "rules.max_iou\n.*less than 1"),
])
def test_bad_settings_are_refused_when_made(tmp_path: Path, id_spec: str, world: Path, strategies, overrides,
                                            message) -> None:
    count = overrides.pop("count", 2)
    with pytest.raises(ValidationError, match=message):
        ProxySettings(id_spec=id_spec, out=tmp_path / "P", strategies=strategies, count=count, **overrides)
    assert "rules" in ProxySettings.model_fields and "conf" in ProxySettings.model_fields


def test_empty_id_set_is_an_error(tmp_path: Path, world: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels.json").write_text("[]")
    with pytest.raises(GhostboxError, match="the ID set has no images"):
        _build(tmp_path / "P", str(empty), world)


def test_bad_flagged_archives(tmp_path: Path, id_spec: str, world: Path, flagged: Path) -> None:
    with pytest.raises(GhostboxError, match="no index.jsonl"):
        _build(tmp_path / "P", id_spec, world, strategies=("paste",), flagged=str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.jsonl").write_text('{"file": "a.jpg"}\nnot json\n')
    with pytest.raises(GhostboxError, match=r"index.jsonl:2: invalid JSON"):
        _build(tmp_path / "P", id_spec, world, strategies=("paste",), flagged=str(broken))
    # crops missing from a partly copied archive are skipped and counted
    (broken / "index.jsonl").write_text('{"file": "a.jpg"}\n')
    with pytest.raises(GhostboxError, match="paste: no outlier crops"):
        _build(tmp_path / "P", id_spec, world, strategies=("paste",), pool=None, flagged=str(broken))


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path: Path, id_spec: str, world: Path) -> None:
    out = tmp_path / "P"
    _build(out, id_spec, world, strategies=("background",), count=3)
    with pytest.raises(GhostboxError, match="not empty; pass --overwrite"):
        _build(out, id_spec, world, strategies=("paste",), count=2)
    _build(out, id_spec, world, strategies=("paste",), count=2, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["paste_000000.jpg", "paste_000001.jpg"]
    assert list(read_manifest(out)["strategies"]) == ["paste"]
    # a dataset is never deleted, --overwrite or not
    (out / "images" / "street_0001.jpg").write_bytes(b"not ours")
    with pytest.raises(GhostboxError, match="was not written by `ghostbox proxies`"):
        _build(out, id_spec, world, strategies=("paste",), count=2, overwrite=True)
    assert (out / "images" / "street_0001.jpg").is_file() and (out / "manifest.json").is_file()


def test_read_manifest_refuses_what_is_not_a_proxy_set(tmp_path: Path) -> None:
    with pytest.raises(GhostboxError, match="no proxy-set manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(GhostboxError, match="not a ghostbox proxy-set manifest"):
        read_manifest(tmp_path)


# -- the CLI ------------------------------------------------------------------------------------------

def test_cli_end_to_end(tmp_path: Path, id_spec: str, world: Path, flagged: Path, capsys) -> None:
    from pipeline.cli.main import main

    out = tmp_path / "P"
    code = main(["proxies", "--id", id_spec, "--pool", str(world / "ood/pool"), "--flagged", str(flagged),
                 "--strategies", "background,paste,transform", "--count", "3", "--seed", "7", "--out", str(out),
                 "--max-iou", "0.02", "--max-pastes", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "paste" in printed and "3 of 3 images" in printed and "data.yaml" in printed
    manifest = read_manifest(out)
    assert manifest["seed"] == 7 and manifest["placement"]["max_iou"] == 0.02
    assert all(len(e["pasted"]) <= 2 for e in manifest["images"])
    assert set(manifest["strategies"]["paste"]["parameters"]["groups"]) == {"pool", "flagged"}

    code = main(["proxies", "--id", id_spec, "--strategies", "mined", "--pool", str(world / "ood/pool"),
                 "--out", str(tmp_path / "Q")])
    assert code == 2 and "ghostbox proxies: error: mined: needs --model" in capsys.readouterr().err

    code = main(["proxies", "--id", id_spec, "--strategies", "transform", "--transforms", "interior_swap",
                 "--count", "3", "--out", str(tmp_path / "R")])
    assert code == 0
    transform = read_manifest(tmp_path / "R")["strategies"]["transform"]["parameters"]
    assert transform["transforms"] == ["interior_swap"] and "rim_fractions" in transform
    capsys.readouterr()
    code = main(["proxies", "--id", id_spec, "--pool", str(world / "ood/pool"), "--strategies", "transform",
                 "--transforms", "framed_outlier,outline_swap", "--count", "6", "--out", str(tmp_path / "F")])
    assert code == 0
    regions = [r for e in read_manifest(tmp_path / "F")["images"] for r in e["pasted"]]
    framed = [r["transform"] for r in regions if r["transform"]["name"] == "framed_outlier"]
    assert framed and all(t["filling"]["kind"] == "pool" for t in framed)
    assert {r["transform"]["name"] for r in regions} <= {"framed_outlier", "outline_swap", "patch_shuffle"}
    capsys.readouterr()
    code = main(["proxies", "--id", id_spec, "--strategies", "transform", "--transforms", "interior_swap,melt",
                 "--out", str(tmp_path / "S")])
    assert code == 2 and "--transforms: unknown melt; choose from" in capsys.readouterr().err
    code = main(["proxies", "--id", id_spec, "--strategies", "paste", "--count", "0", "--out", str(tmp_path / "S")])
    assert code == 2 and "--count: Input should be greater than or equal to 1 (got 0)" in capsys.readouterr().err


# -- the pieces -----------------------------------------------------------------------------------------

def test_label_text_is_yolo_lines_without_crowd_regions() -> None:
    boxes = np.array([[10, 20, 30, 60], [0, 0, 100, 50]], np.float32)
    text = yolo_label_text(boxes, np.array([2, 0]), np.array([False, True]), 100, 200)
    assert text == "2 0.200000 0.200000 0.200000 0.200000\n"
    assert yolo_label_text(boxes[:0], np.zeros(0, int), np.zeros(0, bool), 100, 200) == ""


def test_a_paste_over_or_inside_an_id_box_is_refused_though_its_iou_is_tiny() -> None:
    light = np.array([[100, 100, 110, 125]], np.float64)  # a traffic light, 250 px^2
    cover_all = np.array([50, 60, 170, 160], np.float64)  # 12000 px^2 over it: IoU 0.02
    assert box_overlaps(cover_all, light)[0][0] < 0.05
    assert not fits(cover_all, light, np.zeros((0, 4)), RULES)
    car = np.array([[0, 0, 200, 100]], np.float64)
    on_the_car = np.array([60, 30, 80, 50], np.float64)  # IoU 0.02, but wholly inside a "car" box
    assert box_overlaps(on_the_car, car)[0][0] < 0.05
    assert not fits(on_the_car, car, np.zeros((0, 4)), RULES)
    assert fits(np.array([0, 0, 40, 40], np.float64), light, np.zeros((0, 4)), RULES)


def test_find_spot_gives_up_on_a_full_image_and_respects_others() -> None:
    prior = IdBoxPrior(np.array([[0.5, 0.5, 0.2, 0.3]]))
    rng = np.random.default_rng(0)
    full = np.array([[0, 0, 200, 100]], np.float64)
    assert find_spot(rng, prior, 1.0, 200, 100, full, np.zeros((0, 4)), RULES) is None
    spots = []
    for _ in range(3):
        spot = find_spot(rng, prior, 1.0, 200, 100, np.zeros((0, 4)), np.array(spots).reshape(-1, 4), RULES)
        assert spot is not None and spot[2] <= 200 and spot[3] <= 100
        spots.append(spot)
    for k, spot in enumerate(spots):
        others = np.delete(np.array(spots, np.float64), k, axis=0)
        assert box_overlaps(spot, others)[0].max() <= RULES.max_iou


def test_feathered_paste_fades_in_and_stays_in_its_box() -> None:
    alpha = feather_alpha(20, 30, 4)
    assert alpha[10, 15] == 1.0 and alpha[0, 0] < 0.05 and np.all(np.diff(alpha[10, :8]) >= 0)
    image = np.zeros((50, 60, 3), np.uint8)
    paste(image, np.full((10, 10, 3), 200, np.uint8), np.array([10, 10, 40, 30]), feather_fraction=0.15,
          color_match=0.0)
    assert image[20, 25].tolist() == [200, 200, 200] and image[10, 10].max() < 40
    assert image[:10].max() == 0 and image[30:].max() == 0 and image[:, :10].max() == 0 and image[:, 40:].max() == 0


def test_id_transforms_make_new_crops_of_the_same_size() -> None:
    rng = np.random.default_rng(1)
    crop = np.zeros((40, 24, 3), np.uint8)
    crop[:20] = (0, 0, 255)
    crop[20:] = (255, 0, 0)
    shuffled, params = patch_shuffle(crop, rng)
    assert shuffled.shape == crop.shape and params["order"] != sorted(params["order"])
    other = np.full((30, 30, 3), 100, np.uint8)
    for _ in range(4):
        blended, params = cross_class_blend(crop, other, rng)
        assert blended.shape == crop.shape and params["mode"] in ("linear", "cut")
        assert not np.array_equal(blended, crop)
    context = np.full((60, 44, 3), 90, np.uint8)
    context[10:50, 10:34] = crop
    swapped, mask, params = texture_swap(context, (10, 10, 34, 50), np.full((8, 8, 3), (0, 255, 0), np.uint8), rng)
    assert swapped.shape == crop.shape and mask.shape == crop.shape[:2] and params["mask_fraction"] > 0.5
    assert swapped[20, 12, 1] > 150  # green now, where the object was


def test_a_reviewed_run_gives_confirmed_hallucinations_and_leaves_out_real_objects(
        tmp_path: Path, id_spec: str, world: Path, flagged: Path) -> None:
    """`--flagged RUN` with OUT/review.jsonl: crops of a flagged track a person called real are left
    out; a kept track called a hallucination joins with its crops from OUT/tracks/."""
    from pipeline.data.review_file import ReviewFile
    from pipeline.proxies.outlier_sources import load_flagged
    from pipeline.web.state import Gallery

    run = tmp_path / "run"
    shutil.copytree(flagged, run)
    index = run / "flagged" / "index.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    for row, track in zip(rows, (1, 1, 2)):
        row["track_id"] = track
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "tracks" / "cam0").mkdir(parents=True)
    gallery_rows = []
    for track, flag, seq in ((1, True, 0), (7, False, 40), (7, False, 55)):
        name = f"cam0/{seq:07d}_00{track}.jpg"
        cv2.imwrite(str(run / "tracks" / name), np.full((30, 20, 3), 120, np.uint8))
        gallery_rows.append({"file": name, "stream": "cam0", "seq": seq, "track_id": track, "cls": 1, "label": "car",
                             "track_hallucination": flag, "detector": "abc"})
    (run / "tracks" / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gallery_rows))
    assert len(load_flagged(run)[0]) == 3 and load_flagged(run)[2]["confirmed_tracks"] == 0  # no review yet
    gallery = Gallery(run)
    gallery.refresh()
    review = ReviewFile(run)
    review.append(gallery.tracks["cam0/1"], "real")
    review.append(gallery.tracks["cam0/7"], "hallucination")
    crops, missing, counts = load_flagged(run)
    assert missing == 0 and counts == {"left_out_real": 2, "confirmed_tracks": 1, "confirmed_crops": 2}
    kinds = sorted((c.source["kind"], c.source.get("track_id")) for c in crops.crops)
    assert kinds == [("flagged", 2), ("reviewed", 7), ("reviewed", 7)]
    out = tmp_path / "P"
    _build(out, id_spec, world, strategies=("paste",), count=4, pool=None, flagged=str(run))
    manifest = read_manifest(out)
    assert manifest["sources"]["flagged"]["crops"] == 3 and manifest["sources"]["flagged"]["review"] == counts
    assert _check_composites(out, id_spec, ("paste",)) == 4
