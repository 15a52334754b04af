"""Detections on the synthetic street world judged against its ground truth (`ghostbox demo`, benchmarks).

Every JSONL record of a run on a `synth:` stream is matched to the frame's ground truth, where objects move and
hide one another, so each has a visible box and a whole box (class-agnostic,
`pipeline.matching.match_occluded`): a detection is on an object when its IoU with
either box is >= 0.5, or, failing that, on a part of it when it lies mostly (>= 50% of its
area) inside the object's whole box.
- a detection on an OoD object or a part of one is a hallucination; flagged, it is *caught*;
- a detection on an ID object that the filter flagged is *wrongly flagged*;
- a detection on a part of an ID object is a partial detection (reported, not judged: it is
  neither a hallucination nor a true positive);
- a detection on no object is a background false positive (reported, not judged).

Beside the totals: caught per OoD kind and per hallucinated object (`pipeline.kind_tally`: an
object is caught when most of its boxes are flagged), and the confidence cut that flags the
same share of ID detections as the filter, with what it would have caught.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import GhostboxError
from pipeline.kind_tally import KindTally, confidence_cut, describe_kinds
from pipeline.matching import MATCH_INSIDE, MATCH_IOU, match_occluded
from pipeline.synth.config import WorldConfig
from pipeline.synth.stream import render_stream_frame


def judge_against_truth(det: np.ndarray, truth: list[dict[str, Any]], iou: float = 0.5,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(match, how, on_ood, on_id) of boxes `det` (N, 4) against a world frame's ground truth: the
    object each box matches (occlusion-aware), how, whether it sits on an OoD object (a
    hallucination) and whether it is IoU-matched to an ID object."""
    visible = np.array([t["xyxy"] for t in truth], np.float32).reshape(-1, 4)
    whole = np.array([t.get("full_xyxy", t["xyxy"]) for t in truth], np.float32).reshape(-1, 4)
    ood = np.array([bool(t["ood"]) for t in truth], bool)
    match, how = match_occluded(det, visible, whole, iou)
    on_ood = (match >= 0) & ood[np.maximum(match, 0)] if len(visible) else np.zeros(len(det), bool)
    on_id = (how == MATCH_IOU) & ~on_ood
    return match, how, on_ood, on_id


def score_against_truth(jsonl: str | Path, world: WorldConfig, iou: float = 0.5) -> dict[str, Any]:
    """Count caught hallucinations and wrongly flagged ID detections in a run's JSONL on `world`'s stream."""
    counts: dict[str, Any] = {"frames": 0, "detections": 0, "hallucinations": 0, "caught": 0, "id_detections": 0,
              "wrongly_flagged": 0, "id_partial": 0, "id_partial_flagged": 0, "background": 0,
              "background_flagged": 0, "flagged": 0}
    path = Path(jsonl)
    if not path.is_file():
        raise GhostboxError(f"demo: no detections written ({path} missing)")
    tally = KindTally()
    confidences: dict[str, list[float]] = {"id": [], "ood": []}
    id_flags: list[bool] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            _, truth = render_stream_frame(world, int(record["frame"]))
            boxes = record["boxes"]
            det = np.array([b["xyxy"] for b in boxes], np.float32).reshape(-1, 4)
            # the verdict the run acted on: the track's when tracks are on, else the frame's
            flagged = np.array([bool(b.get("track_hallucination", b.get("hallucination", False))) for b in boxes],
                               bool)
            match, how, on_ood, on_id = judge_against_truth(det, truth, iou)
            conf = np.array([float(b.get("conf", 0.0)) for b in boxes], np.float64)
            on = [truth[m] for m in match[on_ood]]
            tally.add([t.get("kind", t.get("label", "")) for t in on], [t.get("track_id", -1) for t in on],
                      flagged[on_ood])
            confidences["ood"] += conf[on_ood].tolist()
            confidences["id"] += conf[on_id].tolist()
            id_flags += flagged[on_id].tolist()
            id_part = (how == MATCH_INSIDE) & ~on_ood
            counts["frames"] += 1
            counts["detections"] += len(det)
            counts["flagged"] += int(flagged.sum())
            counts["hallucinations"] += int(on_ood.sum())
            counts["caught"] += int((on_ood & flagged).sum())
            counts["id_detections"] += int(on_id.sum())
            counts["wrongly_flagged"] += int((on_id & flagged).sum())
            counts["id_partial"] += int(id_part.sum())
            counts["id_partial_flagged"] += int((id_part & flagged).sum())
            counts["background"] += int((match < 0).sum())
            counts["background_flagged"] += int(((match < 0) & flagged).sum())
    counts.update(tally.totals())
    counts["per_kind"] = tally.rows()
    counts["confidence_cut"] = confidence_cut(np.array(confidences["id"]), np.array(id_flags, bool),
                                              np.array(confidences["ood"]))
    return counts


def describe(counts: dict[str, Any]) -> str:
    def pct(a: int, b: int) -> str:
        return f"{100.0 * a / b:.0f}%" if b else "n/a"

    return (f"caught {counts['caught']} of {counts['hallucinations']} hallucinations "
            f"({pct(counts['caught'], counts['hallucinations'])}); wrongly flagged {counts['wrongly_flagged']} of "
            f"{counts['id_detections']} ID detections ({pct(counts['wrongly_flagged'], counts['id_detections'])}); "
            f"{counts['id_partial']} partial ID detections ({counts['id_partial_flagged']} flagged); "
            f"{counts['background']} background detections ({counts['background_flagged']} flagged) "
            f"in {counts['frames']} frames"
            + (f"\nper object: caught {counts['objects_caught']} of {counts['objects']} hallucinated objects "
               f"(most of its boxes flagged); per kind: {describe_kinds(counts['per_kind'])}"
               if counts.get("per_kind") else "")
            + _cut_line(counts))


def _cut_line(counts: dict[str, Any]) -> str:
    """The confidence-cut baseline's line of `describe`, or '' without one."""
    cut = counts.get("confidence_cut") or {}
    if cut.get("caught") is None:
        return ""
    below = "-" if cut["cut"] is None else f"{cut['cut']:.3f}"
    return (f"\nconfidence cut at the same ID loss (conf < {below}): caught "
            f"{100.0 * cut['caught']:.0f}% of hallucinations")
