"""`ghostbox bench streets`: does the filter hold on streets nobody tuned it on?

For every world seed (a street of its own: another camera) a stream of `frames` frames is rendered,
detected once and judged once against its ground truth (`street_streams`, cached). Each recipe
adapts the bundled filter on the first `calibration_frames` frames *without* their ground truth
(tracked boxes only, as `ghostbox adapt` does), and is judged on the rest with it: the share of
ID detections flagged, of hallucinations caught, per ID class, per OoD kind and per hallucinated
object (caught when most of its boxes are flagged), with frame verdicts and with track verdicts
(ByteTrack over the judged frames, `TrackVerdicts` at its defaults, as `ghostbox run` does).

Recipes:
- `bundled`: the filter as shipped (one overall threshold); `bundled, 5% in every bin`: the same
  score with its thresholds per class and confidence bin (as shipped before);
- `calibrate --from, 5% in every bin`: the earlier recipe, `calibrate --from F --calibration-id CLIP`
  on the per-bin filter: its thresholds moved by one offset from the clip's tracks whose mean margin
  is >= 0;
- `adapt, 5% in every bin`: `ghostbox adapt --thresholds per-bin` (the same shape, its track rule);
- `refit`: the score fitted again with the clip's clear tracks (`adapt --mode refit`);
- `adapt`: `ghostbox adapt` as the README runs it (one overall threshold moved, or a re-fit when the
  clip drifted far and the data for it is there);
- `adapt + N answers`: the same after a simulated reviewer answered the N tracks `review_list` asks
  about, from the ground truth (real when most of the track's boxes sit on an ID object); with every
  clip track answered, the bound of what answers on this clip can do;
- `confidence cut`: the baseline, a plain cut on the detector's confidence that flags as many of the
  street's ID detections as `adapt` does (set with the ground truth: an upper bound for the cut).

The stated interval (the clip's held-out check, 95%, counted over tracks) covers a street when it
contains the ID flag rate measured there (frame verdicts).

Development seeds (0-3) and held-out seeds (100-111) are reported apart; rules are chosen on the
first only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench.report import GENERATED, short_path, write_result
from pipeline.bench.street_streams import (
    CALIBRATION_FRAMES,
    FRAMES,
    ON_ID,
    ON_OOD,
    Street,
    street_stream,
    with_crops,
)
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.box_set import BoxSet
from pipeline.filter.calibrate import Calibration
from pipeline.filter.camera_adaptation import (
    SHAPES,
    ReferenceData,
    adapt_filter,
    clip_drift,
    review_list,
    shaped_thresholds,
)
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.filter.id_collection import tracked_id_boxes
from pipeline.filter.track_verdicts import TrackVerdicts
from pipeline.kind_tally import cut_below
from pipeline.page_stamp import header_line
from pipeline.tracks import track_sequence

REVIEWED = (10, 30)  # answers of the simulated reviewer
EVERY_TRACK = "adapt + every clip track answered"  # the bound of what answers can do on a clip
RECIPES = ("bundled", "bundled, 5% in every bin", "calibrate --from, 5% in every bin", "adapt, 5% in every bin",
           "refit", "adapt",
           *(f"adapt + {n} answers" for n in REVIEWED), EVERY_TRACK, "confidence cut")
VERDICTS = ("frame", "track")


def simulated_answers(filt: HallucinationFilter, tracks: BoxSet, count: int) -> dict[int, bool]:
    """A reviewer who answers the `count` tracks `review_list` asks about from the ground truth: real when
    most of the track's boxes sit on an ID object."""
    truth = np.asarray(tracks.boxes.data["truth"])
    assert tracks.track_ids is not None  # a clip's tracked boxes
    answers = {}
    for entry in review_list(filt, tracks, count):
        mine = tracks.track_ids == entry["track"]
        answers[entry["track"]] = bool(np.mean(truth[mine] == ON_ID) > 0.5)
    return answers


def track_flags(ids: Sequence[np.ndarray], margins: Sequence[np.ndarray]) -> np.ndarray:
    """Track verdicts (TrackVerdicts at its defaults) of every box, frames in order; `ids`: each frame's
    ByteTrack ids (`track_sequence`), the same for every filter judged on these frames."""
    verdicts = TrackVerdicts()
    out = [verdicts.update(i, t, m)[1] for i, (t, m) in enumerate(zip(ids, margins))]
    return np.concatenate(out) if out else np.zeros(0, bool)


def _share(flags: np.ndarray, mask: np.ndarray) -> float | None:
    return float(flags[mask].mean()) if mask.any() else None


def judge(test: Street, flags: np.ndarray) -> dict[str, Any]:
    """ID flagged, caught, per ID class, per OoD kind and per hallucinated object, for `flags` over `test`."""
    label, kind, obj = test.concat("label"), test.concat("kind"), test.concat("obj")
    on_id, on_ood = label == ON_ID, label == ON_OOD
    per_class = {str(k): _share(flags, on_id & (kind == k)) for k in sorted(set(kind[on_id].tolist()))}
    per_kind = {str(k): _share(flags, on_ood & (kind == k)) for k in sorted(set(kind[on_ood].tolist()))}
    objects = sorted(set(obj[on_ood].tolist()))
    caught_objects = sum(1 for o in objects if flags[on_ood & (obj == o)].mean() > 0.5)
    return {"id_detections": int(on_id.sum()), "hallucinations": int(on_ood.sum()),
            "id_flagged": _share(flags, on_id), "caught": _share(flags, on_ood),
            "objects": len(objects), "objects_caught": caught_objects,
            "objects_caught_share": caught_objects / len(objects) if objects else None,
            "per_class": per_class, "per_kind": per_kind}


def confidence_cut(confidence: np.ndarray, label: np.ndarray, id_rate: float) -> np.ndarray:
    """Flags of a confidence cut that flags `id_rate` of the boxes on ID objects (`label`: what each box
    sits on; the ground truth sets the cut)."""
    conf = np.asarray(confidence, np.float64)
    return conf < cut_below(conf[label == ON_ID], id_rate)


def street_row(street: Street, detector: Any, bundled: HallucinationFilter, reference: ReferenceData | None,
               calibration_frames: int = CALIBRATION_FRAMES) -> dict[str, Any]:
    """Every recipe on one street: figures per verdict kind, what adapt chose, the interval and its coverage."""
    clip, test = street.part(0, calibration_frames), street.part(calibration_frames, len(street.frames))
    # each box carries what it sits on, for the simulated reviewer only (no recipe reads it otherwise)
    labelled = [d.with_data(truth=lab) for d, lab in zip(clip.frames, clip.label)]
    refused: dict[str, str] = {}
    try:
        tracks: BoxSet | None = tracked_id_boxes(labelled, detector, f"street {street.seed} frames 0-"
                                                 f"{calibration_frames - 1}", detector.config.conf)
    except GhostboxError as exc:  # a clip without tracks: only the filter as shipped is judged
        tracks, refused["every adaptation"] = None, str(exc)
    test_boxes = test.boxes()
    label = test.concat("label")
    row: dict[str, Any] = {"seed": street.seed, "clip_tracks": tracks.tracks if tracks else 0,
                           "clip_boxes": len(tracks.boxes) if tracks else 0, "recipes": {}}
    per_bin = HallucinationFilter(bundled.scorer, bundled.thresholds.with_shape("per-bin"), bundled.class_names,
                                  bundled.fingerprint, bundled.policy, bundled.metadata)
    filters: dict[str, HallucinationFilter | None] = {"bundled": bundled, "bundled, 5% in every bin": per_bin}

    def attempt(recipe: str, make: Callable[[], tuple[HallucinationFilter, Any]]) -> Any:
        # a recipe that refuses a street (every clip track scores like a hallucination) is reported, not fatal
        try:
            filters[recipe], report = make()
        except GhostboxError as exc:
            refused[recipe] = str(exc)
            return None
        return report

    if tracks is not None:
        started = time.perf_counter()
        row["psi"] = clip_drift(bundled, tracks)
        # today's README recipe: thresholds per class and bin moved after trimming tracks by their mean
        attempt("calibrate --from, 5% in every bin", lambda: (per_bin.recalibrate(tracks), None))
        attempt("adapt, 5% in every bin", lambda: adapt_filter(bundled, tracks, "thresholds", shape="per-bin"))
        if reference is not None:
            refit_report = attempt("refit", lambda: adapt_filter(bundled, tracks, "refit", reference))
            if refit_report is not None:
                row["refit_sides"] = {"id": refit_report.id_side, "outliers": refit_report.outlier_side}
        chosen = attempt("adapt", lambda: adapt_filter(bundled, tracks, "auto", reference))
        if chosen is not None:
            row["adapt_chose"], row["adapt_reason"] = chosen.mode, chosen.reason
        for n in (*REVIEWED, None):
            answers = simulated_answers(bundled, tracks, tracks.tracks if n is None else n)

            def answered(given: dict[int, bool] = answers) -> tuple[HallucinationFilter, Any]:
                return adapt_filter(bundled, tracks, "auto", reference, answers=given)

            attempt(EVERY_TRACK if n is None else f"adapt + {n} answers", answered)
        row["adapt_s"] = round(time.perf_counter() - started, 1)
    row["refused"] = refused
    cuts = np.cumsum([len(d) for d in test.frames])[:-1]
    test_tracks = track_sequence(test.frames)  # the same tracks under every filter: tracked once
    scored: dict[int, np.ndarray] = {}  # most recipes share the bundled scorer: score the boxes once per scorer
    for name, filt in filters.items():
        if filt is None:
            continue
        if id(filt.scorer) not in scored:
            scored[id(filt.scorer)] = filt.scorer.score(test_boxes)
        scores, thresholds, flags = filt.judge(test_boxes, scored[id(filt.scorer)])
        margins = np.split(scores - thresholds, cuts)
        entry: dict[str, Any] = {"frame": judge(test, flags),
                                 "track": judge(test, track_flags(test_tracks, margins))}
        check = filt.thresholds.held_out
        if check and not name.startswith("bundled"):
            entry["interval"] = [check["low"], check["high"]]
            entry["stated"] = check["rate"]
            measured = entry["frame"]["id_flagged"]
            entry["covered"] = measured is not None and check["low"] <= measured <= check["high"]
        row["recipes"][name] = entry
    base = row["recipes"].get("adapt")
    if base is not None:
        row["recipes"]["confidence cut"] = {
            v: judge(test, confidence_cut(test_boxes.confidence, label, base[v]["id_flagged"] or 0.0))
            for v in VERDICTS}
    row["test_id_detections"] = int((label == ON_ID).sum())
    row["test_hallucinations"] = int((label == ON_OOD).sum())
    return row


def summarise(rows: Sequence[dict[str, Any]], recipe: str, verdict: str, target: float = 0.05,
              within: float = 0.02) -> dict[str, Any]:
    """Median and worst over streets of one recipe's figures."""
    entries = [r["recipes"][recipe][verdict] for r in rows if recipe in r["recipes"]]
    flagged = [e["id_flagged"] for e in entries if e["id_flagged"] is not None]
    caught = [e["caught"] for e in entries if e["caught"] is not None]
    objects = [e["objects_caught_share"] for e in entries if e["objects_caught_share"] is not None]
    covered = [r["recipes"][recipe].get("covered") for r in rows if recipe in r["recipes"]]
    return {"streets": len(entries),
            "id_flagged_median": statistics.median(flagged) if flagged else None,
            "id_flagged_worst": max(flagged) if flagged else None,
            "within": sum(1 for f in flagged if abs(f - target) <= within + 1e-12),
            "caught_median": statistics.median(caught) if caught else None,
            "caught_worst": min(caught) if caught else None,
            "objects_caught_median": statistics.median(objects) if objects else None,
            "covered": sum(1 for c in covered if c) if any(c is not None for c in covered) else None}


def images_by_shape(bundled: HallucinationFilter, id_boxes: Detections, near: Detections,
                    far: Detections) -> dict[str, dict[str, float]]:
    """The bundled filter's thresholds in each shape on a world's labelled images: ID true positives
    flagged, near- and far-OoD hallucinations removed (no clip: the filter's own calibration)."""
    out: dict[str, dict[str, float]] = {}
    for shape in SHAPES:
        thresholds = shaped_thresholds(bundled, shape)

        def flagged(boxes: Detections, shaped: Calibration = thresholds) -> float:
            scores = bundled.scorer.score(boxes)
            return float(np.mean(scores < shaped.thresholds_for(boxes.class_id, boxes.class_confidence())))

        out[shape] = {"id_tp_flagged": flagged(id_boxes), "near_removed": flagged(near), "far_removed": flagged(far),
                      "id_boxes": len(id_boxes), "near_boxes": len(near), "far_boxes": len(far)}
    return out


def bench_streets(detector: Any, bundled: HallucinationFilter, development: Sequence[int], held_out: Sequence[int],
                  reference: ReferenceData | None, cache: Path | None, frames: int = FRAMES,
                  calibration_frames: int = CALIBRATION_FRAMES,
                  progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every recipe on every street; development and held-out streets apart."""
    started = time.perf_counter()
    result: dict[str, Any] = {"frames": frames, "calibration_frames": calibration_frames,
                              "development_seeds": list(development), "held_out_seeds": list(held_out),
                              "refit": reference is not None, "groups": {}}
    for group, seeds in (("development", development), ("held-out", held_out)):
        rows = []
        for seed in seeds:
            street = street_stream(detector, seed, frames, cache)
            if bundled.needs_crops:  # the cache keeps no pixels: the frames are rendered again
                street = with_crops(street)
            row = street_row(street, detector, bundled, reference, calibration_frames)
            rows.append(row)
            adapt = row["recipes"].get("adapt", row["recipes"]["bundled"])
            progress(f"{group} street {seed}: {row['clip_tracks']} clip tracks, adapt chose "
                     f"{row.get('adapt_chose', '-')}; ID flagged {_pct(adapt['frame']['id_flagged'])}, caught "
                     f"{_pct(adapt['frame']['caught'])} (track verdicts {_pct(adapt['track']['id_flagged'])}, "
                     f"{_pct(adapt['track']['caught'])})")
        result["groups"][group] = {
            "rows": rows,
            "summary": {r: {v: summarise(rows, r, v) for v in VERDICTS} for r in RECIPES
                        if any(r in row["recipes"] for row in rows)}}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown(result: dict[str, Any]) -> str:
    """The benchmark page: summary per group and recipe, then per street, per class and per kind."""
    lines = ["# Streets nobody tuned on", "", GENERATED, "", header_line(result["made"]), "",
             f"Each street is a world seed's stream of {result['frames']} frames. Every recipe adapts the "
             + (f"filter `{short_path(result['filter'])}` (\"bundled\" below)" if result.get("filter")
                else "bundled filter")
             + f" on frames 0-{result['calibration_frames'] - 1} without their ground truth and is judged on "
             f"frames {result['calibration_frames']}-{result['frames'] - 1} with it (the demo's occlusion-aware "
             "matching). Development seeds "
             f"{', '.join(map(str, result['development_seeds'])) or '-'} are the only ones methods, rules and "
             f"parameters were chosen on; held-out seeds {', '.join(map(str, result['held_out_seeds'])) or '-'} "
             "were fixed before and are only reported. The confidence cut flags as many ID detections as `adapt` "
             "on each street (set with the ground truth). 'within' counts streets whose ID flag rate is 5 +- 2 "
             "points; 'covered' those whose measured rate lies in the stated 95% interval.", ""]
    for group, data in result["groups"].items():
        if not data["rows"]:
            continue
        lines += [f"## {group} streets ({len(data['rows'])})", "",
                  "| recipe | verdicts | ID flagged, median | worst | within 5 +- 2 | caught, median | worst | "
                  "objects caught, median | interval covers |", "|---|---|---|---|---|---|---|---|---|"]
        for recipe, by_verdict in data["summary"].items():
            for verdict, s in by_verdict.items():
                covered = "-" if s["covered"] is None or verdict == "track" else f"{s['covered']} of {s['streets']}"
                lines.append(f"| {recipe} | {verdict} | {_pct(s['id_flagged_median'])} | {_pct(s['id_flagged_worst'])}"
                             f" | {s['within']} of {s['streets']} | {_pct(s['caught_median'])} | "
                             f"{_pct(s['caught_worst'])} | {_pct(s['objects_caught_median'])} | {covered} |")
        lines += ["", "Per street, frame verdicts (ID flagged / caught; adapt's stated interval):", "",
                  "| seed | clip tracks | drift PSI | adapt chose | " + " | ".join(RECIPES) + " | interval |",
                  "|---|---|---|---|" + "---|" * len(RECIPES) + "---|"]
        for row in data["rows"]:
            cells = []
            for recipe in RECIPES:
                e = row["recipes"].get(recipe)
                cells.append("-" if e is None else f"{_pct(e['frame']['id_flagged'])} / {_pct(e['frame']['caught'])}")
            adapt = row["recipes"].get("adapt", {})
            interval = adapt.get("interval")
            shown = "-" if interval is None else \
                f"{_pct(interval[0])}-{_pct(interval[1])} {'covers' if adapt.get('covered') else 'misses'}"
            psi_value = row.get("psi")
            lines.append(f"| {row['seed']} | {row['clip_tracks']} | "
                         f"{'-' if psi_value is None else f'{psi_value:.2f}'} | {row.get('adapt_chose', '-')} | "
                         + " | ".join(cells) + f" | {shown} |")
        for row in data["rows"]:
            for recipe, why in row.get("refused", {}).items():
                lines.append(f"- street {row['seed']}: `{recipe}` refused: {why}")
        lines += ["", "`adapt` per ID class (share flagged) and per OoD kind (share caught), frame verdicts:", ""]
        classes = sorted({c for r in data["rows"] for c in r["recipes"].get("adapt", {}).get("frame", {})
                          .get("per_class", {})})
        kinds = sorted({k for r in data["rows"] for k in r["recipes"].get("adapt", {}).get("frame", {})
                        .get("per_kind", {})})
        lines += ["| seed | " + " | ".join(classes) + " | " + " | ".join(kinds) + " |",
                  "|---|" + "---|" * (len(classes) + len(kinds))]
        for row in data["rows"]:
            frame = row["recipes"].get("adapt", row["recipes"]["bundled"])["frame"]
            lines.append(f"| {row['seed']} | " + " | ".join(_pct(frame["per_class"].get(c)) for c in classes) + " | "
                         + " | ".join(_pct(frame["per_kind"].get(k)) for k in kinds) + " |")
        lines.append("")
    images = result.get("images")
    if images:
        lines += [f"## Thresholds' shape on labelled images ({images['world']})", "",
                  "The bundled filter's own calibration, no clip: its one overall threshold against its thresholds "
                  "per class and confidence bin, on the world the filter was fitted on (a development world: its "
                  "id/val true positives and its near- and far-OoD test images' hallucinations).", "",
                  "| thresholds | ID TPs flagged | near-OoD removed | far-OoD removed |", "|---|---|---|---|"]
        for shape, row in images["shapes"].items():
            lines.append(f"| {shape} | {_pct(row['id_tp_flagged'])} | {_pct(row['near_removed'])} | "
                         f"{_pct(row['far_removed'])} |")
        lines.append("")
    lines.append(f"{result['seconds']:.0f} s in all (streams read from the cache where it had them).")
    return "\n".join(lines) + "\n"


def write_page(out: str | None, result: dict[str, Any], command: str) -> list[Path]:
    return write_result(out, "streets", result, command, page=markdown)
