"""Label storage stays compact and records are not retained (20k-frame BDD file)."""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import BDD10, load_bdd

N_FRAMES = 20_000
BOXES_PER_FRAME = 3
# Budget per box: 16 B coordinates + 4 B class + 2 B crowd/valid + 3 attribute codes (12 B)
# = 34 B; per image: name (~14 B) + 5 int64/int32 entries + 3 attribute codes = ~60 B.
# The bound allows about twice that. A json.load of the same file holds ~1 kB per label
# (dicts for the label, box2d and attributes, floats, strings): ~60 MB here.
BYTES_PER_BOX = 64
BYTES_PER_IMAGE = 128
# Loading holds the file's text (read as bytes, decoded to str: ~2x its size) plus the
# growing buffers; not the whole parsed tree.
PEAK_TEXT_FACTOR = 2.5


@pytest.fixture(scope="module")
def big_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 600, size=(N_FRAMES, BOXES_PER_FRAME, 4)).round(3)
    frames = []
    for k in range(N_FRAMES):
        labels = []
        for j in range(BOXES_PER_FRAME if k % 10 else 0):  # every 10th frame is empty
            x1, y1, w, h = coords[k, j].tolist()
            labels.append({"id": str(k * 10 + j), "category": BDD10[(k + j) % 10],
                           "attributes": {"occluded": bool(j % 2), "truncated": False,
                                          "trafficLightColor": "none"},
                           "box2d": {"x1": x1, "y1": y1, "x2": x1 + w + 1, "y2": y1 + h + 1}})
        frame = {"name": f"{k:08x}-{k:08x}.jpg",
                 "attributes": {"weather": "clear", "scene": "highway", "timeofday": "night"}}
        if labels:
            frame["labels"] = labels
        frames.append(frame)
    path = tmp_path_factory.mktemp("big") / "det_val.json"
    path.write_text(json.dumps(frames))
    return path


def test_label_storage_is_compact(big_labels: Path) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        dataset = load_bdd(big_labels, image_size=(1280, 720))
        gc.collect()
        loaded, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    n_boxes = dataset.num_boxes()
    assert len(dataset) == N_FRAMES
    assert n_boxes == N_FRAMES * 9 // 10 * BOXES_PER_FRAME
    budget = BYTES_PER_BOX * n_boxes + BYTES_PER_IMAGE * N_FRAMES
    assert dataset.label_nbytes() < budget
    # Everything the dataset keeps alive, not just the arrays it reports.
    assert loaded - baseline < budget, f"{(loaded - baseline) / 1e6:.1f} MB retained"
    text_size = big_labels.stat().st_size
    assert peak - baseline < PEAK_TEXT_FACTOR * text_size + budget, (
        f"peak {(peak - baseline) / 1e6:.1f} MB for a {text_size / 1e6:.1f} MB file")
    record = dataset[N_FRAMES - 1]
    assert record.file_name == f"{N_FRAMES - 1:08x}-{N_FRAMES - 1:08x}.jpg"
    assert record.box_attributes["occluded"].tolist() == [False, True, False]


def test_iterating_retains_no_records(big_labels: Path) -> None:
    dataset = load_bdd(big_labels, image_size=(1280, 720))
    first = weakref.ref(next(iter(dataset)))
    gc.collect()
    assert first() is None
    # One pass first so that one-off caches reach their working size.
    assert sum(len(record) for record in dataset) == dataset.num_boxes()
    gc.collect()
    # Allocated Python object blocks, without tracemalloc's cost: a kept record would
    # hold a dozen (the record, its dicts, its array headers), 20k records ~240k blocks.
    before = sys.getallocatedblocks()
    boxes_seen = 0
    for record in dataset:
        boxes_seen += len(record)
    del record
    gc.collect()
    after = sys.getallocatedblocks()
    assert boxes_seen == dataset.num_boxes()
    assert after - before < 1000, f"iteration kept {after - before} blocks"
