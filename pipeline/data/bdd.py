"""BDD-100K detection labels: det_20 and the 2018 ``bdd100k_labels_images_*.json``.

Both are a JSON list of frames ``{"name", "attributes", "labels": [...]}``; a label has
``category``, ``attributes`` (occluded, truncated, trafficLightColor, crowd) and a
``box2d`` {x1, y1, x2, y2} in pixels. The 2018 files name three classes differently
(person, bike, motor) and also hold lane and drivable-area polygons, which are skipped.
The official scalabel tools need pydantic<2, so the JSON is parsed here.

Boxes are taken as continuous xyxy, as written. (Scalabel's own COCO export treats x2/y2
as inclusive pixels and adds 1 to width and height; we do not.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.data.dataset import Dataset, StoreBuilder
from pipeline.data.jsonio import iter_json_array
from pipeline.data.records import LoadWarnings
from pipeline.errors import GhostboxError

BDD10: tuple[str, ...] = (
    "pedestrian", "rider", "car", "truck", "bus",
    "train", "motorcycle", "bicycle", "traffic light", "traffic sign",
)
# Box classes that det_20 files contain but the 10-class benchmark leaves out.
BDD_EXTRA_CLASSES: tuple[str, ...] = ("other person", "other vehicle", "trailer")
BDD_2018_ALIASES: dict[str, str] = {"person": "pedestrian", "bike": "bicycle",
                                    "motor": "motorcycle"}
_BDD_BOX_CLASSES = frozenset(BDD10 + BDD_EXTRA_CLASSES)
_NON_BOX_CATEGORIES = frozenset({"lane", "drivable area"})
_NON_BOX_GEOMETRY = ("poly2d", "box3d", "poly3d", "graph")
_COORDS = ("x1", "y1", "x2", "y2")
_NUMBER_TYPES = frozenset({int, float})


def load_bdd(labels_json: str | Path, images_dir: str | Path | None = None, *,
             class_names: Sequence[str] = BDD10, strict: bool = True,
             image_size: tuple[int, int] | None = None, name: str | None = None) -> Dataset:
    """Load a BDD-100K label file (det_20 or 2018 format).

    ``images_dir`` defaults to BDD's layout (``images/100k/<split>`` for
    ``labels/det_20/det_<split>.json``), else ``images/`` beside the JSON.
    ``class_names`` picks and orders the classes (class id = position); labels of other
    BDD classes are counted as ``ignored_category``, unknown names raise when ``strict``.
    ``image_size`` (width, height) skips reading sizes from the images.
    """
    labels_json = Path(labels_json)
    if image_size is not None and not (
            len(image_size) == 2 and all(type(v) is int and v > 0 for v in image_size)):
        raise GhostboxError(f"image_size: {image_size!r}, expected (width, height) in pixels")
    class_index = _class_index(class_names)
    warnings = LoadWarnings()
    image_dir = _pick_image_dir(labels_json, images_dir, warnings)
    # crowd has its own array; keeping it as an attribute too would only cost memory
    builder = StoreBuilder(image_dir, image_size=image_size,
                           skip_box_attributes=frozenset({"crowd"}))
    for frame_index, frame in enumerate(iter_json_array(labels_json)):
        if not isinstance(frame, dict):
            raise GhostboxError(f"{labels_json}: frame {frame_index}: expected an object, "
                                f"got {type(frame).__name__}")
        file_name = frame.get("name")
        if not isinstance(file_name, str) or not file_name:
            raise GhostboxError(f"{labels_json}: frame {frame_index}: field 'name' is "
                                f"{'missing' if file_name is None else repr(file_name)}")
        frame_attributes = frame.get("attributes")
        image_index = builder.add_image(
            file_name, frame_index + 1,
            attributes=frame_attributes if isinstance(frame_attributes, dict) else None)
        labels = frame.get("labels")
        if labels is None:
            continue  # det_20 leaves `labels` out on frames without objects
        if not isinstance(labels, list):
            raise GhostboxError(f"{labels_json}: frame {file_name!r}: field 'labels' is a "
                                f"{type(labels).__name__}, expected a list")
        for label_index, label in enumerate(labels):
            _add_label(builder, image_index, label, label_index, file_name, labels_json,
                       class_index, strict, warnings)
    return Dataset(
        builder.build(warnings),
        name=name or _default_name(labels_json),
        format="bdd",
        source=labels_json,
        class_names=tuple(class_index),
        categories=[{"id": k + 1, "name": n} for k, n in enumerate(class_index)],
        warnings=warnings,
    )


def default_bdd_image_dir(labels_json: Path) -> Path:
    """Where BDD keeps the images of a label file, or ``images/`` beside it."""
    resolved = labels_json.resolve()
    parts = resolved.parts
    det20 = re.fullmatch(r"det_(\w+)", resolved.stem)
    if det20 and len(parts) >= 4 and parts[-3:-1] == ("labels", "det_20"):
        return resolved.parents[2] / "images" / "100k" / det20.group(1)
    old = re.fullmatch(r"bdd100k_labels_images_(\w+)", resolved.stem)
    if old and len(parts) >= 3 and parts[-2] == "labels":
        return resolved.parents[1] / "images" / "100k" / old.group(1)
    return labels_json.parent / "images"


def _pick_image_dir(labels_json: Path, images_dir: str | Path | None,
                    warnings: LoadWarnings) -> Path:
    image_dir = Path(images_dir) if images_dir is not None else default_bdd_image_dir(labels_json)
    if not image_dir.is_dir():
        warnings.add("image_dir_missing", str(image_dir))
    return image_dir


def _default_name(labels_json: Path) -> str:
    # Our synthetic worlds keep DIR/labels.json: the folder says which world it is.
    return labels_json.parent.name if labels_json.stem == "labels" else labels_json.stem


def _class_index(class_names: Sequence[str]) -> dict[str, int]:
    if isinstance(class_names, str):
        raise GhostboxError(f"class_names: expected a list of names, got the string {class_names!r}")
    index: dict[str, int] = {}
    for name in class_names:
        if name not in _BDD_BOX_CLASSES:
            hint = BDD_2018_ALIASES.get(name)
            tip = f" (the det_20 name is {hint!r})" if hint else ""
            raise GhostboxError(f"class_names: {name!r} is not a BDD-100K box class{tip}")
        if name in index:
            raise GhostboxError(f"class_names: {name!r} is listed twice")
        index[name] = len(index)
    if not index:
        raise GhostboxError("class_names: empty")
    return index


def _add_label(builder: StoreBuilder, image_index: int, label: Any, label_index: int,
               file_name: str, labels_json: Path, class_index: dict[str, int], strict: bool,
               warnings: LoadWarnings) -> None:
    where = f"{labels_json}: frame {file_name!r}"
    if not isinstance(label, dict):
        raise GhostboxError(f"{where}: label {label_index} is a {type(label).__name__}, "
                            "expected an object")
    label_id = label.get("id", f"#{label_index}")
    where = f"{where} label {label_id}"
    category = label.get("category")
    box = label.get("box2d")
    if box is None:
        if category in _NON_BOX_CATEGORIES or any(k in label for k in _NON_BOX_GEOMETRY):
            warnings.add("non_box_label", str(category))
            return
        if strict:
            raise GhostboxError(f"{where}: no 'box2d' for category {category!r}")
        warnings.add("missing_box", f"{file_name} label {label_id}")
        return
    if not isinstance(category, str):
        raise GhostboxError(f"{where}: field 'category' is {category!r}, expected a name")
    x1, y1, x2, y2 = _box_coords(box, where)
    canonical = BDD_2018_ALIASES.get(category, category)
    class_id = class_index.get(canonical)
    if class_id is None:
        if canonical in _BDD_BOX_CLASSES:
            warnings.add("ignored_category", canonical)
            return
        if strict:
            raise GhostboxError(f"{where}: unknown category {category!r} (not a BDD-100K "
                                "class; load with strict off to skip such labels)")
        warnings.add("unknown_category", f"{category!r} in {file_name}")
        return
    attributes = label.get("attributes")
    crowd = False
    if isinstance(attributes, dict):
        crowd_value = attributes.get("crowd")
        crowd = crowd_value is True or crowd_value == 1
    else:
        attributes = None
    builder.add_box(image_index, x1, y1, x2, y2, class_id, crowd, attributes)


def _box_coords(box: Any, where: str) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = box["x1"], box["y1"], box["x2"], box["y2"]
        # The common case in one test; bool is excluded because type(True) is bool.
        if (type(x1) in _NUMBER_TYPES and type(y1) in _NUMBER_TYPES and type(x2) in
                _NUMBER_TYPES and type(y2) in _NUMBER_TYPES and math.isfinite(x1 + y1 + x2 + y2)):
            return float(x1), float(y1), float(x2), float(y2)
    except (KeyError, TypeError):
        pass
    if not isinstance(box, dict):
        raise GhostboxError(f"{where}: field 'box2d' is {box!r}, expected {{x1, y1, x2, y2}}")
    for key in _COORDS:
        value: Any = box.get(key)  # None when missing; the type test comes first (mypy cannot narrow on it)
        if type(value) not in _NUMBER_TYPES or not math.isfinite(value):
            raise GhostboxError(f"{where}: box2d field {key!r} is {value!r}, expected a number")
    raise GhostboxError(f"{where}: box2d is {box!r}")  # not reached: one check above fails
