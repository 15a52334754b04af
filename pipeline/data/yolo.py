"""Ultralytics YOLO-format datasets: a data.yaml plus one ``labels/*.txt`` per image.

data.yaml keys used: ``path`` (dataset root; relative to the yaml's folder, whereas
Ultralytics resolves it against its own datasets_dir), the split entries (``train``,
``val``, ``test``: a folder searched recursively, a .txt list of image paths, one image,
or a list of those, relative to the root), and ``names`` (list, or dict of id -> name;
``nc`` alone gives class_0...). A label line is ``class cx cy w h`` normalised to [0, 1];
a longer polygon line (``class x1 y1 x2 y2 ...``) is turned into its bounding box, as
Ultralytics does. The label of ``.../images/.../a.jpg`` is ``.../labels/.../a.txt``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.data.dataset import Dataset, StoreBuilder
from pipeline.data.records import LoadWarnings
from pipeline.errors import GhostboxError

IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif",
                            ".tiff", ".webp", ".pfm", ".heic"})


def load_yolo(data_yaml: str | Path, split: str = "val", *,
              class_names: Sequence[str] | None = None, strict: bool = True,
              name: str | None = None) -> Dataset:
    """Load one split of an Ultralytics dataset.

    ``class_names`` picks and orders classes by name (others counted as
    ``ignored_category``); a class id beyond ``names`` raises when ``strict``. Image sizes
    are read from the image headers when a record is built.
    """
    data_yaml = Path(data_yaml)
    config = _read_yaml(data_yaml)
    names = _names(config, data_yaml)
    root = _root(config, data_yaml)
    if class_names is None:
        chosen = list(names)
        remap = {k: k for k in range(len(names))}
    else:
        chosen, remap = _subset(names, class_names, data_yaml)

    warnings = LoadWarnings()
    builder = StoreBuilder(root, normalized=True)
    for image_path in _split_images(config, split, root, data_yaml):
        try:
            file_name = str(image_path.relative_to(root))
        except ValueError:
            file_name = str(image_path)  # outside the root: keep it absolute
        image_index = builder.add_image(file_name, builder.num_images + 1)
        label_path = label_path_for(image_path)
        try:
            text = label_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            warnings.add("label_file_missing", str(label_path))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise GhostboxError(f"{label_path}: cannot read label file ({exc})") from None
        _add_lines(builder, image_index, text, label_path, len(names), remap, strict, warnings)

    return Dataset(
        builder.build(warnings),
        name=name or f"{root.name}-{split}",
        format="yolo",
        source=data_yaml,
        class_names=chosen,
        categories=[{"id": k + 1, "name": n} for k, n in enumerate(chosen)],
        warnings=warnings,
    )


def label_path_for(image_path: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``."""
    parts = list(image_path.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _read_yaml(data_yaml: Path) -> dict[str, Any]:
    try:
        text = data_yaml.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GhostboxError(f"{data_yaml}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GhostboxError(f"{data_yaml}: cannot read ({exc})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise GhostboxError(f"{data_yaml}: invalid YAML{where}: {problem}") from None
    if not isinstance(config, dict):
        raise GhostboxError(f"{data_yaml}: expected a mapping with 'names' and splits, got "
                            f"{type(config).__name__}")
    return config


def _names(config: dict[str, Any], data_yaml: Path) -> list[str]:
    names = config.get("names")
    nc = config.get("nc")
    if names is None:
        if isinstance(nc, int) and not isinstance(nc, bool) and nc > 0:
            return [f"class_{k}" for k in range(nc)]
        raise GhostboxError(f"{data_yaml}: field 'names' is missing")
    if isinstance(names, dict):
        keys = sorted(names, key=lambda key: (not isinstance(key, int), str(key)))
        if keys != list(range(len(names))):
            raise GhostboxError(f"{data_yaml}: field 'names' has keys {list(names)}, expected "
                                f"0..{len(names) - 1}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise GhostboxError(f"{data_yaml}: field 'names' is {names!r}, expected a list or a "
                            "dict of class names")
    if nc is not None and nc != len(names):
        raise GhostboxError(f"{data_yaml}: field 'nc' is {nc!r} but 'names' has {len(names)} "
                            "entries")
    return names


def _root(config: dict[str, Any], data_yaml: Path) -> Path:
    path = config.get("path")
    if path is None:
        return data_yaml.parent.resolve()
    if not isinstance(path, str):
        raise GhostboxError(f"{data_yaml}: field 'path' is {path!r}, expected a folder")
    root = Path(path).expanduser()
    if not root.is_absolute():
        root = data_yaml.parent / root
    root = root.resolve()
    if not root.is_dir():
        raise GhostboxError(f"{data_yaml}: field 'path' is {path!r}: folder {root} not found")
    return root


def _subset(names: list[str], class_names: Sequence[str],
            data_yaml: Path) -> tuple[list[str], dict[int, int]]:
    if isinstance(class_names, str):
        raise GhostboxError(f"class_names: expected a list of names, got the string {class_names!r}")
    remap: dict[int, int] = {}
    for new_id, class_name in enumerate(class_names):
        if class_name not in names:
            raise GhostboxError(f"class_names: {class_name!r} is not in 'names' of {data_yaml}")
        remap[names.index(class_name)] = new_id
    return list(class_names), remap


def _split_images(config: dict[str, Any], split: str, root: Path,
                  data_yaml: Path) -> list[Path]:
    entry = config.get(split)
    if entry is None:
        splits = [k for k in ("train", "val", "test") if config.get(k) is not None]
        raise GhostboxError(f"{data_yaml}: no {split!r} entry (has {', '.join(splits) or 'none'})")
    entries = entry if isinstance(entry, list) else [entry]
    images: set[Path] = set()
    for item in entries:
        if not isinstance(item, str):
            raise GhostboxError(f"{data_yaml}: field {split!r} holds {item!r}, expected a path")
        path = Path(item).expanduser()
        path = path if path.is_absolute() else root / path
        if path.is_dir():
            images.update(p for p in path.rglob("*")
                          if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file() and path.suffix.lower() == ".txt":
            images.update(_list_file_images(path))
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            images.add(path)
        else:
            raise GhostboxError(f"{data_yaml}: field {split!r} is {item!r}: {path} not found "
                                "(or not a folder, .txt list or image)")
    return sorted(images)


def _list_file_images(list_file: Path) -> list[Path]:
    images = []
    base = list_file.parent
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GhostboxError(f"{list_file}: cannot read image list ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry)
        path = path if path.is_absolute() else base / path  # relative to the list file
        path = Path(os.path.normpath(path))
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue  # Ultralytics skips non-image entries the same way
        if not path.is_file():
            raise GhostboxError(f"{list_file}:{lineno}: image {entry!r} not found")
        images.append(path)
    return images


def _add_lines(builder: StoreBuilder, image_index: int, text: str, label_path: Path,
               num_names: int, remap: dict[int, int], strict: bool,
               warnings: LoadWarnings) -> None:
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_path}:{lineno}"
        polygon = len(fields) >= 7 and len(fields) % 2 == 1
        if len(fields) != 5 and not polygon:
            raise GhostboxError(f"{where}: expected 'class cx cy w h', got {len(fields)} "
                                f"values: {line.strip()!r}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise GhostboxError(f"{where}: non-numeric value in {line.strip()!r}") from None
        if not all(math.isfinite(v) for v in values) or values[0] != int(values[0]) \
                or values[0] < 0:
            raise GhostboxError(f"{where}: invalid value in {line.strip()!r}")
        class_id = int(values[0])
        if class_id >= num_names:
            if strict:
                raise GhostboxError(f"{where}: class {class_id} is beyond the {num_names} "
                                    "names of the dataset")
            warnings.add("unknown_category", f"class {class_id} at {where}")
            continue
        if class_id not in remap:
            warnings.add("ignored_category", str(class_id))
            continue
        if polygon:
            xs, ys = values[1::2], values[2::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
            warnings.add("segment_to_box", where)
        else:
            cx, cy, w, h = values[1:]
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        builder.add_box(image_index, x1, y1, x2, y2, remap[class_id])
