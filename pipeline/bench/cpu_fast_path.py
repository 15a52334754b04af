"""`ghostbox bench cpu`: the CPU fast path against Ultralytics, whole processes side by side.

What a user of a CPU box compares: their `.pt` under Ultralytics' `YOLO(pt).predict(video,
stream=True)` against `ghostbox run` on the same video with the same `.pt`, with its ONNX
export (fp32) and with its int8 quantization, the last two also with a filter fitted for that
model on. Every figure is a whole process (`process_timer`: imports, loading, start-up and
shutdown included), and the runs go in rounds: each round runs every row once, in turn, so
that the machine's noise hits all rows alike. Figures are medians over the rounds; a ratio is
the median of the per-round ratios.

The steps, with the commands a user would type (all under `workdir`; exports and filters found
there are reused):
1. the video: the first `frames` frames of `video`, or the street world's stream (seed 0)
   rendered at `imgsz`; the start-up clip is its first `startup_frames` frames;
2. the calibration clip: `calibration`, or world seed 1's stream (not the measured frames);
3. `ghostbox export MODEL --imgsz N --int8 --calibration CLIP`: the fp32 and int8 ONNX models;
4. `ghostbox calibrate --model M --id CLIP --method knn` for each ONNX model (a filter is tied
   to the model it was fitted on: the fp32 model's is refused on the int8 one);
5. `rounds` rounds of Ultralytics and the `ghostbox run` rows; then `startup_rounds` rounds of
   Ultralytics against `ghostbox run` with the `.pt` on the start-up clip.

A `ghostbox run` that does not end complete with every frame written, or an Ultralytics run that
does not see every frame, is a failure: the row is reported failed and the command exits 1.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import yaml

from pipeline.bench.process_timer import ProcessRun, median_range, time_process
from pipeline.detect.config import DEFAULT_CONF
from pipeline.detect.model_source import sha256_file
from pipeline.errors import GhostboxError

# The rows of a round, in order: (name, model kind, with a filter). "ultralytics" is the baseline.
ROWS = (("ultralytics", "pt", False), ("pt", "pt", False), ("fp32", "fp32", False), ("fp32+filter", "fp32", True),
        ("int8", "int8", False), ("int8+filter", "int8", True))
LABELS = {
    "ultralytics": "Ultralytics `predict(stream=True)`, `.pt`",
    "pt": "`ghostbox run`, `.pt` (PyTorch)",
    "fp32": "`ghostbox run`, fp32 ONNX",
    "fp32+filter": "`ghostbox run`, fp32 ONNX + filter",
    "int8": "`ghostbox run`, int8 ONNX",
    "int8+filter": "`ghostbox run`, int8 ONNX + filter",
}
# Issue 27's targets: Ultralytics' wall over the row's (at least), a filter's cost over the same run
# without it (at most), and the start-up run's wall over Ultralytics' (at most, seconds).
SPEEDUP_TARGETS = {"int8": 3.0, "fp32": 2.0}
FILTER_TARGET = 0.05
STARTUP_TARGET_S = 1.0
FILTER_METHOD = "knn"  # cheap to score and needs no outliers: a user's first filter for a new model
TIMEOUT_S = 1800.0
SETTINGS_FILE = "bench-cpu.json"  # what a workdir's clips, models and filters were made from

# A plain Ultralytics user's loop: nothing of ghostbox is imported (the offline environment comes
# from the variables `import pipeline` set in this process, which the child inherits).
ULTRALYTICS = """import sys
from ultralytics import YOLO
frames = 0
for _ in YOLO(sys.argv[1]).predict(sys.argv[2], stream=True, imgsz=int(sys.argv[3]), conf=float(sys.argv[4]),
                                   device="cpu", verbose=False):
    frames += 1
print(f"frames {frames}")
"""


def ghostbox_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def cut_clips(source: Path, clips: dict[Path, int]) -> None:
    """The first `frames` frames of `source` into each clip (path -> frames), in one pass; an error naming the
    file when it has fewer frames or a clip cannot be written."""
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise GhostboxError(f"video '{source}': cannot be opened")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    writers: dict[Path, Any] = {}
    wanted = max(clips.values())
    read = 0
    try:
        while read < wanted:
            ok, frame = capture.read()
            if not ok:
                break
            for path, frames in clips.items():
                if read >= frames:
                    continue
                if path not in writers:
                    height, width = frame.shape[:2]
                    writers[path] = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
                    if not writers[path].isOpened():
                        raise GhostboxError(f"clip '{path}': cannot be written as mp4v")
                writers[path].write(frame)
            read += 1
    finally:
        capture.release()
        for writer in writers.values():
            writer.release()
    if read < wanted:
        raise GhostboxError(f"video '{source}': {read} frames, {wanted} asked for (--frames)")


def _settings_key(model: str, video: Path | None, frames: int, imgsz: int, calibration: Path | None,
                  calibration_frames: int | None, startup_frames: int) -> dict[str, Any]:
    """What the clips, models and filters in a workdir were made from: a workdir made otherwise is refused."""
    path = Path(model)
    return {"model": str(path.resolve()) if path.is_file() else model,
            "model_sha256": sha256_file(path) if path.is_file() else None,
            "video": str(video.resolve()) if video else None, "frames": frames, "imgsz": imgsz,
            "calibration": str(calibration.resolve()) if calibration else None,
            "calibration_frames": calibration_frames, "startup_frames": startup_frames}


def _claim_workdir(work: Path, key: dict[str, Any]) -> bool:
    """True when `work` already holds what `key` makes (reuse it); writes the key into a new workdir."""
    record = work / SETTINGS_FILE
    if record.exists():
        made = json.loads(record.read_text())
        differ = [f"{k} {made.get(k)!r}, not {v!r}" for k, v in key.items() if made.get(k) != v]
        if differ:
            raise GhostboxError(f"--workdir {work} holds clips, models and filters made with other settings ("
                                + "; ".join(differ) + "): give another --workdir or empty it")
        return True
    if any(work.iterdir()):
        raise GhostboxError(f"--workdir {work} is not empty and has no {SETTINGS_FILE}: give an empty or new folder")
    record.write_text(json.dumps(key, indent=2) + "\n")
    return False


def _step(what: str, argv: list[str], log: Path, progress: Callable[[str], None]) -> float:
    progress(f"{what}: {' '.join(argv[2:])}")
    run = time_process(argv, log, TIMEOUT_S)
    if run.code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise GhostboxError(f"{what} failed (exit {run.code}; log {log}): {' | '.join(tail)}")
    return run.wall_s


def prepare(model: str, work: Path, video: Path | None, frames: int, imgsz: int, calibration: Path | None,
            calibration_frames: int | None, startup_frames: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """The clips, the ONNX models and their filters; those a workdir made with the same settings holds are reused
    (listed in `reused`), and a workdir made with others is refused."""
    from pipeline.bench.stream_speed import write_synth_video  # renders the street world

    _claim_workdir(work, _settings_key(model, video, frames, imgsz, calibration, calibration_frames,
                                       startup_frames))
    reused: list[str] = []
    clip, startup = work / f"clip{frames}.mp4", work / f"clip{startup_frames}.mp4"
    if clip.exists() and startup.exists():
        reused += [clip.name, startup.name]
    elif video is None:
        progress(f"rendering {frames} frames of the street world (seed 0) at {imgsz} px")
        write_synth_video(clip, frames, size=imgsz, seed=0)
        write_synth_video(startup, startup_frames, size=imgsz, seed=0)  # the same first frames: rendered by index
    else:
        cut_clips(video, {clip: frames, startup: startup_frames})
    if calibration is None:
        calibration = work / "calibration.mp4"
        if calibration.exists():
            reused.append(calibration.name)
        else:
            progress(f"rendering the calibration clip: world seed 1, 200 frames at {imgsz} px")
            write_synth_video(calibration, 200, size=imgsz, seed=1)
    prep: dict[str, Any] = {"clip": str(clip), "startup_clip": str(startup), "calibration": str(calibration),
                            "steps_s": {}, "reused": reused}
    fp32, int8 = work / "model.onnx", work / "model.int8.onnx"
    if fp32.exists() and int8.exists():
        reused += [fp32.name, int8.name]
    else:
        frames_flag = ["--calibration-frames", str(calibration_frames)] if calibration_frames is not None else []
        prep["steps_s"]["export"] = _step("export", ghostbox_argv(
            "export", model, "--out", str(fp32), "--imgsz", str(imgsz), "--int8", "--calibration", str(calibration),
            *frames_flag), work / "logs" / "export.log", progress)
    prep["models"] = {"pt": model, "fp32": str(fp32), "int8": str(int8)}
    prep["filters"] = {}
    for kind in ("fp32", "int8"):
        path = work / f"{kind}.filter.safetensors"
        if path.exists():
            reused.append(path.name)
        else:
            prep["steps_s"][f"calibrate {kind}"] = _step(f"calibrate {kind}", ghostbox_argv(
                "calibrate", "--model", prep["models"][kind], "--imgsz", str(imgsz), "--id", str(calibration),
                "--method", FILTER_METHOD, "--out", str(path)), work / "logs" / f"calibrate-{kind}.log", progress)
        prep["filters"][kind] = str(path)
    if reused:
        progress(f"reused from {work} (made with the same settings): {', '.join(reused)}")
    return prep


def graph_file(work: Path, name: str, clip: str, model: str, imgsz: int, conf: float, filter_path: str | None) -> Path:
    graph: dict[str, Any] = {
        "sources": [{"id": "clip", "uri": clip}],
        "detector": {"model": model, "imgsz": imgsz, "conf": conf, "device": "cpu"},
        "tracks": {"enabled": False},
        "sinks": [{"name": "out", "out": str(work / "out" / name), "video": False, "crops": False,
                   "gallery": False}],
    }
    if filter_path:
        graph["filter"] = {"path": filter_path}
    path = work / "graphs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(graph, sort_keys=False))
    return path


def _ghostbox_row(run: ProcessRun, out: Path, frames: int) -> dict[str, Any]:
    """A `ghostbox run`'s figures, or why it failed (its summary must say complete, every frame written)."""
    row: dict[str, Any] = {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_mib": run.peak_mib}
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        return {**row, "failed": f"exit {run.code}, no summary ({exc})"}
    row.update(boxes=summary.get("boxes"), flagged=summary.get("flagged"))
    if run.code != 0 or summary.get("status") != "complete" or summary.get("frames") != frames:
        row["failed"] = (f"exit {run.code}{' (timed out)' if run.timed_out else ''}, {summary.get('status')}, "
                         f"{summary.get('frames')} of {frames} frames")
    return row


def _ultralytics_row(run: ProcessRun, log: Path, frames: int) -> dict[str, Any]:
    row: dict[str, Any] = {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_mib": run.peak_mib}
    said = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("frames ")]
    seen = int(said[-1].split()[1]) if said else None
    if run.code != 0 or seen != frames:
        row["failed"] = f"exit {run.code}{' (timed out)' if run.timed_out else ''}, {seen} of {frames} frames"
    return row


def run_once(name: str, kind: str, with_filter: bool, prep: dict[str, Any], work: Path, clip_key: str, frames: int,
             imgsz: int, conf: float, tag: str) -> dict[str, Any]:
    clip = prep[clip_key]
    log = work / "logs" / f"{tag}-{name}.log"
    if name == "ultralytics":
        run = time_process([sys.executable, "-c", ULTRALYTICS, prep["models"]["pt"], clip, str(imgsz), str(conf)],
                           log, TIMEOUT_S)
        return _ultralytics_row(run, log, frames)
    run_name = f"{tag}-{name}"
    out = work / "out" / run_name
    shutil.rmtree(out, ignore_errors=True)
    graph = graph_file(work, run_name, clip, prep["models"][kind], imgsz, conf,
                       prep["filters"][kind] if with_filter else None)
    return _ghostbox_row(time_process(ghostbox_argv("run", str(graph)), log, TIMEOUT_S), out, frames)


def bench_cpu(model: str, video: Path | None = None, frames: int = 200, imgsz: int = 640,
              calibration: Path | None = None, calibration_frames: int | None = None, conf: float = DEFAULT_CONF,
              rounds: int = 3, startup_frames: int = 10, startup_rounds: int = 5, workdir: Path | None = None,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every row `rounds` times in turn, then the start-up pair `startup_rounds` times; the result (see `summarise`)."""
    if min(frames, rounds, startup_frames, startup_rounds) < 1 or (calibration_frames is not None
                                                                  and calibration_frames < 1):
        raise GhostboxError("--frames, --rounds, --startup-frames, --startup-rounds and --calibration-frames "
                            "must be >= 1")
    if startup_frames > frames:
        raise GhostboxError(f"--startup-frames {startup_frames} is more than --frames {frames}")
    work = Path(workdir or tempfile.mkdtemp(prefix="ghostbox-bench-cpu-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prep = prepare(model, work, video, frames, imgsz, calibration, calibration_frames, startup_frames, progress)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in ROWS}
    for r in range(rounds):
        for name, kind, with_filter in ROWS:
            row = run_once(name, kind, with_filter, prep, work, "clip", frames, imgsz, conf, f"r{r}")
            runs[name].append(row)
            progress(f"round {r + 1}/{rounds} {name}: {row['wall_s']:.2f} s wall, {row['cpu_s']:.1f} s CPU"
                     + (f"  FAILED: {row['failed']}" if "failed" in row else ""))
    startup: dict[str, list[dict[str, Any]]] = {"ultralytics": [], "pt": []}
    for r in range(startup_rounds):
        for name in startup:
            row = run_once(name, "pt", False, prep, work, "startup_clip", startup_frames, imgsz, conf, f"s{r}")
            startup[name].append(row)
            progress(f"start-up round {r + 1}/{startup_rounds} {name}: {row['wall_s']:.2f} s wall"
                     + (f"  FAILED: {row['failed']}" if "failed" in row else ""))
    meta = {"model": model, "imgsz": imgsz, "conf": conf, "frames": frames, "video": str(video) if video else
            "street world seed 0", "calibration": str(calibration) if calibration else "street world seed 1",
            "calibration_frames": calibration_frames, "rounds": rounds, "startup_frames": startup_frames,
            "startup_rounds": startup_rounds, "filter_method": FILTER_METHOD,
            "prepare_s": prep["steps_s"], "reused": prep["reused"], "workdir": str(work)}
    result = summarise(runs, startup, meta)
    result["total_s"] = time.perf_counter() - started
    return result


def _ratios(top: list[dict[str, Any]], bottom: list[dict[str, Any]]) -> dict[str, float] | None:
    """Per-round wall ratios top / bottom over the rounds where both ran; None when none did."""
    pairs = [a["wall_s"] / b["wall_s"] for a, b in zip(top, bottom, strict=True)
             if "failed" not in a and "failed" not in b]
    return median_range(pairs) if pairs else None


def summarise(runs: dict[str, list[dict[str, Any]]], startup: dict[str, list[dict[str, Any]]],
              meta: dict[str, Any]) -> dict[str, Any]:
    """Medians per row, per-round ratios, the targets judged, and what failed."""
    rows = {}
    for name, got in runs.items():
        ok = [g for g in got if "failed" not in g]
        rows[name] = {"label": LABELS[name], "runs": got, "failed": [g["failed"] for g in got if "failed" in g],
                      **({"wall_s": median_range([g["wall_s"] for g in ok]),
                          "cpu_s": median_range([g["cpu_s"] for g in ok]),
                          "peak_mib": median_range([g["peak_mib"] for g in ok])} if ok else {})}
        if ok and "boxes" in ok[-1]:
            rows[name].update(boxes=ok[-1]["boxes"], flagged=ok[-1]["flagged"])
    speedup = {name: _ratios(runs["ultralytics"], runs[name]) for name in runs if name != "ultralytics"}
    overhead = {}
    for name in runs:
        if name.endswith("+filter"):
            ratio = _ratios(runs[name], runs[name.removesuffix("+filter")])
            overhead[name] = None if ratio is None else {k: v - 1.0 for k, v in ratio.items()}
    walls = {name: [g["wall_s"] for g in got if "failed" not in g] for name, got in startup.items()}
    pairs = [p["wall_s"] - u["wall_s"] for u, p in zip(startup["ultralytics"], startup["pt"], strict=True)
             if "failed" not in u and "failed" not in p]
    diff = median_range(pairs) if pairs else None
    start_failed = [g["failed"] for got in startup.values() for g in got if "failed" in g]
    start: dict[str, Any] = {"ultralytics_wall_s": median_range(walls["ultralytics"]) if walls["ultralytics"] else None,
                             "ghostbox_wall_s": median_range(walls["pt"]) if walls["pt"] else None,
                             "ghostbox_minus_ultralytics_s": diff, "failed": start_failed}
    targets = []
    for name, want in SPEEDUP_TARGETS.items():
        ratio = speedup.get(name)
        targets.append({"what": f"{name}: Ultralytics wall / ghostbox wall", "target": f">= {want:g}x",
                        "measured": None if ratio is None else round(ratio["median"], 3),
                        "met": ratio is not None and ratio["median"] >= want})
    for name, extra in overhead.items():
        targets.append({"what": f"{name}: wall over the same run without the filter",
                        "target": f"<= +{100 * FILTER_TARGET:g}%",
                        "measured": None if extra is None else round(extra["median"], 4),
                        "met": extra is not None and extra["median"] <= FILTER_TARGET})
    targets.append({"what": f"start-up, {meta['startup_frames']} frames, `.pt`: ghostbox wall - Ultralytics wall",
                    "target": f"<= {STARTUP_TARGET_S:g} s",
                    "measured": None if diff is None else round(diff["median"], 3),
                    "met": diff is not None and diff["median"] <= STARTUP_TARGET_S})
    failures = [f"{name}: {why}" for name, row in rows.items() for why in row["failed"]]
    failures += [f"start-up: {why}" for why in start_failed]
    return {**meta, "rows": rows, "speedup": speedup, "filter_overhead": overhead, "startup": start,
            "targets": targets, "failures": failures}


def _fmt(value: dict[str, float] | None, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    if value is None:
        return "failed"
    return f"{scale * value['median']:.{digits}f}{unit} ({scale * value['min']:.{digits}f}-" \
           f"{scale * value['max']:.{digits}f})"


def table_lines(r: dict[str, Any]) -> list[str]:
    """The markdown table of rows, then the targets."""
    lines = ["| run | wall s | CPU s | peak MiB (one process) | Ultralytics / this | boxes, flagged |",
             "|---|---|---|---|---|---|"]
    for name, row in r["rows"].items():
        ratio = "baseline" if name == "ultralytics" else _fmt(r["speedup"].get(name), "x")
        boxes = f"{row['boxes']}, {row['flagged']}" if row.get("boxes") is not None else ""
        lines.append(f"| {row['label']} | {_fmt(row.get('wall_s'))} | {_fmt(row.get('cpu_s'), digits=1)} | "
                     f"{_fmt(row.get('peak_mib'), digits=0)} | {ratio} | {boxes} |")
    start = r["startup"]
    lines += ["", f"Start-up ({r['startup_frames']} frames, {r['startup_rounds']} rounds): Ultralytics "
              f"{_fmt(start['ultralytics_wall_s'])} s, `ghostbox run` with the `.pt` "
              f"{_fmt(start['ghostbox_wall_s'])} s; "
              f"ghostbox - Ultralytics per round {_fmt(start['ghostbox_minus_ultralytics_s'])} s.", "",
              "| target (issue 27) | wanted | measured (median) | met |", "|---|---|---|---|"]
    for t in r["targets"]:
        measured = "failed" if t["measured"] is None else (
            f"{100 * t['measured']:+.1f}%" if "filter" in t["what"] else f"{t['measured']:g}")
        lines.append(f"| {t['what']} | {t['target']} | {measured} | {'yes' if t['met'] else 'no'} |")
    if r["failures"]:
        lines += ["", "Failed runs: " + "; ".join(r["failures"])]
    return lines


def page_lines(r: dict[str, Any]) -> list[str]:
    """The benchmark page's body: the setup, the table, how each row was run."""
    return [
        f"Model `{Path(r['model']).name}` at imgsz {r['imgsz']} (conf {r['conf']}), {r['frames']} frames of "
        f"{r['video']}, on {r['made']['machine']['cores']} core(s), no GPU. Whole processes, "
        f"{r['rounds']} rounds of every row in turn; "
        "medians (min-max) over the rounds, and each ratio the median of its per-round ratios.", "",
        *table_lines(r), "",
        "\"boxes, flagged\": the last round's boxes, and those its filter flagged. The filters are here to be "
        "timed: fitted on a short clip of the calibration world, their flag rate on the timed video says nothing of "
        "their quality (for that on real photos: [person-check.md](person-check.md)).", "",
        "How each row ran:",
        "- Ultralytics: `YOLO(model).predict(video, stream=True, imgsz, conf, device='cpu')` over every frame, in a "
        "fresh Python process.",
        "- `ghostbox run`: the video as its one source, `workers: auto` and the batch chosen for the machine "
        "(`pipeline/stream/worker_plan.py`), no tracks, no video or crop outputs, detections.jsonl written.",
        f"- The ONNX models: `ghostbox export MODEL --imgsz {r['imgsz']} --int8 --calibration CLIP "
        + (f" --calibration-frames {r['calibration_frames']}" if r["calibration_frames"] is not None else "")
        + f"`, with CLIP {r['calibration']} (not the measured frames).",
        *([f"- Reused from the workdir, made there with the same settings: {', '.join(r['reused'])}."]
          if r.get("reused") else []),
        f"- The filters: `ghostbox calibrate --model M --id CLIP --method {r['filter_method']}`, one per ONNX model.",
        "",
        "The accuracy of the int8 path (mAP, the filter's catch rate) is measured apart: "
        "[../detect.md](../detect.md#int8).",
        "",
    ]
