"""``P/manifest.json``: how every image of a proxy set was made.

Schema (``format_version`` 1)::

    {"format": "ghostbox-proxies", "format_version": 1, "ghostbox_version": "0.1.0",
     "created": "2025-01-01T00:00:00Z", "seed": 0, "class_names": ["pedestrian", ...],
     "sources": {"id": SPEC, "id_images": N, "id_boxes_sampled": N,
                 "pool": {"spec": S, "kind": "labelled"|"folder", "images": N, "backgrounds": N,
                          "crops": N|null} | null,
                 "flagged": {"folder": DIR, "crops": N} | null,
                 "model": {"path": M, "weights_sha256": H, "imgsz": 320} | null},
     "placement": {"max_iou": 0.05, "max_cover": 0.1, "tries": 50, "min_side": 8, ...},
     "strategies": {NAME: {"parameters": {...}, "requested": N, "written": N,
                           "pasted_regions": N, "gave_up": N}},
     "gave_up": [{"strategy": "paste", "index": 7, "host": "train_00003.jpg", "reason": "..."}],
     "notes": ["..."],
     "images": [{"file": "images/paste_000000.jpg", "label": "labels/paste_000000.txt",
                 "strategy": "paste", "host": "train_00012.jpg" | null,
                 "background": {"kind": "pool", "file": F} | null, "wanted_pastes": 3,
                 "pasted": [{"xyxy": [x1, y1, x2, y2], "source": {...}, "transform": {...} | null,
                             "silhouette": true, "flipped": false}],
                 "id_boxes": 4}]}

``pasted[].xyxy`` are integer pixels of the output image; nothing inside them is labelled.
``source`` names where the pasted pixels came from: ``kind`` ``pool`` (a pool instance:
``file``, ``box``, ``label``), ``pool_random`` (a random rectangle of an unlabelled pool
image, ``box`` null for the whole image), ``flagged`` (an archive crop: ``file``, ``stream``,
``seq``, ``label``, ``conf``, ``score``), ``mined`` (a detection on a pool image: ``file``,
``box``, ``label``, ``conf``) or ``id`` (the ID crop a transform started from). ``transform``
is null or ``{"name": ...}`` with its parameters (and the ``other`` crop of a blend, the
``texture`` of a swap). ``silhouette``: the paste was masked to the object's estimated
outline rather than its whole box. ``gave_up`` lists hosts where no region fitted; an image
index whose hosts all failed has no file. The manifest is written last (through a rename),
so one that exists describes files that exist; images are one JSON object per line.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

import pipeline
from pipeline.errors import GhostboxError

FORMAT = "ghostbox-proxies"
FORMAT_VERSION = 1


class ProxyImage(BaseModel):
    """One line of the manifest's ``images``; ``model_dump()`` is that line."""

    file: str = Field(description="the image, relative to the set")
    label: str = Field(description="its YOLO label file, relative to the set")
    strategy: str = Field(description="the strategy that made it")
    host: str | None = Field(description="the ID image it was pasted into; null for backgrounds")
    background: dict[str, Any] | None = Field(None, description="backgrounds: the pool image used whole")
    wanted_pastes: int = Field(0, description="regions the image was meant to get")
    pasted: list[dict[str, Any]] = Field(default_factory=list, description="the pasted regions, as placed")
    id_boxes: int = Field(description="ID boxes labelled in the image")


class ProxyManifest(BaseModel):
    """The manifest as it is built; ``to_dict()`` adds the format header to ``model_dump()``."""

    seed: int = Field(description="the seed every random choice came from")
    class_names: list[str] = Field(description="the classes of the labels")
    sources: dict[str, Any] = Field(description="the inputs: ID set, pool, flagged archive, model")
    placement: dict[str, Any] = Field(description="the placement rules")
    strategies: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per strategy: parameters and "
                                                  "counts")
    gave_up: list[dict[str, Any]] = Field(default_factory=list, description="hosts where no region fitted")
    notes: list[str] = Field(default_factory=list, description="what the user should know about the set")
    images: list[ProxyImage] = Field(default_factory=list, description="how each image was made")

    def start_strategy(self, name: str, requested: int, parameters: dict[str, Any]) -> None:
        self.strategies[name] = {"parameters": parameters, "requested": requested, "written": 0,
                                 "pasted_regions": 0, "gave_up": 0}

    def add_image(self, image: ProxyImage) -> None:
        self.images.append(image)
        counts = self.strategies[image.strategy]
        counts["written"] += 1
        counts["pasted_regions"] += len(image.pasted)

    def note_gave_up(self, strategy: str, index: int, host: str | None, reason: str) -> None:
        self.gave_up.append({"strategy": strategy, "index": index, "host": host, "reason": reason})
        self.strategies[strategy]["gave_up"] += 1

    def to_dict(self, created: str | None = None) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "ghostbox_version": pipeline.__version__,
            "created": created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **self.model_dump(),
        }

    def write(self, path: Path) -> None:
        """Write through a temporary file and a rename: readers never see half a manifest.

        The header is indented; each image is one line, so a set of 100k images stays a
        file one can page through and diff.
        """
        data = self.to_dict()
        images = data.pop("images")
        head = json.dumps(data, indent=1)
        lines = ",\n".join("  " + json.dumps(image, separators=(",", ":")) for image in images)
        text = head[:-2] + ',\n "images": [' + (f"\n{lines}\n ]" if images else "]") + "\n}\n"
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Load a proxy set's manifest (``P`` or ``P/manifest.json``), checking its format."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GhostboxError(f"{path}: no proxy-set manifest (the set is incomplete, or not a proxy set)") from None
    except json.JSONDecodeError as exc:
        raise GhostboxError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise GhostboxError(f"{path}: not a ghostbox proxy-set manifest (field 'format' is "
                            f"{data.get('format') if isinstance(data, dict) else None!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise GhostboxError(f"{path}: format_version {data.get('format_version')!r}; this ghostbox reads "
                            f"{FORMAT_VERSION}")
    return data
