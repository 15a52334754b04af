"""The crop archives as outputs: `FlaggedCrops` (OUT/flagged/, crops of flagged boxes: what the
fine-tuning step reads) and `TrackGallery` (OUT/tracks/, a few crops of every track, flagged or
kept, with the head's arrays: the review page's gallery).

Which boxes of a frame are cut is the caller's `pick` (a tracked source keeps a few crops per
track, spread over its life, not one a frame); the files are `pipeline.sinks.crop_archive`'s.
Crops are of every flagged box whatever the policy: "drop" leaves boxes out of what is shown,
never out of the archive.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.sinks.crop_archive import CropArchive
from pipeline.sinks.output import FrameRecord, Output, OutputReport

Pick = Callable[[FrameRecord], np.ndarray]  # bool per box: the boxes of this frame to cut


class _CropOutput(Output):
    def __init__(self, archive: CropArchive, pick: Pick) -> None:
        self.archive = archive
        self.pick = pick

    def _add(self, frame: FrameRecord, boxes: np.ndarray) -> None:
        if boxes.any():
            self.archive.add(frame.source, frame.seq, frame.dets, boxes, frame.image(), frame.detector,
                             frame.t_capture)

    def tick(self) -> None:
        if self.archive.index is not None and self.archive.index.due():
            self.archive.index.flush()

    def close(self) -> None:
        if self.archive.index is not None:
            self.archive.index.close()

    def _report(self, sources: list[str], index_key: str) -> OutputReport:
        archive, index = self.archive, self.archive.index
        counts = list(archive.counts.values())  # not `totals`: that would list sources with nothing cut
        lines = {sid: [line] for sid in sources if (line := archive.problem(sid))}
        return OutputReport(
            written=sum(c.written for c in counts),
            lost=sum(c.failed for c in counts) + (index.lost if index is not None else 0),
            error=next((c.error for c in counts if c.error), None), source_problems=lines,
            writes={index_key: index.figures(archive.out)} if index is not None else {},
            problems=index.problem(f"{archive.name}/index.jsonl",
                                   f"index lines (their crops are in {archive.name}/)") if index is not None else [])


class FlaggedCrops(_CropOutput):
    """OUT/flagged/<source>/*.jpg and flagged/index.jsonl; `pick`: of a frame's flagged boxes, those
    cut (default: all of them)."""

    def __init__(self, out: Path, pick: Pick | None = None) -> None:
        super().__init__(CropArchive(out, "flagged"), pick or (lambda frame: frame.flagged))

    def write(self, frame: FrameRecord) -> None:
        if frame.flagged.any():
            self._add(frame, self.pick(frame))

    def report(self, sources: list[str]) -> OutputReport:
        report = self._report(sources, "flagged_index")
        report.outputs = {"flagged": str(self.archive.folder)}
        report.writes["crops"] = self.archive.totals(sources)
        report.per_source = {sid: {"crops_written": self.archive.count(sid).written,
                                   "crops_failed": self.archive.count(sid).failed} for sid in sources}
        return report


class TrackGallery(_CropOutput):
    """OUT/tracks/<source>/*.jpg and tracks/index.jsonl, whose lines also hold each box's logits and box
    features (`ghostbox calibrate --reviewed`); `pick`: the boxes of a frame that join the gallery."""

    def __init__(self, out: Path, pick: Pick) -> None:
        super().__init__(CropArchive(out, "tracks", head=True), pick)

    def write(self, frame: FrameRecord) -> None:
        self._add(frame, self.pick(frame))

    def report(self, sources: list[str]) -> OutputReport:
        report = self._report(sources, "tracks_index")
        if self.archive.index is not None:
            report.outputs = {"tracks": str(self.archive.folder)}
        if self.archive.counts:
            report.writes["track_crops"] = self.archive.totals(sources)
        return report
