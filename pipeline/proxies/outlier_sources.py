"""What can be pasted or used as a background: an outlier pool and a flagged-crop archive.

- A labelled pool (any dataset SPEC; the synthetic world's ``ood/pool`` is COCO): its
  instance boxes are the crops, and its images without an ID object are backgrounds. A
  category is an ID object when it says ``"ood": false``, or, without an ``ood`` key, when its
  name is an ID class name.
- A plain folder of images (no labels.json / instances.json / data.yaml): every image is a
  background, and crops are random rectangles or whole images.
- A flagged-crop archive from ``ghostbox run`` (``OUT/flagged/index.jsonl``): each crop file
  is one crop, described by its index line.

Every draw returns a ``Cut``: the pixels, the object's silhouette where the crop came from a
larger image (``None`` otherwise) and a JSON-able description for the manifest.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.box_geometry import pixel_box
from pipeline.data import Dataset, parse_dataset_spec
from pipeline.data.review_file import GALLERY_INDEX, ReviewFile, track_key
from pipeline.data.yolo import IMAGE_SUFFIXES
from pipeline.errors import GhostboxError
from pipeline.proxies.blend import silhouette

_LABEL_FILES = ("labels.json", "instances.json", "data.yaml")
MIN_CROP_SIDE = 6  # smaller boxes hold too few pixels to look like anything once resized
WHOLE_IMAGE_FRACTION = 0.25  # of random-crop draws from an unlabelled folder
CONTEXT_MARGIN = 0.25  # of the box side, around a box, for its silhouette to be told from its surroundings


class ImageCache:
    """Decoded images by path, the most recent few kept: pool images are drawn again and again."""

    def __init__(self, size: int = 32) -> None:
        self._images: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._size = size

    def get(self, path: Path) -> np.ndarray:
        image = self._images.get(path)
        if image is None:
            if not path.is_file():
                raise GhostboxError(f"{path}: image file not found")
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise GhostboxError(f"{path}: cannot decode image")
            image.setflags(write=False)  # callers cut copies; the cached pixels stay as read
            self._images[path] = image
            if len(self._images) > self._size:
                self._images.popitem(last=False)
        else:
            self._images.move_to_end(path)
        return image


@dataclass
class Cut:
    pixels: np.ndarray
    mask: np.ndarray | None  # (H, W) 0..1 silhouette of the object, when it could be estimated
    source: dict[str, Any]


@dataclass(frozen=True)
class BoxCrop:
    """One crop: a box in an image file (None: the whole file), and its manifest description."""

    path: Path
    box: tuple[int, int, int, int] | None
    source: dict[str, Any]

    def context(self, images: ImageCache) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The box with ``CONTEXT_MARGIN`` of surroundings, and the box's place in it."""
        image = images.get(self.path)
        if self.box is None:
            return image, (0, 0, image.shape[1], image.shape[0])
        x1, y1, x2, y2 = self.box
        mx, my = round(CONTEXT_MARGIN * (x2 - x1)), round(CONTEXT_MARGIN * (y2 - y1))
        left, top = max(x1 - mx, 0), max(y1 - my, 0)
        right, bottom = min(x2 + mx, image.shape[1]), min(y2 + my, image.shape[0])
        return image[top:bottom, left:right], (x1 - left, y1 - top, x2 - left, y2 - top)

    def cut(self, images: ImageCache, with_mask: bool = False) -> Cut:
        context, (x1, y1, x2, y2) = self.context(images)
        mask = silhouette(context, (x1, y1, x2, y2)) if with_mask and self.box is not None else None
        return Cut(context[y1:y2, x1:x2].copy(), mask, dict(self.source))


class CropDrawer:
    """A group of crops to draw from at random."""

    kind = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, images: ImageCache) -> Cut:
        raise NotImplementedError


class BoxCrops(CropDrawer):
    """Crops known in advance (pool instances, flagged crops, mined detections)."""

    def __init__(self, kind: str, crops: Sequence[BoxCrop]) -> None:
        self.kind = kind
        self.crops = list(crops)

    def __len__(self) -> int:
        return len(self.crops)

    def draw(self, rng: np.random.Generator, images: ImageCache) -> Cut:
        return self.crops[int(rng.integers(len(self.crops)))].cut(images, with_mask=True)


class RandomCrops(CropDrawer):
    """Random rectangles (or whole images) of unlabelled images: nothing says where the objects are."""

    def __init__(self, files: Sequence[tuple[str, Path]], kind: str = "pool_random") -> None:
        self.files = list(files)
        self.kind = kind

    def __len__(self) -> int:
        return len(self.files)

    def draw(self, rng: np.random.Generator, images: ImageCache) -> Cut:
        name, path = self.files[int(rng.integers(len(self.files)))]
        image = images.get(path)
        height, width = image.shape[:2]
        if rng.uniform() < WHOLE_IMAGE_FRACTION:
            return Cut(image.copy(), None, {"kind": self.kind, "file": name, "box": None})
        side = rng.uniform(0.15, 0.6) * min(width, height)
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        w = int(np.clip(round(side * np.sqrt(aspect)), 1, width))
        h = int(np.clip(round(side / np.sqrt(aspect)), 1, height))
        x1, y1 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        return Cut(image[y1:y1 + h, x1:x1 + w].copy(), None,
                   {"kind": self.kind, "file": name, "box": [x1, y1, x1 + w, y1 + h]})


@dataclass
class PoolImage:
    file: str
    path: Path
    id_boxes: np.ndarray  # (K, 4) xyxy of ID objects in it: not outliers, never mined


class OutlierPool:
    """The ``--pool``: its images (with their ID boxes), its backgrounds and its crops."""

    def __init__(self, spec: str, labelled: bool, images: list[PoolImage], crops: CropDrawer) -> None:
        self.spec = spec
        self.labelled = labelled
        self.images = images
        self.crops = crops

    @property
    def backgrounds(self) -> list[PoolImage]:
        return [image for image in self.images if not len(image.id_boxes)]

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": "labelled" if self.labelled else "folder", "images": len(self.images),
                "backgrounds": len(self.backgrounds), "crops": len(self.crops) if self.labelled else None}


def open_pool(spec: str, id_class_names: Sequence[str]) -> OutlierPool:
    """A labelled pool from a dataset SPEC, or an unlabelled one from a plain folder of images."""
    path = Path(spec).expanduser()
    if path.is_dir() and not any((path / name).is_file() for name in _LABEL_FILES):
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise GhostboxError(f"--pool {spec}: folder holds no images (and no labels.json, instances.json or "
                                "data.yaml)")
        named = [(str(p.relative_to(path)), p) for p in files]
        images = [PoolImage(name, p, np.zeros((0, 4))) for name, p in named]
        return OutlierPool(spec, False, images, RandomCrops(named))
    dataset = parse_dataset_spec(spec, strict=False)
    if not len(dataset):
        raise GhostboxError(f"--pool {spec}: no images")
    return _labelled_pool(spec, dataset, id_class_names)


def _labelled_pool(spec: str, dataset: Dataset, id_class_names: Sequence[str]) -> OutlierPool:
    id_names = set(id_class_names)
    is_id = np.array([not c["ood"] if "ood" in c else c["name"] in id_names for c in dataset.categories], bool)
    images, crops = [], []
    for record in dataset:
        ids = is_id[record.class_ids] if len(record) else np.zeros(0, bool)
        images.append(PoolImage(record.file_name, record.path, record.boxes_xyxy[ids].astype(np.float64)))
        if record.width is None or record.height is None:
            continue
        for k in np.flatnonzero(~ids & ~record.crowd):
            box = pixel_box(record.boxes_xyxy[k], record.width, record.height)
            if min(box[2] - box[0], box[3] - box[1]) < MIN_CROP_SIDE:
                continue
            label = dataset.class_names[int(record.class_ids[k])]
            crops.append(BoxCrop(record.path, box, {"kind": "pool", "file": record.file_name, "box": list(box),
                                                    "label": label}))
    return OutlierPool(spec, True, images, BoxCrops("pool", crops))


def flagged_index_path(folder: str | Path) -> Path:
    """``DIR/index.jsonl``, or ``DIR/flagged/index.jsonl`` when DIR is a ``ghostbox run`` output."""
    folder = Path(folder).expanduser()
    for candidate in (folder / "index.jsonl", folder / "flagged" / "index.jsonl"):
        if candidate.is_file():
            return candidate
    raise GhostboxError(f"--flagged {folder}: no index.jsonl there or in {folder / 'flagged'} "
                        "(give the flagged folder of a `ghostbox run` output)")


def load_flagged(folder: str | Path) -> tuple[BoxCrops, int, dict[str, int]]:
    """The archive's crops, how many index lines named a missing file (skipped), and what a review
    of the run changed (`review`: crops of tracks confirmed real left out, crops of tracks confirmed
    hallucinations added from OUT/tracks/, kept ones included)."""
    index = flagged_index_path(folder)
    run = index.parent.parent if index.parent.name == "flagged" else index.parent
    answers = ReviewFile(run).answers()
    real = {key for key, row in answers.items() if row["answer"] == "real"}
    confirmed = [row for row in answers.values() if row["answer"] == "hallucination"]
    crops, missing = [], 0
    review = {"left_out_real": 0, "confirmed_tracks": len(confirmed), "confirmed_crops": 0}
    taken: set[Path] = set()
    for lineno, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GhostboxError(f"{index}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise GhostboxError(f"{index}:{lineno}: no 'file' field naming the crop")
        if isinstance(entry.get("track_id"), int) and track_key(str(entry.get("stream")), entry["track_id"]) in real:
            review["left_out_real"] += 1  # a person said this track is a real object
            continue
        path = index.parent / name
        if not path.is_file():
            missing += 1  # an archive copied in part: use what is there
            continue
        source = {"kind": "flagged", "file": name}
        source.update({k: entry[k] for k in ("stream", "seq", "label", "conf", "score", "track_id") if k in entry})
        crops.append(BoxCrop(path, None, source))
        taken.add(path)
    for row in confirmed:
        for name in row.get("crops") or []:
            path = run / GALLERY_INDEX.parent / str(name)
            if path in taken or not path.is_file():
                missing += not path.is_file()
                continue
            crops.append(BoxCrop(path, None, {"kind": "reviewed", "file": f"tracks/{name}", "stream": row["stream"],
                                              "track_id": row["track_id"], "label": row.get("label"),
                                              "verdict": row.get("verdict")}))
            taken.add(path)
            review["confirmed_crops"] += 1
    return BoxCrops("flagged", crops), missing, review
