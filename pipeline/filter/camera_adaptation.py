"""Adapt a fitted filter to a new camera from an unlabelled clip: move its thresholds, or re-fit its score.

A clip of the camera has no labels and, on a street, as many hallucinations as real objects (the
street world's clips: 28-57% of the tracked boxes sit on OoD objects). Two ways to adapt:

- **thresholds** (the default): keep the fitted score; the clip's tracks that score like real
  objects move the thresholds by one offset, so that `tpr` of their boxes are kept
  (`calibrate.offset_calibration`). The thresholds moved are, by default, **one overall
  threshold** (the filter's global one, the same for every class and confidence bin:
  `THRESHOLD_SHAPE`), or the filter's thresholds per class and confidence bin (`shape="per-bin"`,
  what `calibrate --from F --calibration-id CLIP` moves). Per-bin thresholds keep 5% in every bin,
  but on new streets they give low-confidence boxes, where most hallucinations are, low thresholds.
- **refit** (needs the filter's labelled ID data and an outlier set): the score is fitted again
  (outlier exposure) on the reference ID boxes plus the clip's tracks that the filter keeps with a
  margin (median margin >= `ID_MARGIN`), against the outliers plus the clip's tracks it flags clearly
  (median margin < `OUTLIER_MARGIN`). Thresholds come from the reference's held-out ID images.

**Contamination rule**: a clip track moves the thresholds only when its median margin under the
filter's (shaped) thresholds is >= `TRIM_MARGIN`, or when a person answered it is real (`answers`,
from `review_list`); a track answered as a hallucination never does. Failure modes, measured per
street in docs/benchmarks/streets.md: a hallucination the filter already keeps (a bench taken for a
car) stays in and lowers the thresholds (fewer hallucinations caught); under a strong shift real
tracks fall below the line and the offset comes out too tight (more real objects flagged).

**The choice** (`mode="auto"`): the drift of the clip's tracked boxes against the filter's
calibration (PSI of margins over the calibration's deciles, `drift.psi`) above `refit_psi`
re-fits when the data for it is given, else the thresholds move.

**Too few tracks**: fewer than `enough_tracks` kept tracks cannot place a 95% threshold (the
conformal rank needs >= 19 independent objects for one to fall below it): the filter gets a
conservative offset (never above the lowest kept track's median margin, never above the filter's
own thresholds) and a warning that says how many tracks would be enough.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.calibrate import (
    CONF_EDGES,
    SHAPES,
    THRESHOLD_SHAPE,
    Calibration,
    Shape,
    calibrate,
    offset_calibration,
)
from pipeline.filter.drift import psi
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.registry import create
from pipeline.filter.splits import CALIBRATION_FRACTION, time_blocks

log = logging.getLogger(__name__)

Mode = Literal["auto", "thresholds", "refit"]
MODES = ("auto", "thresholds", "refit")
# drift above which "auto" re-fits: on development streets 0-3 (PSI 0.28-1.13) re-fitting never won
# by both figures (seed 1, PSI 1.13: 22.9% of real objects flagged against 7.5%), so above them all
REFIT_PSI = 1.5
ID_MARGIN = 0.0        # refit: a clip track joins the ID side at this median margin or above
OUTLIER_MARGIN = -1.0  # ... and the outlier side below this one
# Chosen on development streets 0-3 (docs/benchmarks/streets.md), with one overall threshold
# (`calibrate.THRESHOLD_SHAPE`): tracks move the offset when their median margin is >= -1 (at 0 the kept
# tracks are the clip's best real ones only, and the offset comes out too tight: 7.2% flagged, median).
TRIM_MARGIN = -1.0


def enough_tracks(tpr: float) -> int:
    """Independent objects a threshold at `tpr` needs: the smallest n whose lowest one bounds (1 - tpr) of
    new ones (1 / (n + 1) <= 1 - tpr, the conformal rank argument): 19 at 95%."""
    return max(1, math.ceil(round(1.0 / max(1.0 - tpr, 1e-9), 6)) - 1)


@dataclass
class ReferenceData:
    """What a re-fit needs besides the clip: the filter's labelled ID boxes (grouped by image) and outliers."""

    ids: BoxSet
    outliers: Detections


@dataclass
class Adaptation:
    """What `adapt` measured and chose, for the summary and the filter file."""

    mode: str                      # "thresholds" or "refit"
    asked: str                     # the mode asked for
    psi: float                     # drift of the clip's tracked boxes against the filter's calibration
    tracks: int
    boxes: int
    enough_tracks: int
    conservative: bool             # too few tracks: the conservative offset
    reason: str
    id_side: dict[str, int] = field(default_factory=dict)       # refit: clip tracks and boxes taken as ID
    outlier_side: dict[str, int] = field(default_factory=dict)  # ... and as outliers
    thresholds: str = ""                                         # the threshold shape moved ("overall", "per-bin")

    def to_json(self) -> dict[str, Any]:
        return {k: ((None if math.isnan(v) else round(v, 4)) if isinstance(v, float) else v)
                for k, v in vars(self).items()}


def _tracked(clip: BoxSet) -> tuple[np.ndarray, np.ndarray]:
    """(frame, track) of every box of an unlabelled clip's tracked boxes (`id_collection.tracked_id_boxes`)."""
    if clip.labelled or clip.frames is None or clip.track_ids is None:
        raise GhostboxError("adapt: needs the tracked boxes of an unlabelled clip (frames and tracks), "
                            f"got {clip.description or 'labelled boxes'}")
    return clip.frames, clip.track_ids


def shaped_thresholds(filt: HallucinationFilter, shape: Shape) -> Calibration:
    """The filter's thresholds judged in `shape`: one overall threshold (its global one), or per class and
    confidence bin (its cells)."""
    ref = filt.thresholds
    return ref.rebinned(ref.conf_edges or CONF_EDGES).with_shape(shape)


def track_margins(scores: np.ndarray, thresholds: np.ndarray, track_ids: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(margin per box, its track's median margin per box): the median, so a few odd frames of a long
    track do not decide on which side the whole track falls."""
    margins = np.asarray(scores, np.float64) - np.asarray(thresholds, np.float64)
    _, inverse, counts = np.unique(track_ids, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    medians = np.array([np.median(part) for part in np.split(margins[order], np.cumsum(counts)[:-1])])
    return margins, medians[inverse] if len(counts) else margins


def _clip_margins(filt: HallucinationFilter, clip: BoxSet, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    reference = shaped_thresholds(filt, shape)
    thresholds = reference.thresholds_for(clip.boxes.class_id, clip.boxes.class_confidence())
    return track_margins(filt.scorer.score(clip.boxes), thresholds, _tracked(clip)[1])


def clip_drift(filt: HallucinationFilter, clip: BoxSet) -> float:
    """PSI of the clip's tracked boxes' margins (against the filter's own thresholds) over its calibration's
    deciles (nan for a filter without them)."""
    deciles = filt.thresholds.margin_deciles
    if not deciles:
        return float("nan")
    scores, thresholds, _ = filt.judge(clip.boxes)
    return psi(scores - thresholds, np.asarray(deciles, np.float64))


def review_list(filt: HallucinationFilter, clip: BoxSet, count: int,
                shape: Shape = THRESHOLD_SHAPE) -> list[dict[str, Any]]:
    """The `count` clip tracks whose answers move the thresholds most, most useful first.

    A track's answer matters when the filter is unsure of it (its median margin near the trimming
    line, where a wrong side costs most) and when it weighs much in the calibration (many boxes):
    priority = boxes / (1 + |median margin - TRIM_MARGIN|). Each entry names the track, its frames,
    its class and its margin.
    """
    _, medians = _clip_margins(filt, clip, shape)
    frames, track_ids = _tracked(clip)
    rows: list[dict[str, Any]] = []
    names = filt.class_names
    for track in np.unique(track_ids):
        mine = track_ids == track
        median = float(medians[mine][0])
        cls = int(np.bincount(clip.boxes.class_id[mine]).argmax())
        rows.append({"track": int(track), "boxes": int(mine.sum()), "first_frame": int(frames[mine].min()),
                     "last_frame": int(frames[mine].max()), "class": names[cls] if cls < len(names) else str(cls),
                     "median_margin": round(median, 3),
                     "priority": round(float(mine.sum()) / (1.0 + abs(median - TRIM_MARGIN)), 3)})
    rows.sort(key=lambda r: -r["priority"])
    return rows[:max(0, count)]


def moved_thresholds(filt: HallucinationFilter, clip: BoxSet, shape: Shape = THRESHOLD_SHAPE,
                     answers: dict[int, bool] | None = None, seed: int = 0,
                     metadata: dict[str, Any] | None = None) -> tuple[HallucinationFilter, bool]:
    """The filter's score with its thresholds (in `shape`) moved by one offset that keeps `tpr` of the
    clip's ID tracks: a track answered real is kept, one answered a hallucination left out, the rest kept
    when their median margin is >= TRIM_MARGIN. Too few tracks: the conservative offset (the module doc).
    Returns (filter, conservative)."""
    answers = answers or {}
    frames, track_ids = _tracked(clip)
    known = set(np.unique(track_ids).tolist())
    unknown = sorted(set(answers) - known)
    if unknown:
        raise GhostboxError(f"adapt: answers for tracks {unknown[:10]} that the clip does not have ({len(known)} "
                            "tracks; answer the list `ghostbox adapt CLIP --ask N` printed for the same clip and "
                            "settings)")
    reference = shaped_thresholds(filt, shape)
    margins, medians = _clip_margins(filt, clip, shape)
    real = np.isin(track_ids, [t for t, ok in answers.items() if ok])
    ghost = np.isin(track_ids, [t for t, ok in answers.items() if not ok])
    keep = ((medians >= TRIM_MARGIN) | real) & ~ghost
    if not keep.any():
        raise GhostboxError(
            f"adapt: every one of the clip's {len(known)} tracks scores like a hallucination (median margin below "
            f"{TRIM_MARGIN:g}) against the filter's thresholds: this footage shows nothing the filter takes for ID "
            "(wrong camera or classes?); answer a few tracks (--ask, --real) or re-fit (--mode refit)")
    tpr = filt.thresholds.target_tpr
    thresholds = offset_calibration(filt.scorer, clip.boxes[keep], reference, tpr, filt.class_names,
                                    time_blocks(frames[keep]), "time blocks", seed, units=track_ids[keep])
    kept_tracks = int(len(np.unique(track_ids[keep])))
    conservative = kept_tracks < enough_tracks(tpr)
    if conservative:
        # never tighter than the filter's own thresholds, nor than what keeps the lowest kept track
        offset = min(0.0, float(medians[keep].min()), float(thresholds.offset or 0.0))
        thresholds = replace(thresholds, per_class=reference.per_class + offset, per_bin=reference.per_bin + offset,
                             global_threshold=reference.global_threshold + offset, offset=offset)
    notes = {"calibration_trimmed": {"boxes": int((~keep).sum()), "of": len(clip.boxes),
                                     "tracks": len(known) - kept_tracks, "of_tracks": len(known)},
             "calibration_boxes": int(keep.sum()), "threshold_shape": shape,
             **({"reviewed_tracks": {"real": int(sum(answers.values())),
                                     "hallucination": int(sum(not v for v in answers.values()))}} if answers else {})}
    return HallucinationFilter(filt.scorer, thresholds, filt.class_names, filt.fingerprint, filt.policy,
                               {**filt.metadata, **notes, **(metadata or {})}), conservative


def refit_filter(filt: HallucinationFilter, clip: BoxSet, reference: ReferenceData, seed: int = 0,
                 id_margin: float = ID_MARGIN, outlier_margin: float = OUTLIER_MARGIN,
                 ) -> tuple[HallucinationFilter, dict[str, int], dict[str, int]]:
    """The score fitted again with the clip's clear tracks on each side (the module doc's rule)."""
    if not filt.scorer.needs_outliers:
        raise GhostboxError(f"adapt --mode refit: re-fits an outlier-trained score (oe); this filter's is "
                            f"{filt.method} (use --mode thresholds)")
    _, track_ids = _tracked(clip)
    scores, own, _ = filt.judge(clip.boxes)
    _, medians = track_margins(scores, own, track_ids)
    id_side, outlier_side = medians >= id_margin, medians < outlier_margin
    fit_mask = reference.ids.fit_mask(CALIBRATION_FRACTION, seed)
    held = reference.ids.select(~fit_mask)
    members = [reference.ids.boxes[fit_mask]] + ([clip.boxes[id_side]] if id_side.any() else [])
    outliers = [reference.outliers] + ([clip.boxes[outlier_side]] if outlier_side.any() else [])
    params = dict(filt.scorer.params)
    scorer = create(filt.method, **params).fit(Detections.merge(members), Detections.merge(outliers))
    thresholds = calibrate(scorer, held.boxes, shape=filt.thresholds.shape,  # type: ignore[arg-type]
                           tpr=filt.thresholds.target_tpr,
                           min_boxes=filt.thresholds.min_boxes, class_names=filt.class_names,
                           conf_edges=filt.thresholds.conf_edges, groups=held.groups,
                           group_kind=held.group_kind, seed=seed)

    def side(mask: np.ndarray) -> dict[str, int]:
        return {"tracks": int(len(np.unique(track_ids[mask]))), "boxes": int(mask.sum())}

    refit = HallucinationFilter(scorer, thresholds, filt.class_names, filt.fingerprint, filt.policy,
                                {**filt.metadata, "fit_boxes": int(sum(len(m) for m in members)),
                                 "outlier_boxes": int(sum(len(o) for o in outliers))})
    return refit, side(id_side), side(outlier_side)


def adapt_filter(filt: HallucinationFilter, clip: BoxSet, mode: Mode = "auto",
                 reference: ReferenceData | None = None, refit_psi: float = REFIT_PSI, seed: int = 0,
                 metadata: dict[str, Any] | None = None, answers: dict[int, bool] | None = None,
                 shape: Shape = THRESHOLD_SHAPE) -> tuple[HallucinationFilter, Adaptation]:
    """The filter adapted to the camera of `clip` (see the module doc); returns (filter, what was done).

    `answers`: clip track -> True (a real object) or False (a hallucination), from a person who looked
    at the tracks `review_list` chose; they decide which tracks move the thresholds."""
    if mode not in MODES:
        raise GhostboxError(f"adapt: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if shape not in SHAPES:
        raise GhostboxError(f"adapt: thresholds must be one of {', '.join(SHAPES)}, got {shape!r}")
    if len(clip.boxes) == 0:
        raise GhostboxError("adapt: the clip has no tracked boxes; give a longer clip of the camera")
    _, track_ids = _tracked(clip)
    tracks = clip.tracks
    if mode == "refit" and reference is None:
        raise GhostboxError("adapt --mode refit: give the filter's labelled ID data (--id) and outliers (--outliers)")
    drift = clip_drift(filt, clip)
    tpr = filt.thresholds.target_tpr
    chosen = mode
    if mode == "auto":
        if answers:
            chosen, reason = "thresholds", f"{len(answers)} reviewed tracks set the thresholds (drift PSI {drift:.2f})"
        elif not drift > refit_psi:
            chosen, reason = "thresholds", f"drift PSI {drift:.2f} <= {refit_psi:g}: the thresholds move"
        elif reference is None or not filt.scorer.needs_outliers:
            chosen, reason = "thresholds", (f"drift PSI {drift:.2f} > {refit_psi:g}, but a re-fit needs an oe filter "
                                            "and its ID data and outliers (--id, --outliers): thresholds moved only")
        else:
            chosen, reason = "refit", f"drift PSI {drift:.2f} > {refit_psi:g}: the score is fitted again"
    else:
        reason = f"asked for {mode} (drift PSI {drift:.2f})"
    info = {"adapted_on": clip.description, **(metadata or {})}
    id_side: dict[str, int] = {}
    outlier_side: dict[str, int] = {}
    conservative = False
    if chosen == "refit":
        assert reference is not None
        adapted, id_side, outlier_side = refit_filter(filt, clip, reference, seed)
        # the clip's own held-out check, counted over tracks, says how well its thresholds hold here
        check = offset_calibration(adapted.scorer, clip.boxes, adapted.thresholds, tpr, adapted.class_names,
                                   clip.groups, clip.group_kind, seed, units=track_ids).held_out
        thresholds = replace(adapted.thresholds, held_out=check)
        adapted = HallucinationFilter(adapted.scorer, thresholds, adapted.class_names, adapted.fingerprint,
                                      adapted.policy, {**adapted.metadata, **info})
    else:
        adapted, conservative = moved_thresholds(filt, clip, shape, answers, seed, info)
        if conservative:
            log.warning("adapt: the clip shows %d usable tracks; a %.0f%% threshold needs at least %d independent "
                        "objects (a clip a few times longer): thresholds set conservatively (no tighter than the "
                        "filter's own, keeping every clip track). Adapt again on a longer clip",
                        adapted.metadata["calibration_trimmed"]["of_tracks"]
                        - adapted.metadata["calibration_trimmed"]["tracks"], 100 * tpr, enough_tracks(tpr))
    report = Adaptation(chosen, mode, float(drift), tracks, len(clip.boxes), enough_tracks(tpr), conservative,
                        reason, id_side, outlier_side, shape if chosen == "thresholds" else "refit")
    adapted.metadata["adaptation"] = report.to_json()
    return adapted, report
