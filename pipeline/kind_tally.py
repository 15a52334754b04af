"""What a filter caught, per OoD kind and per hallucinated object, beside the per-box total.

One persistent object can hide the others in a per-box figure: 700 boxes on one bench
outweigh a dog seen in 20. So `ghostbox demo` and `ghostbox eval` also count objects: an
object (one OoD instance: a stream object followed through frames, or one object in one
image) is *caught* when most of its hallucinated boxes (more than half) are flagged.

    tally = KindTally()
    tally.add(kinds, objects, flagged)      # per hallucinated box: its OoD kind, object key, verdict
    tally.rows()                            # per kind: boxes, caught, objects, objects_caught

The confidence-cut baseline answers "is the filter worth running": the cut on the detector's
confidence that flags the same share of ID detections as the filter, and what it catches.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np

MOST = 0.5  # an object is caught when more than this share of its boxes is flagged


class KindTally:
    """Hallucinated boxes and their verdicts, grouped by OoD kind and by object."""

    def __init__(self) -> None:
        self._boxes: dict[str, list[int]] = {}  # kind -> [boxes, flagged]
        self._objects: dict[tuple[str, Hashable], list[int]] = {}  # (kind, object) -> [boxes, flagged]

    def add(self, kinds: Iterable[str], objects: Iterable[Hashable], flagged: Iterable[bool]) -> None:
        for kind, obj, flag in zip(kinds, objects, flagged):
            kind = str(kind)
            box = self._boxes.setdefault(kind, [0, 0])
            box[0] += 1
            box[1] += bool(flag)
            one = self._objects.setdefault((kind, obj), [0, 0])
            one[0] += 1
            one[1] += bool(flag)

    def rows(self) -> dict[str, dict[str, int]]:
        """Per kind (sorted by boxes, most first): boxes, caught, objects, objects_caught."""
        out: dict[str, dict[str, int]] = {}
        for kind, (boxes, caught) in sorted(self._boxes.items(), key=lambda kv: (-kv[1][0], kv[0])):
            objects = [v for (k, _), v in self._objects.items() if k == kind]
            out[kind] = {"boxes": boxes, "caught": caught, "objects": len(objects),
                         "objects_caught": sum(f > MOST * b for b, f in objects)}
        return out

    def totals(self) -> dict[str, int]:
        objects = list(self._objects.values())
        return {"objects": len(objects), "objects_caught": sum(f > MOST * b for b, f in objects)}


def cut_below(id_confidence: np.ndarray, id_rate: float) -> float:
    """The confidence below which `id_rate` of the ID detections lie: the k-th lowest, k = round(rate n)
    (-inf, flagging nothing, for a rate of 0 or no ID detections)."""
    ranked = np.sort(np.asarray(id_confidence, np.float64))
    k = int(round(id_rate * len(ranked)))
    return float(ranked[min(k, len(ranked) - 1)]) if k > 0 and len(ranked) else -np.inf


def confidence_cut(id_confidence: np.ndarray, id_flagged: np.ndarray, ood_confidence: np.ndarray
                   ) -> dict[str, Any]:
    """The confidence cut that flags the filter's share of ID detections, and the share of
    hallucinations it flags (below the cut)."""
    id_confidence = np.asarray(id_confidence, np.float64)
    ood_confidence = np.asarray(ood_confidence, np.float64)
    if not len(id_confidence) or not len(ood_confidence):
        return {"cut": None, "id_flagged": None, "caught": None}
    cut = cut_below(id_confidence, float(np.mean(id_flagged)))
    return {"cut": round(cut, 4) if np.isfinite(cut) else None,
            "id_flagged": round(float(np.mean(id_confidence < cut)), 4),
            "caught": round(float(np.mean(ood_confidence < cut)), 4)}


def describe_kinds(rows: dict[str, dict[str, int]]) -> str:
    """'bench 34% of 708 boxes (0/1 objects), dog 100% of 23 (1/1), ...'."""
    parts = []
    for kind, row in rows.items():
        share = f"{100.0 * row['caught'] / row['boxes']:.0f}%" if row["boxes"] else "n/a"
        parts.append(f"{kind} {share} of {row['boxes']} ({row['objects_caught']}/{row['objects']} objects)")
    return ", ".join(parts)
