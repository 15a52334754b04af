"""What the web view shows, kept apart from HTTP: the live frames and counters (`LiveState`, fed
from the sinks' feed) and the tracks' gallery with its answers (`Gallery`, read from the run's
output folder, so it works during a run and after it).

Both are bounded: one frame per source, `HISTORY` points of flag rate per source, and at most
`MAX_TRACKS` tracks in the gallery (the oldest unanswered ones go first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from pipeline.data.review_file import (
    GALLERY_INDEX,
    GalleryTrack,
    ReviewFile,
    gallery_row,
    read_lines,
    track_key,
)
from pipeline.errors import GhostboxError

HISTORY = 300  # flag-rate points per source (one a second: five minutes)
MAX_TRACKS = 2000
MAX_SOURCES = 256


class LiveState:
    """Newest frame and counters per source, and a short history of the flag rate."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: dict[str, tuple[int, bytes]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.history: dict[str, deque[tuple[float, float]]] = {}
        self._previous: dict[str, tuple[float, dict[str, Any]]] = {}
        self.version = 0
        self.bad_messages = 0

    def take(self, message: dict[str, Any] | None) -> None:
        """One decoded feed message (`pipeline.sinks.live_feed.decode`); None counts as bad."""
        if message is None:
            self.bad_messages += 1
            return
        with self.lock:
            self.version += 1
            if message["kind"] == "frame":
                if message["source"] in self.frames or len(self.frames) < MAX_SOURCES:
                    self.frames[message["source"]] = (message["seq"], message["jpeg"])
                return
            for sid, figures in list(message["sources"].items())[:MAX_SOURCES]:
                self._stats(sid, message["t"], figures)

    def _stats(self, sid: str, t: float, figures: dict[str, Any]) -> None:
        shown = dict(figures)
        before = self._previous.get(sid)
        if before is not None and t > before[0]:
            dt = t - before[0]
            frames = figures.get("frames", 0) - before[1].get("frames", 0)
            boxes = figures.get("boxes", 0) - before[1].get("boxes", 0)
            flagged = figures.get("flagged", 0) - before[1].get("flagged", 0)
            shown["fps"] = round(max(frames, 0) / dt, 2)
            if boxes > 0:
                self.history.setdefault(sid, deque(maxlen=HISTORY)).append((round(t, 2), round(flagged / boxes, 4)))
        elif sid in self.stats:
            shown["fps"] = self.stats[sid].get("fps", 0.0)
        self._previous[sid] = (t, figures)
        self.stats[sid] = shown

    def frame(self, source: str) -> tuple[int, bytes] | None:
        with self.lock:
            return self.frames.get(source)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            sources = sorted(set(self.frames) | set(self.stats))
            return {"version": self.version, "sources": {
                sid: {"seq": self.frames[sid][0] if sid in self.frames else None, "stats": self.stats.get(sid, {}),
                      "flag_rate": list(self.history.get(sid, ()))} for sid in sources}}


class Gallery:
    """The tracks of OUT/tracks/index.jsonl (read as it grows) with their answers from OUT/review.jsonl."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.folder = self.out / GALLERY_INDEX.parent
        self.review = ReviewFile(self.out)
        self.lock = threading.Lock()
        self.tracks: OrderedDict[str, GalleryTrack] = OrderedDict()
        self._offset = 0
        self.version = 0
        # answers of an earlier session still count
        self._answers_before = {key: row["answer"] for key, row in self.review.answers().items()}

    def refresh(self) -> None:
        """Take the gallery lines written since the last call."""
        rows, offset = read_lines(self.out / GALLERY_INDEX, self._offset)
        if not rows:
            self._offset = offset
            return
        with self.lock:
            self._offset = offset
            for row in rows:
                parsed = gallery_row(row)
                if parsed is None:
                    continue
                stream, track_id, file = parsed
                key = track_key(stream, track_id)
                try:  # a line with fields of the wrong type is skipped, never the page's end
                    seq, cls = int(row.get("seq", 0)), int(row.get("cls", -1))
                except (TypeError, ValueError):
                    continue
                track = self.tracks.pop(key, None)
                if track is None:
                    track = GalleryTrack(stream, track_id, str(row.get("label", "?"))[:64], cls, first_seq=seq,
                                         answer=self._answers_before.get(key))
                if file not in track.crops:
                    track.crops = (track.crops + [file])[-8:]
                track.flagged = bool(row.get("track_hallucination", track.flagged))
                score = row.get("track_score")
                track.track_score = float(score) if isinstance(score, (int, float)) else track.track_score
                track.last_seq = seq
                track.detector = row.get("detector") if isinstance(row.get("detector"), str) else track.detector
                self.tracks[key] = track
            while len(self.tracks) > MAX_TRACKS:
                oldest = next((k for k, t in self.tracks.items() if t.answer is None), next(iter(self.tracks)))
                self.tracks.pop(oldest)
            self.version += 1

    def listing(self, which: str = "flagged") -> list[dict[str, Any]]:
        """Newest first; `which`: flagged, kept or all."""
        with self.lock:
            tracks = [t for t in reversed(self.tracks.values())
                      if which == "all" or (which == "flagged") == t.flagged]
            return [t.as_dict() for t in tracks]

    def answer(self, key: str, answer: str) -> dict[str, Any]:
        """Record `answer` for track `key` in OUT/review.jsonl; KeyError for a track not in the gallery."""
        with self.lock:
            track = self.tracks.get(key)
            if track is None:
                raise KeyError(key)
            record = self.review.append(track, answer)
            track.answer = answer
            self.version += 1
            return record

    def crop_path(self, relative: str) -> Path:
        """A crop file under OUT/tracks/, refusing any path that leaves it."""
        path = (self.folder / relative).resolve()
        if not path.is_relative_to(self.folder.resolve()) or path.suffix.lower() != ".jpg":
            raise GhostboxError(f"not a crop of this run: {relative!r}")
        return path

