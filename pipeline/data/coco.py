"""COCO instance JSON (the VOS OoD sets over COCO and OpenImages use it), both ways.

``load_coco`` reads ``images``, ``annotations`` (bbox x, y, w, h in pixels) and
``categories``; category entries keep every key they carry (``ood``, ``tier``,
``group`` ...) in ``Dataset.categories``. ``to_coco_dict`` writes any dataset back as a
COCO ground-truth dict for pycocotools / faster-coco-eval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.data.dataset import Dataset, StoreBuilder
from pipeline.data.jsonio import read_json
from pipeline.data.records import LoadWarnings
from pipeline.errors import GhostboxError


def load_coco(instances_json: str | Path, images_dir: str | Path | None = None, *,
              class_names: Sequence[str] | None = None, strict: bool = True,
              name: str | None = None) -> Dataset:
    """Load a COCO instances file.

    ``images_dir`` defaults to ``images/`` beside the JSON, then COCO's own layout
    (``annotations/instances_val2017*.json`` -> ``val2017/``). Class ids follow the order of
    ``categories`` in the file, or of ``class_names`` when given (other categories are
    counted as ``ignored_category``). The whole file is parsed at once: COCO puts all
    annotations in one list, so it cannot be streamed per image like BDD.
    """
    instances_json = Path(instances_json)
    content = read_json(instances_json)
    if not isinstance(content, dict):
        raise GhostboxError(f"{instances_json}: expected a COCO object with 'images', got a "
                            f"JSON {type(content).__name__}")
    warnings = LoadWarnings()
    image_dir = _pick_image_dir(instances_json, images_dir, warnings)
    categories = _categories(content, instances_json)
    chosen, class_of_category = _class_map(categories, class_names, instances_json)

    builder = StoreBuilder(image_dir)
    image_index_of: dict[int, int] = {}
    for k, image in enumerate(_list_field(content, "images", instances_json)):
        where = f"{instances_json}: images[{k}]"
        if not isinstance(image, dict):
            raise GhostboxError(f"{where}: expected an object, got {type(image).__name__}")
        image_id = _int_field(image, "id", where)
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise GhostboxError(f"{where} (id {image_id}): field 'file_name' is {file_name!r}")
        if image_id in image_index_of:
            raise GhostboxError(f"{where}: image id {image_id} is listed twice")
        width = _optional_size(image, "width", where)
        height = _optional_size(image, "height", where)
        image_index_of[image_id] = builder.add_image(file_name, image_id, width, height)

    if "annotations" not in content:
        warnings.add("no_annotations_key", str(instances_json))
    annotations = content.get("annotations") or []
    known_category_ids = {c["id"] for c in categories}
    if not isinstance(annotations, list):
        raise GhostboxError(f"{instances_json}: field 'annotations' is a "
                            f"{type(annotations).__name__}, expected a list")
    for k, annotation in enumerate(annotations):
        _add_annotation(builder, annotation, k, instances_json, image_index_of,
                        known_category_ids, class_of_category, strict, warnings)

    return Dataset(
        builder.build(warnings),
        # DIR/instances.json (our synthetic OoD sets): the folder names the set.
        name=name or (instances_json.parent.name if instances_json.stem == "instances"
                      else instances_json.stem),
        format="coco",
        source=instances_json,
        class_names=[c["name"] for c in chosen],
        categories=chosen,
        warnings=warnings,
    )


def to_coco_dict(dataset: Dataset) -> dict[str, Any]:
    """The dataset as a COCO ground-truth dict (images, annotations, categories).

    Image ids are the records' ``image_id``; category ids are ``dataset.categories[k]["id"]``
    for class id k, so detections must be written with the same mapping. Boxes are
    written as x, y, w, h with ``area`` = w * h and ``iscrowd`` from the crowd flag.
    Image sizes not in the labels are read from the image headers.
    """
    category_ids = [int(c["id"]) for c in dataset.categories]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for record in dataset:
        image: dict[str, Any] = {"id": record.image_id, "file_name": record.file_name}
        if record.width is not None and record.height is not None:
            image["width"], image["height"] = record.width, record.height
        images.append(image)
        for box, class_id, crowd in zip(record.boxes_xyxy.tolist(), record.class_ids.tolist(),
                                        record.crowd.tolist()):
            width, height = box[2] - box[0], box[3] - box[1]
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": record.image_id,
                "category_id": category_ids[class_id],
                "bbox": [box[0], box[1], width, height],
                "area": width * height,
                "iscrowd": int(crowd),
            })
    return {
        "info": {"description": f"ghostbox ground truth of {dataset.name}"},
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in dataset.categories],
    }


def _pick_image_dir(instances_json: Path, images_dir: str | Path | None,
                    warnings: LoadWarnings) -> Path:
    if images_dir is not None:
        candidates = [Path(images_dir)]
    else:
        candidates = [instances_json.parent / "images"]
        stem = instances_json.stem
        if stem.startswith("instances_"):
            split = stem[len("instances_"):].split("_")[0]  # instances_val2017_ood -> val2017
            candidates += [instances_json.parent.parent / split, instances_json.parent / split]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    warnings.add("image_dir_missing", str(candidates[0]))
    return candidates[0]


def _list_field(content: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = content.get(key)
    if not isinstance(value, list):
        state = "missing" if value is None else f"a {type(value).__name__}"
        raise GhostboxError(f"{path}: field {key!r} is {state}, expected a list "
                            "(is this a COCO instances file?)")
    return value


def _categories(content: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    categories = []
    seen: set[int] = set()
    for k, category in enumerate(_list_field(content, "categories", path)):
        where = f"{path}: categories[{k}]"
        if not isinstance(category, dict):
            raise GhostboxError(f"{where}: expected an object, got {type(category).__name__}")
        category_id = _int_field(category, "id", where)
        if not isinstance(category.get("name"), str):
            raise GhostboxError(f"{where} (id {category_id}): field 'name' is "
                                f"{category.get('name')!r}")
        if category_id in seen:
            raise GhostboxError(f"{where}: category id {category_id} is listed twice")
        seen.add(category_id)
        categories.append(dict(category))
    return categories


def _class_map(categories: list[dict[str, Any]], class_names: Sequence[str] | None,
               path: Path) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The chosen categories in class-id order, and category id -> class id."""
    if class_names is None:
        return categories, {c["id"]: k for k, c in enumerate(categories)}
    if isinstance(class_names, str):
        raise GhostboxError(f"class_names: expected a list of names, got the string {class_names!r}")
    by_name: dict[str, dict[str, Any]] = {}
    for category in categories:
        if category["name"] in by_name:
            raise GhostboxError(f"{path}: category name {category['name']!r} is used by ids "
                                f"{by_name[category['name']]['id']} and {category['id']}; "
                                "cannot select classes by name")
        by_name[category["name"]] = category
    chosen = []
    for name in class_names:
        if name not in by_name:
            raise GhostboxError(f"class_names: {name!r} is not a category of {path} "
                                f"(has {sorted(by_name)})")
        chosen.append(by_name[name])
    return chosen, {c["id"]: k for k, c in enumerate(chosen)}


def _add_annotation(builder: StoreBuilder, annotation: Any, k: int, path: Path,
                    image_index_of: dict[int, int], known_category_ids: set[int],
                    class_of_category: dict[int, int], strict: bool,
                    warnings: LoadWarnings) -> None:
    where = f"{path}: annotations[{k}]"
    if not isinstance(annotation, dict):
        raise GhostboxError(f"{where}: expected an object, got {type(annotation).__name__}")
    if "id" in annotation:
        where = f"{path}: annotation id {annotation['id']}"
    image_id = _int_field(annotation, "image_id", where)
    category_id = _int_field(annotation, "category_id", where)
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in bbox):
        raise GhostboxError(f"{where}: field 'bbox' is {bbox!r}, expected [x, y, w, h] numbers")
    image_index = image_index_of.get(image_id)
    if image_index is None:
        if strict:
            raise GhostboxError(f"{where}: field 'image_id' is {image_id}, which is not in 'images'")
        warnings.add("unknown_image", f"image_id {image_id}")
        return
    class_id = class_of_category.get(category_id)
    if class_id is None:
        if category_id in known_category_ids:
            warnings.add("ignored_category", str(category_id))
            return
        if strict:
            raise GhostboxError(f"{where}: field 'category_id' is {category_id}, which is not "
                                "in 'categories'")
        warnings.add("unknown_category", f"category_id {category_id}")
        return
    crowd = annotation.get("iscrowd", 0)
    x, y, w, h = (float(v) for v in bbox)
    builder.add_box(image_index, x, y, x + w, y + h, class_id, crowd is True or crowd == 1)


def _int_field(entry: dict[str, Any], key: str, where: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        state = "missing" if value is None else repr(value)
        raise GhostboxError(f"{where}: field {key!r} is {state}, expected an integer")
    return value


def _optional_size(entry: dict[str, Any], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise GhostboxError(f"{where}: field {key!r} is {value!r}, expected a positive integer")
    return value
