"""File formats of a world: BDD-100K det_20 frames, COCO instances, JSON lines.

The YOLO export is written by `pipeline.data.convert` from the det_20 files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import json_files
from pipeline.synth.id_objects import ID_CLASSES
from pipeline.synth.kinds import OOD_KINDS
from pipeline.synth.scene import SceneObject

# Category ids shared by every COCO file of a world: ID classes first, then the OoD table.
CATEGORY_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(list(ID_CLASSES) + [k.name for k in OOD_KINDS])}


@dataclass
class RenderedImage:
    """What a rendered image holds, as the writers need it."""

    file_name: str
    width: int
    height: int
    timeofday: str
    weather: str
    objects: list[SceneObject]


def write_json(path: Path, data: Any) -> None:
    """Sorted keys and fixed separators: the same data gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    json_files.write_json(path, data, indent=1, sort_keys=True)


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


# -- BDD-100K det_20 -------------------------------------------------------------------------
def bdd_frames(records: Sequence[RenderedImage]) -> list[dict]:
    """det_20 frames; frames without objects carry no `labels` key, as in BDD-100K."""
    frames = []
    label_id = 0
    for rec in records:
        frame: dict[str, Any] = {
            "name": rec.file_name,
            "attributes": {"weather": rec.weather, "scene": "city street", "timeofday": rec.timeofday},
        }
        labels = []
        for obj in rec.objects:
            attributes: dict[str, Any] = {"occluded": obj.occluded, "truncated": obj.truncated}
            if obj.name == "traffic light":
                attributes["trafficLightColor"] = obj.attributes["trafficLightColor"]
            x1, y1, x2, y2 = obj.box
            labels.append({"id": str(label_id), "category": obj.name, "attributes": attributes,
                           "box2d": {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2)}})
            label_id += 1
        if labels:
            frame["labels"] = labels
        frames.append(frame)
    return frames


# -- COCO instances --------------------------------------------------------------------------
def coco_categories(names: Sequence[str]) -> list[dict]:
    """Category entries; OoD kinds carry `ood`, `tier`, `group` and the class they resemble."""
    kinds = {k.name: k for k in OOD_KINDS}
    out = []
    for name in names:
        if name in kinds:
            k = kinds[name]
            out.append({"id": CATEGORY_IDS[name], "name": name, "supercategory": f"{k.tier}-ood", "ood": True,
                        "tier": k.tier, "group": k.group, "resembles": k.resembles})
        else:
            out.append({"id": CATEGORY_IDS[name], "name": name, "supercategory": "street", "ood": False})
    return out


def coco_instances(records: Sequence[RenderedImage], category_names: Sequence[str],
                   description: str, keep: set[str] | None = None) -> dict:
    """COCO instances for the records; `keep` limits which object names become annotations."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, rec in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": rec.file_name, "width": rec.width, "height": rec.height})
        for obj in rec.objects:
            if keep is not None and obj.name not in keep:
                continue
            x1, y1, x2, y2 = obj.box
            w, h = x2 - x1, y2 - y1
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[obj.name],
                "bbox": [float(x1), float(y1), float(w), float(h)], "area": float(w * h), "iscrowd": 0,
                "occluded": obj.occluded, "truncated": obj.truncated,
            })
    return {"info": {"description": description}, "licenses": [], "images": images,
            "annotations": annotations, "categories": coco_categories(category_names)}
