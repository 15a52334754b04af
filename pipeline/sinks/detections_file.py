"""OUT/detections.jsonl as an output: one row per frame (`jsonl.frame_row`), whole lines only.

The same file for `ghostbox detect` and a stream sink; a sink's rows also name the stream and seq,
count the boxes the "drop" policy left out and carry the frame's timestamps. Rows a failed write
took are counted per source (`rows_lost` in summary.json), the file cut back to whole lines.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.sinks.jsonl import LineFile, frame_row
from pipeline.sinks.output import FrameRecord, Output, OutputReport

NAME = "detections.jsonl"


class DetectionsFile(Output):
    """`max_lines`: rows held before a write (besides the file's flush interval); `count_dropped`: rows
    say how many boxes the policy left out (`dropped_boxes`, a stream sink's rows)."""

    def __init__(self, out: Path, policy: str | None = None, count_dropped: bool = False,
                 max_lines: int | None = None) -> None:
        self.out = out
        self.policy = policy
        self.count_dropped = count_dropped
        self.lines = LineFile(out / NAME, max_lines=max_lines)

    def write(self, frame: FrameRecord) -> None:
        self.lines.add(frame_row(frame, self.policy, self.count_dropped), frame.source)

    def tick(self) -> None:
        if self.lines.due():
            self.lines.flush()

    def close(self) -> None:
        self.lines.close()

    def report(self, sources: list[str]) -> OutputReport:
        lines = self.lines
        return OutputReport(
            written=lines.written, lost=lines.lost, error=lines.error, outputs={"jsonl": str(lines.path)},
            writes={"jsonl": lines.figures(self.out)},
            per_source={sid: {"rows_lost": lines.lost_by.get(sid, 0)} for sid in sources},
            problems=lines.problem(NAME, "rows"))
