"""The ground-truth record of one image and the warning tally every loader keeps.

Warning kinds the loaders use (counted, never printed by the loaders themselves):

- ``unknown_category``: a label whose category is not a class of the format at all
  (a typo, a class id beyond ``names``); an error when the loader is strict.
- ``ignored_category``: a real class that is outside the chosen ``class_names``.
- ``box_clipped``: a box reaching outside the image, clipped to it.
- ``box_degenerate``: a box with no area (x2 <= x1 or y2 <= y1), dropped.
- ``non_box_label``: a label without a box (2018 lanes, drivable areas), skipped.
- ``missing_box``: a box-class label without any geometry; an error when strict.
- ``unknown_image``: a COCO annotation whose image id is not listed; error when strict.
- ``no_annotations_key``: a COCO file without an ``annotations`` list (no boxes at all).
- ``duplicate_file_name``: two entries for the same image file.
- ``image_size_unknown``: no size in the labels and the image header was unreadable,
  so boxes of that image are not clipped.
- ``image_dir_missing``: the image folder does not exist (labels still load).
- ``label_file_missing``: a YOLO image without a label file (background image).
- ``segment_to_box``: a YOLO polygon line turned into its bounding box.
- ``image_excluded`` / ``exclude_not_found``: see ``pipeline.data.spec.exclude_images``.
- ``crowd_skipped`` / ``hardlink_fallback_copy``: see ``pipeline.data.convert``.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# A few examples per kind are enough to find the culprit in the label file.
_EXAMPLES_PER_KIND = 3


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """Ground truth of one image; the pixels are read separately by ``load_image``.

    ``boxes_xyxy`` are pixel coordinates (float32, shape (N, 4)), ``class_ids`` index the
    dataset's ``class_names``, ``crowd`` marks COCO-style iscrowd regions. ``attributes``
    holds image-level attributes (BDD weather/scene/timeofday), ``box_attributes`` per-box
    arrays parallel to the boxes (BDD occluded/truncated/trafficLightColor).
    ``width``/``height`` are None when neither the labels nor the image header gave them.
    """

    image_id: int
    file_name: str
    path: Path
    width: int | None
    height: int | None
    boxes_xyxy: np.ndarray
    class_ids: np.ndarray
    crowd: np.ndarray
    attributes: dict[str, Any] = field(default_factory=dict)
    box_attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes_xyxy.shape[0])


class LoadWarnings:
    """Counts of the things a loader fixed or skipped, with a few examples of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, example: str | None = None, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[kind] += n
        if example is not None:
            kept = self.examples.setdefault(kind, [])
            if len(kept) < _EXAMPLES_PER_KIND:
                kept.append(example)

    def __getitem__(self, kind: str) -> int:
        return self.counts[kind]

    def __bool__(self) -> bool:
        return bool(+self.counts)

    def merge(self, other: LoadWarnings, prefix: str = "") -> None:
        """Add another tally's counts and examples, optionally prefixing its kinds."""
        for kind, n in other.counts.items():
            self.counts[prefix + kind] += n
            kept = self.examples.setdefault(prefix + kind, [])
            for example in other.examples.get(kind, []):
                if len(kept) < _EXAMPLES_PER_KIND:
                    kept.append(example)

    def copy(self) -> LoadWarnings:
        return copy.deepcopy(self)

    def lines(self) -> list[str]:
        """One line per kind, most frequent first, e.g. ``box_clipped: 12 (e.g. a.jpg)``."""
        out = []
        for kind, n in self.counts.most_common():
            examples = self.examples.get(kind)
            suffix = f" (e.g. {'; '.join(examples)})" if examples else ""
            out.append(f"{kind}: {n}{suffix}")
        return out

    def __repr__(self) -> str:
        return f"LoadWarnings({dict(self.counts)})"
