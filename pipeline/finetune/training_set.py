"""The Ultralytics dataset a fine-tune reads: ID training images plus proxy images.

Proxy sets are the folders `ghostbox proxies` writes (YOLO layout: images/, labels/ with
empty label files for background images and no label for pasted regions), so the detector
learns their non-ID objects as background. ID data of any dataset spec is written in YOLO
layout first (hard links, no re-encoding). The training list is one text file of image
paths: ID images, then `proxy_ratio` x as many proxy images, drawn by seed.

Every listed image is a link named by its place in that list (train/images/000000.jpg, ...):
Ultralytics sorts its training images by path before its seeded shuffle, so with the
original paths, where the proxy sets happen to lie would decide which images share a batch
and a run would not reproduce from another folder. `train/sources.txt` maps each index back.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from pipeline.data import parse_dataset_spec
from pipeline.data.convert import place_file, write_yolo_dataset, yolo_label_text
from pipeline.data.records import LoadWarnings
from pipeline.data.yolo import label_path_for
from pipeline.detect.unknown_class import UNKNOWN_CLASS
from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class TrainingSet:
    data_yaml: Path
    id_images: int
    proxy_images: int
    proxies_available: int
    proxy_sources: dict[str, int]  # proxy set -> images drawn from it

    def describe(self) -> dict[str, object]:
        return {"data_yaml": str(self.data_yaml), "id_images": self.id_images, "proxy_images": self.proxy_images,
                "proxies_available": self.proxies_available, "proxy_sources": self.proxy_sources}


def proxy_images(proxy_dir: str | Path) -> tuple[list[Path], list[str] | None]:
    """(images, class names from its manifest) of one proxy set; refuses folders that are not proxy sets."""
    root = Path(proxy_dir)
    images, labels = root / "images", root / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise GhostboxError(f"proxy set '{root}': expected images/ and labels/ folders (as `ghostbox proxies` "
                            f"writes)")
    found = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    missing = [p.name for p in found if not (labels / f"{p.stem}.txt").is_file()]
    if missing:
        raise GhostboxError(f"proxy set '{root}': {len(missing)} images lack a label file, e.g. labels/"
                            f"{Path(missing[0]).stem}.txt (an empty file marks a background image)")
    if not found:
        raise GhostboxError(f"proxy set '{root}': no images in {images}")
    manifest = root / "manifest.json"
    names = json.loads(manifest.read_text()).get("class_names") if manifest.is_file() else None
    return found, names


def unknown_labels(proxy_dir: str | Path, unknown: int) -> dict[Path, str]:
    """Label lines of class `unknown` for the pasted regions of a proxy set's images (from its manifest), by
    image path; background images and sets without a manifest have none."""
    from PIL import Image  # Ultralytics' dependency; reads only the size from the header

    root = Path(proxy_dir)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise GhostboxError(f"proxy set '{root}': --unknown-class labels the pasted regions, which only a "
                            "manifest.json (as `ghostbox proxies` writes) records")
    lines: dict[Path, str] = {}
    for entry in json.loads(manifest.read_text()).get("images", []):
        pasted = [region["xyxy"] for region in entry.get("pasted") or []]
        if not pasted:
            continue
        image = root / entry["file"]
        with Image.open(image) as opened:
            width, height = opened.size
        boxes = np.asarray(pasted, float)
        lines[image] = yolo_label_text(boxes, np.full(len(boxes), unknown), np.zeros(len(boxes), bool), width,
                                       height)
    return lines


def build_training_set(id_spec: str, proxy_dirs: Sequence[str | Path], out_dir: str | Path,
                       class_names: tuple[str, ...], proxy_ratio: float = 0.5, seed: int = 0,
                       val_spec: str | None = None, unknown_class: bool = False) -> TrainingSet:
    """`unknown_class`: the proxies' pasted regions are labelled as one more class (`UNKNOWN_CLASS`) instead
    of background."""
    if proxy_ratio < 0:
        raise GhostboxError(f"proxy_ratio must be >= 0, got {proxy_ratio}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    id_train = parse_dataset_spec(id_spec, class_names=list(class_names))
    if len(id_train) == 0:
        raise GhostboxError(f"ID training set '{id_spec}': no images")
    if tuple(id_train.class_names) != tuple(class_names):
        raise GhostboxError(f"ID training set '{id_spec}': classes {list(id_train.class_names)} differ from the "
                            f"model's {list(class_names)}")
    splits = {"train": id_train}
    if val_spec:
        splits["val"] = parse_dataset_spec(val_spec, class_names=list(class_names))
    write_yolo_dataset(splits, out / "id", overwrite=True)  # its own data.yaml stays for reference
    id_files = sorted(p for p in (out / "id" / "images" / "train").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)

    pools: dict[str, list[Path]] = {}
    for folder in proxy_dirs:
        files, names = proxy_images(folder)
        if names is not None and tuple(names) != tuple(class_names):
            raise GhostboxError(f"proxy set '{folder}' was made for classes {names}, the model has "
                                f"{list(class_names)}")
        pools[str(Path(folder))] = files
    available = sum(len(v) for v in pools.values())
    wanted = int(round(proxy_ratio * len(id_files)))
    rng = np.random.default_rng(seed)
    drawn: dict[str, int] = {}
    chosen: list[Path] = []
    if available and wanted:
        everything = [(src, p) for src, files in pools.items() for p in files]
        if wanted > available:
            log.warning("proxy_ratio %.2f asks for %d proxy images, the sets hold %d; using all of them",
                        proxy_ratio, wanted, available)
            picked = list(range(available))
        else:
            picked = sorted(rng.choice(available, wanted, replace=False).tolist())
        for i in picked:
            src, path = everything[i]
            chosen.append(path)
            drawn[src] = drawn.get(src, 0) + 1
    extra: dict[Path, str] = {}
    if unknown_class:
        for folder in proxy_dirs:
            extra.update(unknown_labels(folder, len(class_names)))
    listed = _link_in_order([*id_files, *chosen], out / "train", extra)
    listing = out / "train.txt"
    listing.write_text("".join(f"{p}\n" for p in listed))
    val = "id/images/val" if val_spec else "id/images/train"
    config = {"path": str(out), "train": "train.txt", "val": val,
              "names": {i: n for i, n in enumerate((*class_names, UNKNOWN_CLASS) if unknown_class else class_names)}}
    data_yaml = out / "data.yaml"
    data_yaml.write_text("# Fine-tuning set written by ghostbox (pipeline.finetune): ID images plus proxies.\n"
                         + yaml.safe_dump(config, sort_keys=False))
    return TrainingSet(data_yaml, len(id_files), len(chosen), available, drawn)


def _link_in_order(images: list[Path], folder: Path, extra: dict[Path, str]) -> list[Path]:
    """Index-named links to `images` (labels copied beside them, `extra` lines added); returns the link paths."""

    if folder.exists():
        shutil.rmtree(folder)  # a stale Ultralytics labels.cache would describe the old list
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    width = max(6, len(str(len(images))))
    tally = LoadWarnings()
    links = []
    for i, image in enumerate(images):
        link = folder / "images" / f"{i:0{width}d}{image.suffix.lower()}"
        place_file(image, link, "symlink", tally)
        label, target = label_path_for(image), folder / "labels" / f"{link.stem}.txt"
        text = label.read_text() if label.is_file() else ""  # YOLO layout: no label file means no object
        if image in extra:
            text = (text if not text or text.endswith("\n") else text + "\n") + extra[image]
        target.write_text(text)
        links.append(link)
    if tally:
        log.info("training set links: %s", "; ".join(tally.lines()))
    (folder / "sources.txt").write_text("".join(f"{link.name}\t{image.resolve()}\n"
                                                for link, image in zip(links, images)))
    return links
