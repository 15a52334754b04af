"""A run's review, a file format: what a person said of its tracks on the review page, and the gallery.

    OUT/tracks/index.jsonl   written by the sink (`CropArchive(out, "tracks", head=True)`): one
                             line per gallery crop: file, stream, seq, track_id, label, cls,
                             track_score, track_hallucination, logits, box_features, detector
    OUT/review.jsonl         written by the review page, one line per answer (the last answer
                             for a track wins):
                             {"time": ISO-8601, "stream", "track_id", "answer": "hallucination" |
                              "real", "verdict": "flagged" | "kept" (the pipeline's, when
                              answered), "label", "cls", "crops": [files under OUT/tracks/],
                              "detector": sha256 of the detector's weights}

What reads them: `ghostbox proxies --flagged OUT` (confirmed hallucinations become proxies,
crops of tracks confirmed real are left out) and `ghostbox calibrate --reviewed OUT` (boxes of
tracks confirmed real join the ID calibration set).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import GhostboxError

REVIEW_FILE = "review.jsonl"
GALLERY_INDEX = Path("tracks") / "index.jsonl"
ANSWERS = ("hallucination", "real")


def run_folder(path: str | Path) -> Path:
    """The output folder of a run, given it or its flagged/ or tracks/ folder."""
    path = Path(path)
    return path.parent if path.name in ("flagged", "tracks") and (path.parent / REVIEW_FILE).exists() else path


def read_lines(path: Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """JSON objects of the whole lines of `path` from byte `start`; the offset after the last whole
    line (a line still being written is left for the next call). Lines that are not objects are skipped."""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        return [], start
    except OSError as exc:
        raise GhostboxError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, start + end


def track_key(stream: str, track_id: int) -> str:
    return f"{stream}/{track_id}"


@dataclass
class GalleryTrack:
    """What the gallery knows of one track: its crops, its latest verdict, and the answer, if any."""

    stream: str
    track_id: int
    label: str
    cls: int
    crops: list[str] = field(default_factory=list)
    flagged: bool = False
    track_score: float | None = None
    first_seq: int = 0
    last_seq: int = 0
    detector: str | None = None
    answer: str | None = None

    @property
    def key(self) -> str:
        return track_key(self.stream, self.track_id)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "stream": self.stream, "track_id": self.track_id, "label": self.label,
                "cls": self.cls, "crops": list(self.crops), "flagged": self.flagged, "track_score": self.track_score,
                "first_seq": self.first_seq, "last_seq": self.last_seq, "answer": self.answer}


def gallery_row(row: dict[str, Any]) -> tuple[str, int, str] | None:
    stream, track, file = row.get("stream"), row.get("track_id"), row.get("file")
    if not (isinstance(stream, str) and isinstance(track, int) and track >= 0 and isinstance(file, str)):
        return None
    return stream, track, file


class ReviewFile:
    """OUT/review.jsonl: answers appended whole-line, with fsync (a person's work is not to be lost)."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / REVIEW_FILE

    def append(self, track: GalleryTrack, answer: str) -> dict[str, Any]:
        if answer not in ANSWERS:
            raise GhostboxError(f"review: answer must be one of {list(ANSWERS)}, got {answer!r}")
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stream": track.stream, "track_id": track.track_id,
                  "answer": answer, "verdict": "flagged" if track.flagged else "kept", "label": track.label,
                  "cls": track.cls, "crops": list(track.crops), "detector": track.detector}
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def answers(self) -> dict[str, dict[str, Any]]:
        """track key -> its last answer record."""
        rows, _ = read_lines(self.path)
        last: dict[str, dict[str, Any]] = {}
        for row in rows:
            if (row.get("answer") in ANSWERS and isinstance(row.get("stream"), str)
                    and isinstance(row.get("track_id"), int)):
                last[track_key(row["stream"], row["track_id"])] = row
        return last


def reviewed_gallery_rows(out: str | Path, answer: str) -> Iterator[dict[str, Any]]:
    """The gallery lines (crop, logits, box features) of the tracks last answered `answer`."""
    out = run_folder(out)
    wanted = {key for key, row in ReviewFile(out).answers().items() if row["answer"] == answer}
    if not wanted:
        return
    rows, _ = read_lines(out / GALLERY_INDEX)
    for row in rows:
        parsed = gallery_row(row)
        if parsed is not None and track_key(parsed[0], parsed[1]) in wanted:
            yield row


def head_arrays(rows: list[dict[str, Any]], where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(logits, box_features, class_id, level) of gallery lines, with their shapes checked."""
    try:
        logits = np.asarray([r["logits"] for r in rows], np.float32)
        features = np.asarray([r["box_features"] for r in rows], np.float32)
        cls = np.asarray([r["cls"] for r in rows], np.int64)
        level = np.asarray([r.get("level", 0) for r in rows], np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise GhostboxError(f"{where}: gallery lines without usable logits/box_features ({exc}); the run "
                            "must come from a ghostbox version that writes them (OUT/tracks/index.jsonl)") from exc
    if logits.ndim != 2 or features.ndim != 2:
        raise GhostboxError(f"{where}: logits and box features of different lengths across lines")
    return logits, features, cls, level
