"""The one batching frame loop on the detector side: frames in, each frame with its `Detections` out.

Evaluation, ID and outlier collection, hard-negative mining and `ghostbox detect` all read frames
one at a time (a dataset's images, a video's frames, pool images), run the detector a batch at a
time and then handle each frame with its boxes. `detect_frames` is that loop, written once: it
reads only as far as the current batch (one batch of images in memory), calls the detector once
per batch, yields every item with its detections in input order and flushes the last, partial
batch. To stop at a limit, cut the input (`itertools.islice`): nothing past it is read or detected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from pipeline.detections import Detections

if TYPE_CHECKING:  # the loop only calls it: importing it (torch) is the caller's cost
    from pipeline.detect.detector import Detector

T = TypeVar("T")


def detect_frames(
    detector: Detector, items: Iterable[T], *, image: Callable[[T], np.ndarray], conf: float | None = None,
    crops: bool = False, advance: Callable[[int], None] | None = None,
) -> Iterator[tuple[T, Detections]]:
    """(item, its detections) for every item, in order, detected `detector.batch` at a time.

    `image(item)`: the item's BGR frame, called as the item is read. `conf`: None = the detector's
    configured conf. `crops`: boxes keep their crops. `advance(n)`: called once per batch of `n`
    items, after the caller has handled the batch's last item (when the loop is resumed past it).
    """
    size = max(1, int(detector.batch))
    source = iter(items)
    # islice on the shared iterator reads at most `size` items, never one beyond the batch
    while batch := [(item, image(item)) for item in islice(source, size)]:
        frames = [frame for _, frame in batch]
        results = detector.detect(frames, conf=conf, crops=crops)
        for (item, _), dets in zip(batch, results, strict=True):
            yield item, dets
        if advance is not None:
            advance(len(batch))
