"""What every frame reader gives the stream: a `Captured` frame, through the `FrameReader` protocol.

One small module the readers (files, synth world, cameras) and their users share, so a reader
depends on this contract and not on the other readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.sources.media_files import MediaReport


@dataclass
class Captured:
    image: np.ndarray  # BGR uint8
    origin: str  # the file, URL or device it came from
    frame: int  # index within that origin
    t_capture: float  # unix seconds


class FrameReader(Protocol):
    # read-only properties: a reader may narrow them (a plain attribute or a class attribute will do)
    @property
    def fps(self) -> float | None:  # native frame rate when known
        ...

    @property
    def live(self) -> bool:  # a camera or network stream: frames arrive in real time, it may drop and come back
        ...

    @property
    def report(self) -> MediaReport | None:  # what a file reader skipped or cut; None for readers without files
        ...

    def read(self) -> Captured | None:  # None: end of stream
        ...

    def close(self) -> None:
        ...
