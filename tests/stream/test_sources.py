"""Sources without sockets: reconnect back-off, latest-frame-wins, readers, resize."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pipeline.errors import GhostboxError
from pipeline.sources.capture_reader import Backoff, CaptureReader
from pipeline.sources.frame_buffer import FrameBuffer
from pipeline.sources.frame_reader import Captured
from pipeline.sources.resize import resize
from pipeline.sources.synth_reader import SynthReader, parse_synth_uri


def test_backoff_doubles_up_to_max_and_resets() -> None:
    backoff = Backoff(0.5, 3.0, attempts=5)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.next_delay() is None
    backoff.reset()
    assert backoff.next_delay() == 0.5


class _FakeCapture:
    """A camera that delivers `frames` frames and then drops (read fails)."""

    def __init__(self, frames: int, opens: bool = True) -> None:
        self.frames, self.opens = frames, opens

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opens

    def get(self, prop: int) -> float:
        return 25.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.frames <= 0:
            return False, None
        self.frames -= 1
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self) -> None:
        pass


def test_capture_reader_reconnects_after_failures_and_drops() -> None:
    script = iter([_FakeCapture(0, opens=False), _FakeCapture(0, opens=False), _FakeCapture(2), _FakeCapture(1)])
    opened = []

    def open_capture(uri: str) -> _FakeCapture:
        capture = next(script)
        opened.append(capture)
        return capture

    reader = CaptureReader("rtsp://cam", Backoff(0.01, 0.02, attempts=3), threading.Event(), open_capture)
    frames = [reader.read() for _ in range(3)]
    assert all(isinstance(f, Captured) for f in frames) and [f.frame for f in frames] == [0, 1, 2]
    assert len(opened) == 4 and reader.reconnects == 2 and reader.fps == 25.0
    assert reader.read() is None  # dropped again; no more captures: attempts used up


def test_capture_reader_stops_when_asked() -> None:
    stop = threading.Event()
    reader = CaptureReader("rtsp://cam", Backoff(5.0, 5.0), stop, lambda uri: _FakeCapture(0, opens=False))
    threading.Timer(0.1, stop.set).start()
    start = time.monotonic()
    assert reader.read() is None and time.monotonic() - start < 2.0


def _item(i: int) -> Captured:
    return Captured(np.zeros((2, 2, 3), np.uint8), "x", i, 0.0)


def test_live_buffer_keeps_only_the_newest_frame() -> None:
    buffer, stop = FrameBuffer(live=True), threading.Event()
    for i in range(5):
        buffer.put(_item(i), stop)
    assert buffer.take().frame == 4 and buffer.dropped == 4 and buffer.take() is None


def test_lossless_buffer_blocks_instead_of_dropping() -> None:
    buffer, stop = FrameBuffer(live=False, capacity=2), threading.Event()
    assert buffer.put(_item(0), stop) and buffer.put(_item(1), stop)
    done = []
    thread = threading.Thread(target=lambda: done.append(buffer.put(_item(2), stop)))
    thread.start()
    time.sleep(0.2)
    assert not done  # blocked: backpressure
    assert buffer.take().frame == 0
    thread.join(2.0)
    assert done == [True] and [buffer.take().frame, buffer.take().frame] == [1, 2] and buffer.dropped == 0


def test_synth_source() -> None:
    assert parse_synth_uri("synth:seed=2,frames=3,fps=10") == {"seed": 2, "stream_frames": 3, "stream_fps": 10.0}
    with pytest.raises(GhostboxError, match="keys"):
        parse_synth_uri("synth:colour=red")
    reader = SynthReader("synth:frames=2")
    assert [reader.read().frame, reader.read().frame] == [0, 1] and reader.read() is None


def test_resize() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    assert resize(image, 100).shape == (50, 100, 3)
    assert resize(image, (64, 32)).shape == (32, 64, 3)
    assert resize(image, None) is image
