"""`detect_frames`: batches of `detector.batch`, results in input order, the tail flushed, progress per
batch, and nothing read or detected past where the caller stops."""

from __future__ import annotations

from itertools import islice
from typing import Any

import numpy as np
import pytest

from pipeline.detect.frame_loop import detect_frames
from pipeline.detections import Detections


class _Detector:
    """Tags each frame's (empty) result with the frame's pixel value; records every call."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.calls: list[dict[str, Any]] = []

    def detect(self, frames, conf=None, **kwargs):
        self.calls.append({"n": len(frames), "conf": conf, **kwargs})
        return [Detections.empty(1, 2, frame=int(f[0, 0, 0])) for f in frames]


def _frame(i: int) -> np.ndarray:
    return np.full((4, 4, 3), i, np.uint8)


@pytest.mark.parametrize(("items", "batch", "sizes"), [(7, 3, [3, 3, 1]), (6, 3, [3, 3]), (2, 8, [2]), (0, 4, [])])
def test_batches_keep_order_and_flush_the_tail(items: int, batch: int, sizes: list[int]) -> None:
    detector = _Detector(batch)
    advanced: list[int] = []
    out = list(detect_frames(detector, range(items), image=_frame, conf=0.3, advance=advanced.append))
    assert [item for item, _ in out] == list(range(items))
    assert [dets.frame for _, dets in out] == list(range(items))  # each item with its own result
    assert [c["n"] for c in detector.calls] == sizes and advanced == sizes
    assert all(c["conf"] == 0.3 for c in detector.calls)


def test_crops_are_passed_on() -> None:
    detector = _Detector(2)
    list(detect_frames(detector, range(3), image=_frame))
    list(detect_frames(detector, range(3), image=_frame, crops=True))
    assert [c.get("crops") for c in detector.calls] == [False, False, True, True]
    assert all(c["conf"] is None for c in detector.calls)  # None: the detector's own conf


def test_progress_comes_after_the_batch_is_handled() -> None:
    detector = _Detector(2)
    events: list[str] = []
    for item, _ in detect_frames(detector, range(3), image=_frame, advance=lambda n: events.append(f"+{n}")):
        events.append(str(item))
    assert events == ["0", "1", "+2", "2", "+1"]


def test_a_limit_on_the_input_reads_and_detects_nothing_past_it() -> None:
    detector = _Detector(4)
    read: list[int] = []

    def image(i: int) -> np.ndarray:
        read.append(i)
        return _frame(i)

    out = list(detect_frames(detector, islice(iter(range(100)), 6), image=image))
    assert [i for i, _ in out] == list(range(6)) and read == list(range(6))
    assert [c["n"] for c in detector.calls] == [4, 2]


def test_stopping_early_detects_no_further_batch() -> None:
    detector = _Detector(3)
    read: list[int] = []

    def image(i: int) -> np.ndarray:
        read.append(i)
        return _frame(i)

    for item, _ in detect_frames(detector, range(100), image=image):
        if item == 4:
            break
    assert [c["n"] for c in detector.calls] == [3, 3] and read == list(range(6))
