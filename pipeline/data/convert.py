"""Writing datasets in Ultralytics YOLO layout (``images/<split>``, ``labels/<split>``).

``write_yolo_dataset`` takes any loaded ``Dataset`` per split; ``convert_bdd_to_yolo``
loads BDD label files and calls it. Frames are streamed: one record at a time, images
linked or copied file by file, never decoded. Crowd boxes have no YOLO equivalent and
are left out of the labels (counted as ``crowd_skipped``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.data.bdd import BDD10, load_bdd
from pipeline.data.dataset import Dataset
from pipeline.data.records import LoadWarnings
from pipeline.errors import GhostboxError

LINK_MODES = ("hardlink", "copy", "symlink")
DEFAULT_LINK = "hardlink"
# Six decimals of a normalised coordinate: at most ~0.7e-3 px error on a 1280 px side.
_DECIMALS = 6
_HEADER = "# Ultralytics dataset written by ghostbox (pipeline.data.convert).\n"


def convert_bdd_to_yolo(labels_json: str | Path | Mapping[str, str | Path],
                        images_dir: str | Path | Mapping[str, str | Path] | None,
                        out_dir: str | Path, class_names: Sequence[str] = BDD10,
                        link: str = DEFAULT_LINK, *, split: str | None = None,
                        strict: bool = True, overwrite: bool = False,
                        warnings: LoadWarnings | None = None) -> Path:
    """Convert BDD-100K label files to an Ultralytics dataset; returns its data.yaml.

    ``labels_json`` is one file (its split is ``split``, else read from ``det_<split>.json``
    or ``bdd100k_labels_images_<split>.json``, else ``val``) or a mapping split -> file.
    ``images_dir`` is a folder, a mapping split -> folder, or None for BDD's layout.
    Load and conversion counts are added to ``warnings`` when given.
    """
    if isinstance(labels_json, Mapping):
        label_files = {str(k): Path(v) for k, v in labels_json.items()}
    else:
        label_files = {split or _split_of(Path(labels_json)): Path(labels_json)}
    datasets = {}
    for split_name, label_file in label_files.items():
        if isinstance(images_dir, Mapping):
            split_images = images_dir.get(split_name)
        else:
            split_images = images_dir
        datasets[split_name] = load_bdd(label_file, split_images, class_names=class_names,
                                        strict=strict)
    return write_yolo_dataset(datasets, out_dir, link=link, overwrite=overwrite,
                              warnings=warnings)


def write_yolo_dataset(splits: Mapping[str, Dataset], out_dir: str | Path, *,
                       link: str = DEFAULT_LINK, overwrite: bool = False,
                       warnings: LoadWarnings | None = None) -> Path:
    """Write each dataset as split ``images/<split>`` + ``labels/<split>``; returns data.yaml.

    All splits must share ``class_names``. An existing data.yaml in ``out_dir`` with the
    same names keeps its other splits; split folders that already hold files are an error
    unless ``overwrite``, which empties them first.
    """
    if link not in LINK_MODES:
        raise GhostboxError(f"link: {link!r}, expected one of {', '.join(LINK_MODES)}")
    if not splits:
        raise GhostboxError("convert: no split to write")
    out_dir = Path(out_dir).resolve()
    names = _shared_names(splits)
    tally = warnings if warnings is not None else LoadWarnings()
    entries = _existing_entries(out_dir / "data.yaml", names, overwrite)
    for split, dataset in splits.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", split) or split in (".", ".."):
            raise GhostboxError(f"convert: split name {split!r} is not a plain folder name")
        _write_split(dataset, out_dir, split, link, overwrite, tally)
        # After the pass: clips found while reading image sizes are in by now.
        tally.merge(dataset.warnings, prefix=f"{split}.")
        entries[split] = f"images/{split}"
    _write_data_yaml(out_dir / "data.yaml", out_dir, entries, names)
    return out_dir / "data.yaml"


def _split_of(labels_json: Path) -> str:
    match = re.fullmatch(r"(?:det|bdd100k_labels_images)_(\w+)", labels_json.stem)
    return match.group(1) if match else "val"


def _shared_names(splits: Mapping[str, Dataset]) -> tuple[str, ...]:
    first_split, first = next(iter(splits.items()))
    for split, dataset in splits.items():
        if dataset.class_names != first.class_names:
            raise GhostboxError(f"convert: split {split!r} has classes {list(dataset.class_names)}"
                                f" but {first_split!r} has {list(first.class_names)}")
    return first.class_names


def _existing_entries(data_yaml: Path, names: tuple[str, ...],
                      overwrite: bool) -> dict[str, str]:
    """Split entries of an earlier conversion into the same folder, to keep them."""
    if not data_yaml.is_file():
        return {}
    try:
        old = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        old = None
    if not isinstance(old, dict):
        if overwrite:
            return {}
        raise GhostboxError(f"{data_yaml}: exists and is not a readable data.yaml; "
                            "use overwrite to replace it")
    old_names = old.get("names")
    if isinstance(old_names, dict):
        old_names = [old_names[k] for k in sorted(old_names)]
    if list(old_names or []) != list(names):
        if overwrite:
            return {}
        raise GhostboxError(f"{data_yaml}: field 'names' is {old_names}, not {list(names)}; "
                            "use overwrite to start a new dataset there")
    generated = set(old.get("ghostbox_filled", []) or [])
    not_splits = {"path", "names", "nc", "download", "ghostbox_filled"}
    return {key: value for key, value in old.items()
            if isinstance(value, str) and key not in not_splits and key not in generated}


def _write_split(dataset: Dataset, out_dir: Path, split: str, link: str, overwrite: bool,
                 tally: LoadWarnings) -> None:
    images_out = out_dir / "images" / split
    labels_out = out_dir / "labels" / split
    for folder in (images_out, labels_out):
        if folder.is_dir() and any(folder.iterdir()):
            if not overwrite:
                raise GhostboxError(f"{folder}: already holds files; use overwrite to replace "
                                    f"split {split!r}")
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
    # Ultralytics caches parsed labels next to the labels folder; a stale cache would win.
    (out_dir / "labels" / f"{split}.cache").unlink(missing_ok=True)

    written: set[Path] = set()
    for record in dataset:
        relative = _relative_image_path(record.file_name)
        if relative in written:
            raise GhostboxError(f"{dataset.source}: two images map to {split}/{relative}")
        written.add(relative)
        if not record.path.is_file():
            raise GhostboxError(f"{record.path}: image file not found (file_name "
                                f"{record.file_name!r} in {dataset.source})")
        if record.width is None or record.height is None:
            raise GhostboxError(f"{record.path}: cannot read the image size")
        image_out = images_out / relative
        image_out.parent.mkdir(parents=True, exist_ok=True)
        place_file(record.path, image_out, link, tally)
        label_out = (labels_out / relative).with_suffix(".txt")
        label_out.parent.mkdir(parents=True, exist_ok=True)
        label_out.write_text(_label_text(record, tally), encoding="utf-8")


def _relative_image_path(file_name: str) -> Path:
    path = Path(file_name)
    if path.is_absolute():
        return Path(path.name)  # a YOLO image outside its root: flatten it
    if ".." in path.parts:
        raise GhostboxError(f"convert: file_name {file_name!r} leaves the image folder")
    return path


def _label_text(record: Any, tally: LoadWarnings) -> str:
    for _ in range(int(record.crowd.sum())):
        tally.add("crowd_skipped", record.file_name)
    return yolo_label_text(record.boxes_xyxy, record.class_ids, record.crowd, record.width, record.height)


def yolo_label_text(boxes_xyxy: np.ndarray, class_ids: np.ndarray, crowd: np.ndarray, width: float,
                    height: float) -> str:
    """YOLO label lines ``cls cx cy w h`` (normalised to the image size) of the non-crowd boxes.

    Crowd regions have no YOLO form and are left out.
    """
    keep = ~np.asarray(crowd, bool)
    width, height = float(width), float(height)
    lines = []
    for (x1, y1, x2, y2), class_id in zip(np.asarray(boxes_xyxy)[keep].tolist(),
                                          np.asarray(class_ids)[keep].tolist()):
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{class_id} {cx:.{_DECIMALS}f} {cy:.{_DECIMALS}f} {w:.{_DECIMALS}f} {h:.{_DECIMALS}f}\n")
    return "".join(lines)


def place_file(source: Path, target: Path, link: str, tally: LoadWarnings) -> None:
    """Put ``source`` at ``target`` as a symlink, hard link or copy; a link this file system or
    platform refuses (another device, Windows without the symlink privilege) falls back to a
    hard link, then a copy, and is counted in ``tally``."""
    if link == "symlink":
        try:
            target.symlink_to(source.resolve())
            return
        except OSError:
            tally.add("symlink_fallback", str(source))
            link = "hardlink"
    if link == "hardlink":
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed: copy instead
            tally.add("hardlink_fallback_copy", str(source))
    shutil.copyfile(source, target)


def _write_data_yaml(data_yaml: Path, out_dir: Path, entries: dict[str, str],
                     names: tuple[str, ...]) -> None:
    entries = dict(entries)
    filled = []
    # Ultralytics requires both train and val; point a missing one at the other.
    for key, other in (("train", "val"), ("val", "train")):
        if key not in entries and other in entries:
            entries[key] = entries[other]
            filled.append(key)
    content: dict[str, Any] = {"path": str(out_dir)}
    for key in ("train", "val", "test"):
        if key in entries:
            content[key] = entries[key]
    for key in sorted(set(entries) - {"train", "val", "test"}):
        content[key] = entries[key]
    content["names"] = dict(enumerate(names))
    if filled:
        content["ghostbox_filled"] = filled
    note = "".join(f"# '{key}' points at another split: only that one was converted.\n"
                   for key in filled)
    data_yaml.parent.mkdir(parents=True, exist_ok=True)
    data_yaml.write_text(_HEADER + note + yaml.safe_dump(content, sort_keys=False,
                                                         allow_unicode=True), encoding="utf-8")
