"""One `FrameReader` per source kind ("file", "synth", else a camera or network stream).

Takes plain values rather than the stream's `SourceConfig`, so it stays below `pipeline.stream`
(the stage passes its config's fields in).
"""

from __future__ import annotations

import threading

from pipeline.sources.capture_reader import Backoff, CaptureReader
from pipeline.sources.file_reader import FileReader
from pipeline.sources.frame_reader import FrameReader
from pipeline.sources.synth_reader import SynthReader


def open_reader(kind: str, uri: str, stop: threading.Event, *, loop: bool,
                reconnect: tuple[float, float, int | None]) -> FrameReader:
    """`loop` applies to files; `reconnect` (initial_s, max_s, attempts) to live streams."""
    if kind == "file":
        return FileReader(uri, loop=loop)
    if kind == "synth":
        return SynthReader(uri)
    return CaptureReader(uri, Backoff(*reconnect), stop)
