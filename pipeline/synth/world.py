"""Generate a whole synthetic street world: ID train/val, OoD test sets, pool, stream.

Layout under the output directory (all paths in world.json are relative to it)::

    world.json                      manifest: version, seed, config, ID classes, OoD kind table
                                    (name, tier, group, resembles), every split with its path,
                                    format and image count, and the stream
    id/train/images/*.jpg           ID objects only (some images empty)
    id/train/labels.json            BDD-100K det_20 frames (no `labels` key on empty frames)
    id/val/images/*.jpg, id/val/labels.json
    ood/near_test/images/*.jpg      test-group near-OoD objects, no ID object
    ood/near_test/instances.json    COCO instances, one category per OoD kind
                                    (extra keys: ood, tier, group, resembles)
    ood/far_test/...                test-group far-OoD objects, no ID object
    ood/pool/...                    pool-group kinds of both tiers, no ID object
                                    (for OoD proxies / outlier exposure; never for testing)
    ood/mixed_test/...              ID objects and test-group OoD objects; COCO with ID
                                    categories (ood: false) and OoD categories (ood: true)
    ood/contaminated/images/*.jpg   like near_test, but `contamination_fraction` of the images
                                    also hold one ID object
    ood/contaminated/instances.json the OoD objects only, as a naive OoD set is labelled
    ood/contaminated/contamination.json
                                    the contaminated images with their ID objects (audit truth)
    yolo/images/{train,val}/*.jpg   Ultralytics export of id/train and id/val (hard links)
    yolo/labels/{train,val}/*.txt   `class cx cy w h`, normalised
    yolo/data.yaml                  absolute `path`, train/val dirs, names (the export is
                                    pipeline.data.convert's, from the det_20 files)
    stream/stream.mp4               mp4v video (stream.avi with MJPG where mp4v fails)
    stream/ground_truth.jsonl       {"frame": i, "boxes": [{"xyxy", "label", "ood", "kind", ...}]}

Every image is drawn from its own generator seeded by (seed, split, index), so the result
does not depend on the order or the number of worker processes.
"""

from __future__ import annotations

import functools
import multiprocessing
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.data.convert import convert_bdd_to_yolo
from pipeline.errors import GhostboxError
from pipeline.synth.config import WorldConfig
from pipeline.synth.id_objects import ID_CLASSES
from pipeline.synth.kinds import OOD_KINDS, ood_kind_names
from pipeline.synth.scene import image_rng, render_scene
from pipeline.synth.stream import write_stream
from pipeline.synth.writers import RenderedImage, bdd_frames, coco_instances, write_json

WORLD_VERSION = 2  # 2: larger ID objects, stricter ID occlusion/truncation, <= 7 per image
JPEG_QUALITY = 95
ID_CLASS_P = (0.3, 0.3, 0.2, 0.2)  # pedestrian, car, traffic light, traffic sign
OWNED = ("world.json", "id", "ood", "yolo", "stream")  # what a regeneration may delete
ID_SPLITS = ("train", "val")
OOD_SPLITS = ("near_test", "far_test", "pool", "mixed_test", "contaminated")
RETRIES = 8  # fresh draws for an image whose required objects did not all fit


def split_dir(split: str) -> str:
    return f"id/{split}" if split in ID_SPLITS else f"ood/{split}"


@functools.lru_cache(maxsize=8)
def contaminated_indices(config: WorldConfig) -> frozenset[int]:
    """Which contaminated-set images hold an ID object: exactly round(fraction * count) of them."""
    n = round(config.contamination_fraction * config.contaminated)
    rng = image_rng(config.seed, "contaminated-choice", 0)
    return frozenset(int(i) for i in rng.choice(config.contaminated, size=n, replace=False))


def _count(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _names(rng: np.random.Generator, pool: Sequence[str], n: int, p: Sequence[float] | None = None) -> list[str]:
    return [str(pool[int(i)]) for i in rng.choice(len(pool), size=n, p=p)]


def _recipe(config: WorldConfig, split: str, index: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(required, optional) object names for one image of a split."""
    if split in ID_SPLITS:
        if rng.random() < config.empty_id_fraction:
            return [], []
        return [], _names(rng, ID_CLASSES, _count(rng, config.id_objects_per_image), ID_CLASS_P)
    if split == "mixed_test":
        ids = _names(rng, ID_CLASSES, _count(rng, config.mixed_id_objects_per_image), ID_CLASS_P)
        oods = _names(rng, ood_kind_names(group="test"), _count(rng, config.mixed_ood_objects_per_image))
        return [ids[0], oods[0]], ids[1:] + oods[1:]
    kinds = {"near_test": ood_kind_names("near", "test"), "far_test": ood_kind_names("far", "test"),
             "pool": ood_kind_names(group="pool"), "contaminated": ood_kind_names("near", "test")}[split]
    oods = _names(rng, kinds, _count(rng, config.ood_objects_per_image))
    if split == "contaminated" and index in contaminated_indices(config):
        return [_names(rng, ID_CLASSES, 1, ID_CLASS_P)[0], oods[0]], oods[1:]
    return oods[:1], oods[1:]


def render_split_image(config: WorldConfig, split: str, index: int) -> tuple[np.ndarray, RenderedImage]:
    """Image `index` of `split` and what it holds; a pure function of (config, split, index)."""
    for attempt in range(RETRIES):
        tag = split if attempt == 0 else f"{split}#retry{attempt}"
        rng = image_rng(config.seed, tag, index)
        required, optional = _recipe(config, split, index, rng)
        scene = render_scene(rng, config.width, config.height, required, optional)
        present = [o.name for o in scene.objects]
        if all(present.count(n) >= required.count(n) for n in set(required)):
            break
    else:
        raise GhostboxError(
            f"world config: width={config.width} height={config.height}: too small to place "
            f"{required} in {split} image {index}")
    record = RenderedImage(f"{split}_{index:05d}.jpg", config.width, config.height, scene.timeofday,
                         scene.weather, scene.objects)
    return scene.image, record


def _render_task(task: tuple[WorldConfig, str, int, str]) -> tuple[str, int, RenderedImage]:
    config, split, index, image_dir = task
    image, record = render_split_image(config, split, index)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {record.file_name}")
    (Path(image_dir) / record.file_name).write_bytes(jpeg.tobytes())
    return split, index, record


def _stream_task(config: WorldConfig, stream_dir: str) -> dict[str, Any]:
    return write_stream(config, Path(stream_dir))


def _worker_init() -> None:
    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV threads would only contend


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise GhostboxError(f"world out_dir={out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "world.json").is_file():
        raise GhostboxError(f"world out_dir={out_dir} is not empty and holds no world.json; refusing to overwrite it")
    for name in OWNED:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _split_counts(config: WorldConfig) -> dict[str, int]:
    return {s: getattr(config, s) for s in ID_SPLITS + OOD_SPLITS}


def generate_world(config: WorldConfig, out_dir: Path,
                   progress: Callable[[int, int], None] | None = None, workers: int = 2) -> Path:
    """Write the world described by `config` under `out_dir`; returns the path of world.json.

    `progress(done, total)` is called as images finish. `workers` processes render images in
    parallel (1 renders in this process); the files do not depend on it.
    """
    if not isinstance(config, WorldConfig):
        raise GhostboxError(f"world config: expected a WorldConfig, got {type(config).__name__}")
    if workers < 1:
        raise GhostboxError(f"world workers={workers} must be >= 1")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    counts = _split_counts(config)
    tasks = []
    for split, n in counts.items():
        image_dir = out_dir / split_dir(split) / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        tasks += [(config, split, i, str(image_dir)) for i in range(n)]
    total = len(tasks)
    records: dict[str, list[RenderedImage | None]] = {s: [None] * n for s, n in counts.items()}

    def collect(results) -> None:
        for done, (split, index, record) in enumerate(results, start=1):
            records[split][index] = record
            if progress is not None:
                progress(done, total)

    if workers == 1:
        stream_info = _stream_task(config, str(out_dir / "stream"))
        collect(map(_render_task, tasks))
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork: safe beside threaded libraries
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            stream_job = pool.apply_async(_stream_task, (config, str(out_dir / "stream")))
            collect(pool.imap_unordered(_render_task, tasks, chunksize=16))
            stream_info = stream_job.get()

    done_records = {s: [r for r in recs if r is not None] for s, recs in records.items()}
    splits_manifest = []
    for split in ID_SPLITS:
        path = split_dir(split)
        write_json(out_dir / path / "labels.json", bdd_frames(done_records[split]))
        splits_manifest.append({"name": split, "path": path, "images": f"{path}/images",
                                "labels": f"{path}/labels.json", "format": "bdd100k-det20",
                                "count": counts[split], "content": "id"})
    test_kinds = list(ood_kind_names(group="test"))
    ood_categories = {
        "near_test": list(ood_kind_names("near", "test")),
        "far_test": list(ood_kind_names("far", "test")),
        "pool": list(ood_kind_names(group="pool")),
        "mixed_test": list(ID_CLASSES) + test_kinds,
        "contaminated": list(ood_kind_names("near", "test")),
    }
    for split in OOD_SPLITS:
        path = split_dir(split)
        recs = done_records[split]
        keep = None if split != "contaminated" else set(ood_categories[split])
        write_json(out_dir / path / "instances.json",
                   coco_instances(recs, ood_categories[split], f"ghostbox synthetic world {split}", keep))
        entry = {"name": split, "path": path, "images": f"{path}/images", "labels": f"{path}/instances.json",
                 "format": "coco", "count": counts[split], "kinds": ood_categories[split]}
        if split == "contaminated":
            write_json(out_dir / path / "contamination.json", _contamination_truth(config, recs))
            entry["contamination"] = f"{path}/contamination.json"
            entry["contamination_fraction"] = config.contamination_fraction
        splits_manifest.append(entry)

    convert_bdd_to_yolo({s: out_dir / split_dir(s) / "labels.json" for s in ID_SPLITS},
                        {s: out_dir / split_dir(s) / "images" for s in ID_SPLITS},
                        out_dir / "yolo", class_names=ID_CLASSES, link="hardlink")
    manifest = {
        "version": WORLD_VERSION,
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "id_classes": list(ID_CLASSES),
        "ood_kinds": [{"name": k.name, "tier": k.tier, "group": k.group, "resembles": k.resembles}
                      for k in OOD_KINDS],
        "splits": splits_manifest,
        "yolo": {"path": "yolo", "data": "yolo/data.yaml", "format": "ultralytics-yolo",
                 "splits": list(ID_SPLITS)},
        "stream": {"path": "stream", **stream_info},
    }
    manifest_path = out_dir / "world.json"
    write_json(manifest_path, manifest)
    return manifest_path


def _contamination_truth(config: WorldConfig, records: Sequence[RenderedImage]) -> dict[str, Any]:
    images = []
    for rec in records:
        ids = [o for o in rec.objects if o.tier == "id"]
        if ids:
            images.append({"file_name": rec.file_name, "objects": [
                {"category": o.name, "box2d": dict(zip(("x1", "y1", "x2", "y2"), map(float, o.box))),
                 "bbox": [float(o.box[0]), float(o.box[1]), float(o.box[2] - o.box[0]), float(o.box[3] - o.box[1])]}
                for o in ids]})
    return {"contamination_fraction": config.contamination_fraction, "images_total": len(records),
            "contaminated_images": len(images), "images": images}
