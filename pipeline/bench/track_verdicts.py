"""Per-track verdicts against per-frame ones on the street world's stream, and what tracking costs.

Quality, for each frame count: `synth:seed=S,frames=N` is rendered frame by frame
(`pipeline.synth.render_stream_frame`), detected with the bundled model at the demo's settings
(the model's own imgsz, conf 0.25, the box features the bundled filter needs) and filtered with
the bundled filter, in frame order. Each box's margin is its score minus its class's threshold;
its frame verdict is the filter's flag; ByteTrack (`pipeline.tracks.Tracker`) gives it a track
id and `TrackVerdicts(hysteresis=h)` a track verdict, for each h. Boxes are judged against the
frame's ground truth as `ghostbox demo` judges them (`pipeline.synth.truth_judging.score_against_truth`,
`match_occluded`): a box on an OoD object or a part of one is a hallucination (flagged, it is
caught); a box IoU-matched to an ID object and flagged is wrongly flagged. Flips per track:
frame level, how often the flag changes along a track's boxes; track level, how often its
track verdict changes (`TrackVerdicts.counts()`); the mean over tracks. AUROC (ID positive) of
box margins against the track's running mean margin (what the track verdict follows) and the
mean over the whole track (in hindsight: not available while streaming).

Cost: tracking plus track verdicts per frame, median ms, on a synthetic sequence of `objects`
moving boxes (Detections built directly) and on the stream's own frames, beside the detector's
time per frame measured in the same run (one frame per call, CPU).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import synth
from pipeline.bench.report import GENERATED, short_path, table, write_result
from pipeline.bundled import default_model
from pipeline.detect.config import DetectorConfig
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.filter_file import default_filter, load_filter, with_filter_features
from pipeline.filter.ood_metrics import auroc
from pipeline.filter.track_verdicts import TrackVerdicts
from pipeline.page_stamp import header_line
from pipeline.sources.synth_reader import parse_synth_uri
from pipeline.synth.truth_judging import judge_against_truth
from pipeline.tracks import Tracker

TITLE = "Track verdicts against frame verdicts"


def _auroc(id_scores: list[float], ood_scores: list[float]) -> float | None:
    return round(auroc(np.array(id_scores), np.array(ood_scores)), 4) if id_scores and ood_scores else None


def _median_ms(seconds: list[float]) -> float:
    return round(1e3 * statistics.median(seconds), 4) if seconds else 0.0


def _verdict_row(flags: np.ndarray, on_ood: np.ndarray, on_id: np.ndarray, row: dict[str, Any]) -> None:
    row["caught"] += int((flags & on_ood).sum())
    row["wrongly_flagged"] += int((flags & on_id).sum())


def bench_stream_quality(detector: Any, filter_path: str | Path, frames: int, seed: int = 0,
                         hysteresis: Sequence[float] = (0.0, 0.5, 1.0, 2.0), iou: float = 0.5) -> dict[str, Any]:
    """Frame against track verdicts on `frames` frames of the world of `seed`, and the time each step takes."""
    uri = f"synth:seed={seed},frames={frames}"
    world = synth.WorldConfig(**parse_synth_uri(uri))
    flt = load_filter(filter_path)
    tracker = Tracker()
    verdicts = {h: TrackVerdicts(hysteresis=h) for h in hysteresis}
    first = verdicts[hysteresis[0]]
    counts = {"boxes": 0, "tracked_boxes": 0, "hallucinations": 0, "id_detections": 0}
    rows: dict[str, dict[str, Any]] = {"frame": {"caught": 0, "wrongly_flagged": 0}}
    rows.update({f"track:{h:g}": {"caught": 0, "wrongly_flagged": 0} for h in hysteresis})
    last_flag: dict[int, bool] = {}  # frame-level verdict flips along each track
    frame_flips: dict[int, int] = {}
    margins: dict[str, list[float]] = {"id": [], "ood": []}
    running: dict[str, list[float]] = {"id": [], "ood": []}
    whole: list[tuple[int, bool, float]] = []  # (track, on ID, margin) for the hindsight mean
    track_sum: dict[int, list[float]] = {}
    times: dict[str, list[float]] = {"render": [], "detect": [], "filter": [], "track": [], "verdicts": []}
    for index in range(frames):
        t0 = time.perf_counter()
        image, truth = synth.render_stream_frame(world, index)
        t1 = time.perf_counter()
        [dets] = detector.detect([image], crops=flt.needs_crops)
        t2 = time.perf_counter()
        dets = flt.apply(dets)
        t3 = time.perf_counter()
        ids = tracker.update(dets)
        t4 = time.perf_counter()
        margin = (dets.data["score"].astype(np.float64) - dets.data["threshold"].astype(np.float64))
        track_score, first_verdict = first.update(index, ids, margin)
        t5 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            times[key].append(seconds)
        track_verdict = {hysteresis[0]: first_verdict}
        for h in hysteresis[1:]:
            track_verdict[h] = verdicts[h].update(index, ids, margin)[1]

        # ground truth, as score_against_truth matches it
        det = dets.xyxy.reshape(-1, 4).astype(np.float32)
        _, _, on_ood, on_id = judge_against_truth(det, truth, iou)
        flags = np.asarray(dets.data["hallucination"], bool)
        counts["boxes"] += len(det)
        counts["tracked_boxes"] += int((ids >= 0).sum())
        counts["hallucinations"] += int(on_ood.sum())
        counts["id_detections"] += int(on_id.sum())
        _verdict_row(flags, on_ood, on_id, rows["frame"])
        for h in hysteresis:
            _verdict_row(np.asarray(track_verdict[h], bool), on_ood, on_id, rows[f"track:{h:g}"])
        for i, track in enumerate(ids.tolist()):
            if on_id[i] or on_ood[i]:
                side = "id" if on_id[i] else "ood"
                margins[side].append(float(margin[i]))
                running[side].append(float(track_score[i]))
            if track < 0:
                continue
            if track in last_flag and last_flag[track] != bool(flags[i]):
                frame_flips[track] = frame_flips.get(track, 0) + 1
            last_flag[track] = bool(flags[i])
            frame_flips.setdefault(track, 0)
            total = track_sum.setdefault(track, [0.0, 0.0])
            total[0] += float(margin[i])
            total[1] += 1
            if on_id[i] or on_ood[i]:
                whole.append((track, bool(on_id[i]), float(margin[i])))

    hindsight: dict[str, list[float]] = {"id": [], "ood": []}
    for track, is_id, _ in whole:
        hindsight["id" if is_id else "ood"].append(track_sum[track][0] / track_sum[track][1])
    tracks = len(frame_flips)
    rows["frame"]["flips_per_track"] = round(sum(frame_flips.values()) / tracks, 3) if tracks else None
    rows["frame"]["flagged_tracks"] = None
    for h in hysteresis:
        c = verdicts[h].counts()
        rows[f"track:{h:g}"]["flips_per_track"] = round(c["flips"] / c["tracks"], 3) if c["tracks"] else None
        rows[f"track:{h:g}"]["flagged_tracks"] = c["hallucinations"]
    detect_ms = _median_ms(times["detect"])
    track_ms = _median_ms(times["track"])
    verdicts_ms = _median_ms(times["verdicts"])
    all_margins = margins["id"] + margins["ood"]
    return {
        "uri": uri, "frames": frames, "seed": seed, "hysteresis": list(hysteresis), **counts, "tracks": tracks,
        "rows": rows,
        "auroc": {"box_margin": _auroc(margins["id"], margins["ood"]),
                  "track_running_mean": _auroc(running["id"], running["ood"]),
                  "track_whole_mean": _auroc(hindsight["id"], hindsight["ood"])},
        "margin_abs_median": round(float(np.median(np.abs(all_margins))), 4) if all_margins else None,
        "ms_per_frame": {"render": _median_ms(times["render"]), "detect": detect_ms,
                         "filter": _median_ms(times["filter"]), "track": track_ms, "verdicts": verdicts_ms,
                         "track_and_verdicts": _median_ms([a + b for a, b in zip(times["track"],
                                                                                 times["verdicts"])])},
        "track_over_detect": round((track_ms + verdicts_ms) / detect_ms, 4) if detect_ms else None,
    }


def synthetic_boxes(objects: int = 20, frames: int = 500, size: tuple[int, int] = (1280, 720),
                    num_classes: int = 4, seed: int = 0) -> list[Detections]:
    """`objects` boxes moving at constant speed (bouncing off the frame's edges), with a little jitter."""
    rng = np.random.default_rng(seed)
    w, h = size
    wh = rng.uniform(30, 140, (objects, 2))
    pos = rng.uniform([0, 0], [w - 140, h - 140], (objects, 2))
    vel = rng.uniform(-6, 6, (objects, 2))
    conf = rng.uniform(0.5, 0.95, objects).astype(np.float32)
    cls = rng.integers(0, num_classes, objects)
    out = []
    for index in range(frames):
        pos = pos + vel
        over = (pos < 0) | (pos + wh > [w, h])
        vel = np.where(over, -vel, vel)
        pos = np.clip(pos, 0, np.array([w, h]) - wh)
        jitter = rng.normal(0, 1.0, (objects, 4))
        xyxy = np.concatenate([pos, pos + wh], axis=1) + jitter
        out.append(Detections(xyxy=xyxy.astype(np.float32), confidence=conf, class_id=cls,
                              logits=np.zeros((objects, num_classes), np.float32),
                              box_features=np.zeros((objects, 1), np.float32), level=np.zeros(objects, np.int8),
                              image_size=size, frame=index))
    return out


def bench_synthetic_cost(objects: int = 20, frames: int = 500, hysteresis: float = 0.5,
                         seed: int = 0) -> dict[str, Any]:
    """Median ms per frame of ByteTrack and of track verdicts over `objects` moving boxes."""
    sequence = synthetic_boxes(objects, frames, seed=seed)
    rng = np.random.default_rng(seed + 1)
    margins = [rng.normal(0.5, 1.0, objects) for _ in range(frames)]
    tracker, verdicts = Tracker(), TrackVerdicts(hysteresis=hysteresis)
    track_s, verdict_s, tracked = [], [], 0
    for index, (dets, margin) in enumerate(zip(sequence, margins)):
        t0 = time.perf_counter()
        ids = tracker.update(dets)
        t1 = time.perf_counter()
        verdicts.update(index, ids, margin)
        t2 = time.perf_counter()
        track_s.append(t1 - t0)
        verdict_s.append(t2 - t1)
        tracked += int((ids >= 0).sum())
    return {"objects": objects, "frames": frames, "hysteresis": hysteresis,
            "tracked_fraction": round(tracked / (objects * frames), 4), "tracks": verdicts.counts()["tracks"],
            "ms_per_frame": {"track": _median_ms(track_s), "verdicts": _median_ms(verdict_s),
                             "track_and_verdicts": _median_ms([a + b for a, b in zip(track_s, verdict_s)])}}


def bench_tracks(frames: Sequence[int] = (300,), seed: int = 0, hysteresis: Sequence[float] = (0.0, 0.5, 1.0, 2.0),
                 objects: int = 20, cost_frames: int = 500, model: str | None = None,
                 filter_path: str | None = None) -> dict[str, Any]:
    """Quality for each frame count, then the cost with `objects` synthetic boxes; one detector for all."""
    # heavy: the detector pulls torch and Ultralytics
    from pipeline.detect.detector import Detector

    if not frames or min(frames) < 1:
        raise GhostboxError(f"tracks bench: frame counts must be >= 1, got {list(frames)}")
    if not hysteresis:
        raise GhostboxError("tracks bench: give at least one hysteresis value")
    model = model or str(default_model())
    found = filter_path or default_filter()
    if found is None:
        raise GhostboxError("tracks bench: no bundled filter for the model (pass a filter)")
    # the demo's detector: the model's own imgsz, default conf, the filter's box features; one frame per call
    config = with_filter_features(DetectorConfig(model=model), [found])
    detector = Detector(config.model_copy(update={"batch": 1}))
    detector.warmup()
    runs = [bench_stream_quality(detector, found, n, seed=seed, hysteresis=hysteresis) for n in frames]
    cost = bench_synthetic_cost(objects, cost_frames, hysteresis=0.5 if 0.5 in hysteresis else hysteresis[0])
    detect_ms = statistics.median(r["ms_per_frame"]["detect"] for r in runs)
    cost["detect_ms_per_frame"] = detect_ms
    cost["track_over_detect"] = round(cost["ms_per_frame"]["track_and_verdicts"] / detect_ms, 4) if detect_ms else None
    return {"model": model, "filter": str(found), "imgsz": detector.imgsz,
            "conf": detector.config.conf, "box_features": detector.config.box_features,
            "device": str(detector.device), "runs": runs, "cost": cost}


# -- the page -------------------------------------------------------------------------------------

def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}% ({part} of {whole})" if whole else "n/a"


def _num(value: Any, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _run_md(r: dict[str, Any]) -> list[str]:
    ms = r["ms_per_frame"]
    lines = [f"## {r['frames']} frames: `{r['uri']}`", "",
             f"{r['boxes']} boxes ({100 * r['tracked_boxes'] / max(r['boxes'], 1):.0f}% in a track), "
             f"{r['hallucinations']} on OoD objects, {r['id_detections']} IoU-matched to ID objects; {r['tracks']} "
             f"tracks. Median |margin| of judged boxes: {_num(r['margin_abs_median'])}.", ""]
    rows = []
    for key, row in r["rows"].items():
        name = "frame verdict (the filter's flag)" if key == "frame" else f"track verdict, hysteresis {key[6:]}"
        rows.append([name, _pct(row["caught"], r["hallucinations"]), _pct(row["wrongly_flagged"], r["id_detections"]),
                     _num(row["flips_per_track"]),
                     "" if row["flagged_tracks"] is None else row["flagged_tracks"]])
    lines += table(["verdict", "hallucinations caught", "ID detections wrongly flagged", "flips per track",
                     "tracks ending flagged"], rows)
    a = r["auroc"]
    lines += ["AUROC, ID boxes against boxes on OoD objects (ID positive; 0.5 is chance):", ""]
    lines += table(["margin", "AUROC"], [["the box's own", _num(a["box_margin"], ".4f")],
                                          ["its track's running mean (what the track verdict follows)",
                                           _num(a["track_running_mean"], ".4f")],
                                          ["its track's mean over the whole track (hindsight)",
                                           _num(a["track_whole_mean"], ".4f")]])
    ratio = r["track_over_detect"]
    lines += [f"Time per frame on this stream (median ms): render {ms['render']:.2f}, detect {ms['detect']:.2f}, "
              f"filter {ms['filter']:.2f}, tracking {ms['track']:.3f}, track verdicts {ms['verdicts']:.3f} "
              f"(hysteresis {r['hysteresis'][0]:g}; each value costs the same); tracking + verdicts = "
              f"{_num(None if ratio is None else 100 * ratio, '.2f')}% of the detector's time.", ""]
    return lines


def markdown(result: dict[str, Any]) -> str:
    cost = result["cost"]
    lines = [f"# {TITLE}", "", GENERATED, "", header_line(result["made"]), "",
             f"Model `{short_path(result['model'])}` at imgsz {result['imgsz']}, conf {result['conf']:g}, box features "
             f"`{result['box_features']}`, one frame per call on `{result['device']}`; filter "
             f"`{short_path(result['filter'])}`; ByteTrack at Ultralytics' defaults. A box is caught or wrongly "
             "flagged as `ghostbox demo` scores it against the world's ground truth; flips per track are the mean over "
             "tracks of the verdict's changes along the track.", ""]
    for run in result["runs"]:
        lines += _run_md(run)
    ms = cost["ms_per_frame"]
    lines += [f"## Cost with {cost['objects']} objects", "",
              f"{cost['objects']} boxes moving across a 1280x720 frame for {cost['frames']} frames (Detections "
              f"built directly, {100 * cost['tracked_fraction']:.0f}% of boxes tracked, {cost['tracks']} tracks), "
              "median ms per frame, against the detector's median ms per frame on the stream above (the median over "
              "the runs); ByteTrack's time grows with the boxes and tracks it holds, not with the image:", ""]
    ratio = cost["track_over_detect"]
    lines += table(["step", "ms per frame", "of the detector's time"], [
        ["ByteTrack (`Tracker.update`)", f"{ms['track']:.3f}", ""],
        [f"track verdicts (`TrackVerdicts.update`, hysteresis {cost['hysteresis']:g})", f"{ms['verdicts']:.3f}", ""],
        ["tracking + track verdicts", f"{ms['track_and_verdicts']:.3f}",
         "n/a" if ratio is None else f"{100 * ratio:.2f}%"],
        ["detector (stream frames, same run)", f"{cost['detect_ms_per_frame']:.2f}", "100%"],
    ])
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def write_page(out: str | Path | None, result: dict[str, Any], command: str) -> list[Path]:
    """`report.write_result` with this bench's page: PATH.md, PATH.json, or a folder with tracks.md/.json."""
    return write_result(out, "tracks", result, command, page=markdown)
