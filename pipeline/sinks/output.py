"""The one interface every output of a run stands behind: `Output`, fed `FrameRecord`s, and the
`OutputReport` it gives back for summary.json.

A stream sink (`pipeline.stream.sink_stage.SinkCore`) and `ghostbox detect` write through the same
outputs: each is opened by its owner, gets every frame with `write`, is told when a source ends and
when lines waiting in memory are due, is closed, then says what it wrote and what it lost. What
goes into which file is the output's business; the caller only loops.

A frame's image is decoded only when some output asks for it (`FrameRecord.image`): a sink that
writes rows alone never touches the pixels its messages carry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipeline.detections import Detections
from pipeline.sinks.annotate import annotate
from pipeline.sinks.policy import shown

DEFAULT_FPS = 25.0  # a video's frame rate when its source tells none (a folder, a stream, a container without one)


@dataclass
class FrameRecord:
    """One frame on its way to the outputs: every box (flagged ones too) and its image on demand."""

    source: str  # a stream's id in a stream sink, the input file in `ghostbox detect`
    seq: int  # the frame's number in its source
    dets: Detections  # with the filter's (and the tracker's) fields; what is shown is each output's policy
    load_image: Callable[[], np.ndarray | None]  # called once, by the first output that wants pixels
    ident: dict[str, Any] = field(default_factory=dict)  # what a row names the frame by besides source and frame
    fps: float = DEFAULT_FPS  # of the source, for a video made of its frames
    error: str | None = None  # why the frame has no (scored) boxes
    stamps: dict[str, float] | None = None  # a stream's per-stage timestamps, for the row and the latency
    detector: str | None = None  # the detector's weights sha256, for the crop indexes
    flagged: np.ndarray = field(init=False)  # bool per box: the verdict the outputs act on

    def __post_init__(self) -> None:
        flags, _ = self.dets.verdict()  # a track's verdict where the boxes were tracked
        self.flagged = np.asarray(flags, bool) if flags is not None else np.zeros(len(self.dets), bool)
        self._image: np.ndarray | None = None
        self._loaded = False
        self._annotated: dict[str | None, np.ndarray | None] = {}

    @classmethod
    def decoded(cls, source: str, seq: int, dets: Detections, image: np.ndarray, **fields: Any) -> FrameRecord:
        """A frame whose pixels are already in memory (`ghostbox detect`)."""
        return cls(source, seq, dets, lambda: image, **fields)

    @property
    def t_capture(self) -> float | None:
        return self.stamps.get("capture") if self.stamps is not None else None

    def image(self) -> np.ndarray | None:
        """The frame's pixels, decoded at the first call; None when there are none (or they are unreadable)."""
        if not self._loaded:
            self._image, self._loaded = self.load_image(), True
        return self._image

    def annotated(self, policy: str | None) -> np.ndarray | None:
        """The image with the boxes `policy` shows drawn on it: made once, for the video and the live view."""
        if policy not in self._annotated:
            image = self.image()
            self._annotated[policy] = None if image is None else annotate(image, shown(self.dets, self.flagged,
                                                                                         policy)[0])
        return self._annotated[policy]


@dataclass
class OutputReport:
    """What one output wrote and lost, in summary.json's words (an output adds only what it has)."""

    written: int = 0  # items (rows, frames, crops) in its files
    lost: int = 0  # items meant for its files that are not there
    error: str | None = None  # the first failure, naming the file
    outputs: dict[str, Any] = field(default_factory=dict)  # summary `outputs`: where it wrote
    writes: dict[str, Any] = field(default_factory=dict)  # summary `writes`: written and lost per file or kind
    per_source: dict[str, dict[str, Any]] = field(default_factory=dict)  # figures in each source's entry
    source_problems: dict[str, list[str]] = field(default_factory=dict)  # lines about one source's files
    problems: list[str] = field(default_factory=list)  # lines about a file of the run


class Output(Protocol):
    """Where frames go. An output never raises for a failed write: it counts it and says so in `report`.
    Outputs subclass it for its defaults, which do nothing: `write` is the one method each must have."""

    def write(self, frame: FrameRecord) -> None:
        """One frame, in its source's order."""
        ...

    def tick(self) -> None:
        """Lines waiting in memory reach their file within their flush interval, even when no frame comes."""
        return None

    def end(self, source: str) -> None:
        """`source` sent its last frame: its files can be finished (a video released and checked)."""
        return None

    def close(self) -> None:
        """Finish every file (once; later calls do nothing)."""
        return None

    def report(self, sources: list[str]) -> OutputReport:
        """What was written and lost, after `close` or while running; `sources`: each gets its figures."""
        return OutputReport()
