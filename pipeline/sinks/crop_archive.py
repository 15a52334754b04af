"""Crop archives: `CropArchive` writes OUT/<folder>/<source>/*.jpg and OUT/<folder>/index.jsonl.

Two archives use it: `flagged/` (crops of flagged boxes, what `ghostbox proxies --flagged` reads)
and `tracks/` (a few crops of every track, flagged or kept, with the head's logits and box
features: the gallery the review page shows, and what `ghostbox calibrate --reviewed` adds).

The fine-tuning step reads the index and trusts every line to name a crop that exists, so a crop
is written first and gets its index line only when the write succeeded; the crops that could not
be written are counted per source, with the first reason, instead of leaving a dangling line.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.box_geometry import cut
from pipeline.detections import Detections
from pipeline.sinks.free_space import free_space_note, full_disk_note
from pipeline.sinks.jsonl import LineFile
from pipeline.sinks.source_names import safe_name

log = logging.getLogger(__name__)


@dataclass
class CropCounts:
    written: int = 0
    failed: int = 0
    error: str = ""  # the first failure, naming the file


class CropArchive:
    """Crops under `out`/`folder`; nothing is created before the first one. `head`: index lines also
    carry the box's logits and box features (the tracks' gallery)."""

    def __init__(self, out: Path, folder: str = "flagged", head: bool = False) -> None:
        self.out = out
        self.name = folder
        self.folder = out / folder
        self.head = head
        self.index: LineFile | None = None  # <folder>/index.jsonl, opened with the first crop
        self.counts: dict[str, CropCounts] = {}

    def count(self, source: str) -> CropCounts:
        return self.counts.setdefault(source, CropCounts())

    def add(self, source: str, seq: int, dets: Detections, flagged: np.ndarray, image: np.ndarray | None,
            detector: str | None, t_capture: float | None) -> None:
        """The boxes of one frame marked in `flagged`: cut from `image` unless `dets` carries crops."""
        counts = self.count(source)
        folder = self.folder / safe_name(source)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if self.index is None:
                self.index = LineFile(self.folder / "index.jsonl", append=True)
        except OSError as exc:
            counts.failed += int(flagged.sum())
            counts.error = counts.error or f"{folder}: {exc.strerror or exc}{free_space_note(self.out, exc)}"
            return
        labels = dets.labels
        for i in np.flatnonzero(flagged):
            crop = (dets.crops[i] if dets.crops is not None
                    else (cut(image, dets.xyxy[i]) if image is not None else None))
            if crop is None or crop.size == 0:
                continue
            name = f"{seq:07d}_{i:03d}.jpg"
            path = folder / name
            try:
                written = cv2.imwrite(str(path), crop)
                why = "cv2.imwrite failed"
            except (cv2.error, OSError) as exc:
                written, why = False, str(exc).strip().splitlines()[-1][:200]
            if not written:  # no index line for a crop that is not there
                with contextlib.suppress(OSError):
                    path.unlink()
                counts.failed += 1
                if not counts.error:
                    counts.error = f"{path}: {why}{full_disk_note(folder)}"
                    log.error("source %s: crop %s", source, counts.error)
                continue
            counts.written += 1
            record = {
                "file": f"{safe_name(source)}/{name}", "stream": source, "seq": seq,
                "source": dets.source, "frame": dets.frame, "xyxy": [round(float(v), 2) for v in dets.xyxy[i]],
                "cls": int(dets.class_id[i]), "label": labels[i], "conf": round(float(dets.confidence[i]), 5),
                "level": int(dets.level[i]),
                "score": round(float(dets.data["score"][i]), 5) if "score" in dets.data else None,
                "threshold": round(float(dets.data["threshold"][i]), 5) if "threshold" in dets.data else None,
                "detector": detector, "t_capture": t_capture,
                **({"track_id": int(dets.data["track_id"][i])} if "track_id" in dets.data else {}),
                **({"track_score": round(float(dets.data["track_score"][i]), 5),
                    "track_hallucination": bool(dets.data["track_hallucination"][i])}
                   if "track_score" in dets.data and "track_hallucination" in dets.data else {}),
            }
            if self.head:
                record["logits"] = [round(float(v), 4) for v in dets.logits[i]]
                record["box_features"] = [round(float(v), 5) for v in dets.box_features[i]]
            self.index.add(json.dumps(record, separators=(",", ":")), source)

    def totals(self, sources: list[str]) -> dict[str, Any]:
        """Crops written and failed over `sources`, with the first source's error (summary.json `writes`)."""
        counts = [self.count(sid) for sid in sources]
        failed = [c.error for c in counts if c.error]
        return {"written": sum(c.written for c in counts), "failed": sum(c.failed for c in counts),
                **({"error": failed[0]} if failed else {})}

    def problem(self, source: str) -> str:
        """One line for the crops of `source` that were not written, or ''."""
        counts = self.counts.get(source)
        if counts is None or not counts.failed:
            return ""
        return f"{self.name}/{safe_name(source)}: {counts.failed} crops not written ({counts.error})"
