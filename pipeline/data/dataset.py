"""Compact label storage shared by all loaders, and the ``Dataset`` view over it.

Labels live in a handful of numpy arrays: one concatenated (M, 4) box array with
per-image offsets, file names as one UTF-8 blob with offsets, attributes as integer codes
into small vocabularies. ``ImageRecord`` objects are built only when an image is asked
for, so holding a dataset costs tens of bytes per box, not a Python dict per label.

Image sizes that the labels do not give are read from the image header the first time a
record needs them; boxes of that image are clipped then, and the clip is counted once.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.images import read_image_size
from pipeline.data.records import ImageRecord, LoadWarnings
from pipeline.errors import GhostboxError

# Width/height sentinels: not looked up yet, looked up and unavailable.
_SIZE_UNKNOWN = -1
_SIZE_UNAVAILABLE = -2
_SCALAR_TYPES = frozenset({str, bool, int, float})


class _CodedColumn:
    """Scalar attribute values stored as int32 codes into a vocabulary (-1 = absent)."""

    def __init__(self) -> None:
        self.codes = array("i")
        # One lookup per type: True, 1 and 1.0 hash alike but are different values.
        self._lookup: dict[type, dict[Any, int]] = {}
        self.values: list[Any] = []

    def set(self, row: int, value: Any) -> None:
        lookup = self._lookup.get(type(value))
        if lookup is None:
            lookup = self._lookup[type(value)] = {}
        code = lookup.get(value)
        if code is None:
            code = lookup[value] = len(self.values)
            self.values.append(value)
        missing = row - len(self.codes)
        if missing > 0:  # rows without this attribute since its last value
            self.codes.extend(array("i", [-1]) * missing)
        self.codes.append(code)

    def freeze(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        missing = rows - len(self.codes)
        if missing > 0:
            self.codes.extend(array("i", [-1]) * missing)
        vocab = np.empty(len(self.values) + 1, dtype=object)
        vocab[: len(self.values)] = self.values  # last slot stays None: code -1 decodes to it
        return np.frombuffer(self.codes, dtype=np.int32).copy(), vocab


class _ColumnsBuilder:
    def __init__(self, skip: frozenset[str] = frozenset()) -> None:
        self.columns: dict[str, _CodedColumn] = {}
        self.rows = 0
        self._skip = skip

    def append(self, attributes: Mapping[str, Any] | None) -> None:
        if attributes:
            for key, value in attributes.items():
                if type(value) not in _SCALAR_TYPES or key in self._skip:
                    continue  # lists and objects (polygons, nested dicts) are not attributes
                column = self.columns.get(key)
                if column is None:
                    column = self.columns[key] = _CodedColumn()
                column.set(self.rows, value)
        self.rows += 1

    def freeze(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {key: column.freeze(self.rows) for key, column in self.columns.items()}


@dataclass
class LabelStore:
    """All labels of one label file in flat arrays (see module docstring)."""

    image_dir: Path
    names_blob: bytes
    name_offsets: np.ndarray  # (N+1,) int64
    image_ids: np.ndarray  # (N,) int64
    widths: np.ndarray  # (N,) int32, or a sentinel
    heights: np.ndarray  # (N,) int32
    box_offsets: np.ndarray  # (N+1,) int64
    boxes: np.ndarray  # (M, 4) float32, xyxy pixels, or normalised when `normalized`
    class_ids: np.ndarray  # (M,) int32
    crowd: np.ndarray  # (M,) bool
    valid: np.ndarray  # (M,) bool: False once clipping left no area
    normalized: bool = False
    image_columns: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    box_columns: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def file_name(self, i: int) -> str:
        return self.names_blob[self.name_offsets[i] : self.name_offsets[i + 1]].decode("utf-8")

    def nbytes(self) -> int:
        """Bytes held by the arrays (the figure the memory test bounds)."""
        arrays = [self.name_offsets, self.image_ids, self.widths, self.heights,
                  self.box_offsets, self.boxes, self.class_ids, self.crowd, self.valid]
        for codes, vocab in [*self.image_columns.values(), *self.box_columns.values()]:
            arrays += [codes, vocab]
        return len(self.names_blob) + sum(a.nbytes for a in arrays)

    def size(self, i: int, warnings: LoadWarnings) -> tuple[int | None, int | None]:
        """Width and height of image i, read from its header on first use."""
        width = int(self.widths[i])
        if width == _SIZE_UNKNOWN:
            path = self.image_dir / self.file_name(i)
            try:
                width, height = read_image_size(path)
            except GhostboxError as exc:
                if self.normalized:
                    raise GhostboxError(f"{exc}: needed to scale its YOLO labels") from None
                self.widths[i] = self.heights[i] = _SIZE_UNAVAILABLE
                warnings.add("image_size_unknown", str(path))
                return None, None
            self.widths[i], self.heights[i] = width, height
            if not self.normalized:
                self._clip_image(i, width, height, warnings)
        if width < 0:
            return None, None
        return width, int(self.heights[i])

    def _clip_image(self, i: int, width: int, height: int, warnings: LoadWarnings) -> None:
        start, end = int(self.box_offsets[i]), int(self.box_offsets[i + 1])
        if start == end:
            return
        boxes = self.boxes[start:end]
        before = boxes.copy()
        clipped, degenerate = _clip_in_place(
            boxes, self.valid[start:end],
            np.full(end - start, width), np.full(end - start, height),
        )
        for kind, mask in (("box_clipped", clipped), ("box_degenerate", degenerate)):
            for k in np.flatnonzero(mask):
                warnings.add(kind, f"{self.file_name(i)} box {np.round(before[k], 2).tolist()}")


def _clip_in_place(boxes: np.ndarray, valid: np.ndarray, widths: np.ndarray,
                   heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip valid boxes to [0, w] x [0, h]; mark those left without area invalid.

    Returns (clipped and kept, dropped) masks: a box wholly outside the image counts as
    degenerate only.
    """
    limits = np.stack([widths, heights, widths, heights], axis=1).astype(np.float32)
    clipped_boxes = np.clip(boxes, 0.0, limits)
    changed = valid & np.any(clipped_boxes != boxes, axis=1)
    boxes[changed] = clipped_boxes[changed]
    degenerate = valid & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    valid[degenerate] = False
    return changed & ~degenerate, degenerate


class StoreBuilder:
    """Collects labels one image and one box at a time into typed buffers."""

    def __init__(self, image_dir: Path, *, normalized: bool = False,
                 image_size: tuple[int, int] | None = None,
                 skip_box_attributes: frozenset[str] = frozenset()) -> None:
        self.image_dir = image_dir
        self.normalized = normalized
        self.default_size = image_size
        self._names = bytearray()
        self._name_offsets = array("q", [0])
        self._image_ids = array("q")
        self._widths = array("i")
        self._heights = array("i")
        self._boxes = array("f")
        self._box_image = array("i")
        self._class_ids = array("i")
        self._crowd = array("b")
        self._image_columns = _ColumnsBuilder()
        self._box_columns = _ColumnsBuilder(skip_box_attributes)
        self._seen_names: set[str] = set()
        self.duplicate_names: list[str] = []

    @property
    def num_images(self) -> int:
        return len(self._image_ids)

    def add_image(self, file_name: str, image_id: int, width: int | None = None,
                  height: int | None = None,
                  attributes: Mapping[str, Any] | None = None) -> int:
        """Append an image; returns its index for ``add_box``."""
        if width is None or height is None:
            width, height = self.default_size or (_SIZE_UNKNOWN, _SIZE_UNKNOWN)
        if file_name in self._seen_names:
            self.duplicate_names.append(file_name)
        self._seen_names.add(file_name)
        encoded = file_name.encode("utf-8")
        self._names += encoded
        self._name_offsets.append(len(self._names))
        self._image_ids.append(image_id)
        self._widths.append(width)
        self._heights.append(height)
        self._image_columns.append(attributes)
        return len(self._image_ids) - 1

    def add_box(self, image_index: int, x1: float, y1: float, x2: float, y2: float,
                class_id: int, crowd: bool = False,
                attributes: Mapping[str, Any] | None = None) -> None:
        self._boxes.extend((x1, y1, x2, y2))
        self._box_image.append(image_index)
        self._class_ids.append(class_id)
        self._crowd.append(bool(crowd))
        self._box_columns.append(attributes)

    def build(self, warnings: LoadWarnings) -> LabelStore:
        """Sort boxes by image, drop and clip what needs it, and freeze into numpy."""
        self._seen_names.clear()
        for file_name in self.duplicate_names:
            warnings.add("duplicate_file_name", file_name)
        n_images = len(self._image_ids)
        boxes = np.frombuffer(self._boxes, dtype=np.float32).reshape(-1, 4).copy()
        box_image = np.frombuffer(self._box_image, dtype=np.int32)
        class_ids = np.frombuffer(self._class_ids, dtype=np.int32).copy()
        crowd = np.frombuffer(self._crowd, dtype=np.int8).astype(bool)
        box_columns = self._box_columns.freeze()
        widths = np.frombuffer(self._widths, dtype=np.int32).copy()
        heights = np.frombuffer(self._heights, dtype=np.int32).copy()
        names_blob = bytes(self._names)
        name_offsets = np.frombuffer(self._name_offsets, dtype=np.int64).copy()

        def name(i: int) -> str:
            return names_blob[name_offsets[i] : name_offsets[i + 1]].decode("utf-8")

        # COCO lists annotations in any order; a stable sort keeps each image's label order.
        if box_image.size and np.any(np.diff(box_image) < 0):
            order = np.argsort(box_image, kind="stable")
            boxes, class_ids, crowd = boxes[order], class_ids[order], crowd[order]
            box_image = box_image[order]
            box_columns = {k: (codes[order], vocab) for k, (codes, vocab) in box_columns.items()}

        no_area = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        valid = ~no_area
        self._count(warnings, "box_degenerate", no_area, boxes, box_image, name)
        if self.normalized:
            limits_w = np.ones(len(boxes), dtype=np.int32)
            limits_h = limits_w
            known = np.ones(len(boxes), dtype=bool)
        else:
            limits_w, limits_h = widths[box_image], heights[box_image]
            known = limits_w > 0
        if np.any(known):
            sub_boxes, sub_valid = boxes[known], valid[known]
            before = sub_boxes.copy()
            clipped, degenerate = _clip_in_place(sub_boxes, sub_valid, limits_w[known],
                                                 limits_h[known])
            boxes[known], valid[known] = sub_boxes, sub_valid
            self._count(warnings, "box_clipped", clipped, before, box_image[known], name)
            self._count(warnings, "box_degenerate", degenerate, before, box_image[known], name)

        box_offsets = np.zeros(n_images + 1, dtype=np.int64)
        np.cumsum(np.bincount(box_image, minlength=n_images), out=box_offsets[1:])
        return LabelStore(
            image_dir=self.image_dir,
            names_blob=names_blob,
            name_offsets=name_offsets,
            image_ids=np.frombuffer(self._image_ids, dtype=np.int64).copy(),
            widths=widths,
            heights=heights,
            box_offsets=box_offsets,
            boxes=boxes,
            class_ids=class_ids,
            crowd=crowd,
            valid=valid,
            normalized=self.normalized,
            image_columns=self._image_columns.freeze(),
            box_columns=box_columns,
        )

    @staticmethod
    def _count(warnings: LoadWarnings, kind: str, mask: np.ndarray, boxes: np.ndarray,
               box_image: np.ndarray, name: Any) -> None:
        hits = np.flatnonzero(mask)
        for k in hits[:3]:
            warnings.add(kind, f"{name(int(box_image[k]))} box {np.round(boxes[k], 2).tolist()}")
        warnings.add(kind, None, int(hits.size) - min(3, int(hits.size)))


class Dataset:
    """Ground truth of one image set: a lazy sequence of ``ImageRecord``.

    ``class_names[k]`` names class id k; ``categories[k]`` is its metadata as a dict with
    at least ``id`` (the category id to write in COCO output) and ``name``, plus any extra
    keys the source file had (``ood``, ``tier``, ``group`` ...). ``warnings`` tallies what
    the loader fixed or skipped; lazily found clips are added to it while iterating.
    """

    def __init__(self, store: LabelStore, *, name: str, format: str, source: Path,
                 class_names: Sequence[str], categories: Sequence[Mapping[str, Any]],
                 warnings: LoadWarnings, index: np.ndarray | None = None) -> None:
        self.name = name
        self.format = format
        self.source = source
        self.class_names = tuple(class_names)
        self.categories = tuple(dict(c) for c in categories)
        self.warnings = warnings
        self._store = store
        # Store indices of the images in this view; None means all, in file order.
        self._index = index

    @property
    def image_dir(self) -> Path:
        return self._store.image_dir

    def __len__(self) -> int:
        return len(self._store) if self._index is None else int(self._index.shape[0])

    def _store_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {n} images")
        i %= n
        return i if self._index is None else int(self._index[i])

    def __getitem__(self, i: int) -> ImageRecord:
        return self._record(self._store_index(int(i)))

    def __iter__(self) -> Iterator[ImageRecord]:
        for i in range(len(self)):
            yield self._record(i if self._index is None else int(self._index[i]))

    def file_name(self, i: int) -> str:
        """File name of image i without building its record."""
        return self._store.file_name(self._store_index(i))

    def file_names(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self._store.file_name(i if self._index is None else int(self._index[i]))

    def num_boxes(self) -> int:
        """Boxes kept so far (lazily clipped images may still lose degenerate ones)."""
        store = self._store
        if self._index is None:
            return int(store.valid.sum())
        return int(sum(store.valid[store.box_offsets[i] : store.box_offsets[i + 1]].sum()
                       for i in self._index))

    def select(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Dataset:
        """A view on the images at ``indices`` (of this dataset), sharing the label store."""
        chosen = np.asarray(indices, dtype=np.int64).reshape(-1)
        if chosen.size and (chosen.min() < -len(self) or chosen.max() >= len(self)):
            raise IndexError(f"select: index out of range for {len(self)} images")
        chosen %= max(len(self), 1)
        store_index = chosen if self._index is None else self._index[chosen]
        return Dataset(self._store, name=name or self.name, format=self.format,
                       source=self.source, class_names=self.class_names,
                       categories=self.categories, warnings=self.warnings.copy(),
                       index=store_index)

    def label_nbytes(self) -> int:
        """Bytes held by the label arrays behind this dataset."""
        return self._store.nbytes()

    def summary(self) -> str:
        return (f"{self.name} ({self.format}, {self.source}): {len(self)} images, "
                f"{len(self.class_names)} classes")

    def __repr__(self) -> str:
        return f"Dataset({self.summary()})"

    def _record(self, i: int) -> ImageRecord:
        store = self._store
        width, height = store.size(i, self.warnings)
        start, end = int(store.box_offsets[i]), int(store.box_offsets[i + 1])
        keep = store.valid[start:end]
        boxes = store.boxes[start:end][keep]
        if store.normalized:
            boxes = boxes * np.array([width, height, width, height], dtype=np.float32)
        attributes = {}
        for key, (codes, vocab) in store.image_columns.items():
            if codes[i] >= 0:
                attributes[key] = vocab[codes[i]]
        box_attributes = {key: vocab[codes[start:end][keep]]
                          for key, (codes, vocab) in store.box_columns.items()}
        file_name = store.file_name(i)
        return ImageRecord(
            image_id=int(store.image_ids[i]),
            file_name=file_name,
            path=store.image_dir / file_name,
            width=width,
            height=height,
            boxes_xyxy=boxes,
            class_ids=store.class_ids[start:end][keep].astype(np.int64),
            crowd=store.crowd[start:end][keep],
            attributes=attributes,
            box_attributes=box_attributes,
        )
