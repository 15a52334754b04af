"""`ghostbox bench stream`: the streaming pipeline against Ultralytics, side by side, same video and model.

Figures (all in one JSON):
- throughput: `ghostbox run` (lossless, one worker, JSONL sink like `predict` without saving)
  against `YOLO(model).predict(video, stream=True)`, alternating round by round; ghostbox's
  figure is frames over the span from the first detection to the last frame written (the
  same span Ultralytics' loop is timed over: model loading excluded), and the wall time
  including process start-up is reported beside it;
- transport: one-way latency of one hop (round trip / 2, encode and validate included) for
  a frame and for a 50-box detections message, over ipc and tcp on loopback; and the
  per-hop times inside the pipeline run (queueing included);
- live (`--duration S`): a 30 fps source faster than the detector in live mode for S
  seconds; end-to-end latency p99 per 10 s window and its trend;
- memory (`--frames N`): resident memory of every stage process over an N-frame lossless
  run; growth from the first tenth of the run to its end.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import zmq

from pipeline.detect.config import DEFAULT_CONF
from pipeline.detections import Detections
from pipeline.stream import protocol as P
from pipeline.stream.config import graph_from_dict, resolve
from pipeline.stream.supervisor import Supervisor
from pipeline.synth import WorldConfig, render_stream_frame
from pipeline.ultralytics_env import import_ultralytics

log = logging.getLogger(__name__)


def write_synth_video(path: Path, frames: int, size: int = 320, seed: int = 0, fps: float = 30.0) -> Path:
    world = WorldConfig(seed=seed, width=size, height=size, stream_frames=frames, stream_fps=fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (size, size))
    for i in range(frames):
        writer.write(render_stream_frame(world, i)[0])
    writer.release()
    return path


def _video_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count


# -- runners ----------------------------------------------------------------------------------------

def ultralytics_fps(model: str, video: Path, imgsz: int, conf: float) -> tuple[float, int]:
    import_ultralytics()
    from ultralytics import YOLO  # only once import_ultralytics() has set its offline environment

    yolo = YOLO(model, task="detect")
    yolo.predict(np.zeros((imgsz, imgsz, 3), np.uint8), imgsz=imgsz, conf=conf, device="cpu", verbose=False)
    start = time.perf_counter()
    frames = 0
    for _ in yolo.predict(str(video), stream=True, imgsz=imgsz, conf=conf, device="cpu", verbose=False):
        frames += 1
    return frames / (time.perf_counter() - start), frames


def _graph(data: dict[str, Any], run_dir: Path) -> Any:
    return resolve(graph_from_dict(data, "bench"), run_dir)


def _records(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


class _RssSampler(threading.Thread):
    """Resident memory of every stage process (children of this one), every `interval_s`."""

    def __init__(self, interval_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        start = time.monotonic()
        while not self.stop_event.wait(self.interval_s):
            rss = {}
            for child in me.children(recursive=True):
                try:
                    cmd = child.cmdline()
                    name = cmd[cmd.index("pipeline.stream.stage_main") + 1]
                    rss[name] = child.memory_info().rss
                except (psutil.Error, ValueError, IndexError):
                    continue
            if rss:
                self.samples.append((time.monotonic() - start, rss))


def ghostbox_run(data: dict[str, Any], workdir: Path, stop_after_s: float | None = None,
                 sample_rss: bool = False) -> dict[str, Any]:
    """Run a graph under the supervisor in this process; its summary, records and RSS samples."""
    run_dir = Path(tempfile.mkdtemp(prefix="gbx-", dir="/tmp"))
    supervisor = Supervisor(_graph(data, run_dir), log_level="WARNING", remove_run_dir=True, status_every_s=1e9)
    sampler = _RssSampler() if sample_rss else None
    timer = threading.Timer(stop_after_s, supervisor.stop) if stop_after_s else None
    start = time.perf_counter()
    if sampler:
        sampler.start()
    if timer:
        timer.start()
    try:
        code = supervisor.run()
    finally:
        if timer:
            timer.cancel()
        if sampler:
            sampler.stop_event.set()
    wall = time.perf_counter() - start
    out = Path(data["sinks"][0]["out"])
    summary = json.loads((out / "summary.json").read_text())
    return {"code": code, "wall_s": wall, "summary": summary, "records": _records(out / "detections.jsonl"),
            "rss": sampler.samples if sampler else []}


def _base_graph(video: Path, model: str, imgsz: int, conf: float, out: Path, mode: str = "lossless",
                batch: int | None = None, workers: int | str = "auto", **source: Any) -> dict[str, Any]:
    return {
        "mode": mode, "sources": [{"id": "video", "uri": str(video), **source}],
        "detector": {"model": model, "imgsz": imgsz, "conf": conf, "device": "cpu", "batch": batch},
        "workers": {"count": workers},
        "sinks": [{"name": "out", "out": str(out), "video": False, "crops": False}],
    }


def steady_fps(records: list[dict[str, Any]]) -> float:
    first = min(r["t"]["detect_start"] for r in records)
    last = max(r["t"]["sink_out"] for r in records)
    return len(records) / (last - first)


# -- transport --------------------------------------------------------------------------------------

def hop_latency(url_kind: str, payload: str, rounds: int = 300) -> dict[str, float]:
    """One-way latency (round trip / 2) of one protocol message over PUSH/PULL pairs, median."""
    ctx = zmq.Context()
    if url_kind == "ipc":
        folder = tempfile.mkdtemp(prefix="gbx-", dir="/tmp")
        url_a, url_b = f"ipc://{folder}/a.sock", f"ipc://{folder}/b.sock"
    else:
        url_a, url_b = "tcp://127.0.0.1:*", "tcp://127.0.0.1:*"
    a_in, b_in = ctx.socket(zmq.PULL), ctx.socket(zmq.PULL)
    a_in.bind(url_a)
    b_in.bind(url_b)
    a_out, b_out = ctx.socket(zmq.PUSH), ctx.socket(zmq.PUSH)
    a_out.connect(b_in.getsockopt_string(zmq.LAST_ENDPOINT))
    b_out.connect(a_in.getsockopt_string(zmq.LAST_ENDPOINT))
    if payload.startswith("frame"):
        side = int(payload[5:] or 640)
        image = np.random.default_rng(0).integers(0, 255, (side, side, 3), np.uint8)
        message = P.encode(P.FRAME, "cam", [P.raw_part("image", image)], seq=0, frame=0, origin="x", epoch=1,
                           dropped=0, t={"capture": 0.0})
    else:
        n, nc, dim = 50, 10, 64
        rng = np.random.default_rng(0)
        dets = Detections(rng.random((n, 4), np.float32) * 100, rng.random(n, np.float32), np.zeros(n, np.int64),
                          rng.random((n, nc), np.float32), rng.random((n, dim), np.float32), np.zeros(n, np.int8),
                          class_names=tuple(str(i) for i in range(nc)), image_size=(640, 640))
        fields, parts = P.detections_parts(dets, crops="none")
        message = P.encode(P.DETECTIONS, "cam", parts, seq=0, **fields)
    times = []
    for i in range(rounds + 20):
        start = time.perf_counter()
        a_out.send_multipart(message, copy=False)
        P.decode(b_in.recv_multipart(copy=False))
        b_out.send_multipart(message, copy=False)
        P.decode(a_in.recv_multipart(copy=False))
        if i >= 20:
            times.append((time.perf_counter() - start) / 2)
    ctx.destroy(linger=0)
    return {"p50_ms": round(statistics.median(times) * 1000, 3),
            "p99_ms": round(float(np.percentile(times, 99)) * 1000, 3),
            "bytes": int(sum(len(memoryview(p).cast("B")) if not isinstance(p, bytes) else len(p) for p in message))}


# -- live and memory --------------------------------------------------------------------------------

def latency_windows(records: list[dict[str, Any]], window_s: float = 10.0, warmup_s: float = 10.0
                    ) -> dict[str, Any]:
    t0 = min(r["t"]["sink_out"] for r in records)
    windows: dict[int, list[tuple[float, float]]] = {}
    for r in records:
        age = r["t"]["sink_out"] - t0
        if age >= warmup_s:
            detect_ms = (r["t"]["detect_end"] - r["t"]["detect_start"]) * 1000
            windows.setdefault(int((age - warmup_s) // window_s), []).append((r["latency_ms"], detect_ms))
    rows = []
    for k, values in sorted(windows.items()):
        if len(values) < 5:
            continue
        latency = np.array([v[0] for v in values])
        detect = np.array([v[1] for v in values])
        # what is not the detector's own compute time: transport, queueing, waiting for a frame
        rest = latency - detect
        rows.append({"t_s": round(warmup_s + k * window_s, 1), "frames": len(values),
                     "p50_ms": round(float(np.percentile(latency, 50)), 1),
                     "p99_ms": round(float(np.percentile(latency, 99)), 1),
                     "detect_p50_ms": round(float(np.percentile(detect, 50)), 1),
                     "non_detect_p99_ms": round(float(np.percentile(rest, 99)), 1)})
    result: dict[str, Any] = {"windows": rows}
    if len(rows) >= 2:
        x = np.array([r["t_s"] for r in rows]) / 60.0
        y = np.array([r["p99_ms"] for r in rows])
        slope = float(np.polyfit(x, y, 1)[0])
        third = max(1, len(rows) // 3)
        rest = np.array([r["non_detect_p99_ms"] for r in rows])
        result.update({
            "p99_first_third_ms": round(float(np.median(y[:third])), 1),
            "p99_last_third_ms": round(float(np.median(y[-third:])), 1),
            "p99_slope_ms_per_min": round(slope, 2),
            "non_detect_p99_first_third_ms": round(float(np.median(rest[:third])), 1),
            "non_detect_p99_last_third_ms": round(float(np.median(rest[-third:])), 1),
            "non_detect_p99_slope_ms_per_min": round(float(np.polyfit(x, rest, 1)[0]), 2),
        })
    return result


def rss_growth(samples: list[tuple[float, dict[str, int]]]) -> dict[str, Any]:
    if len(samples) < 4:
        return {"samples": len(samples)}
    names = sorted(set().union(*(s for _, s in samples)))
    tenth = max(1, len(samples) // 10)
    out: dict[str, Any] = {"samples": len(samples), "duration_s": round(samples[-1][0], 1), "per_stage": {}}
    totals = []
    for _t, s in samples:
        totals.append(sum(s.values()))
    for name in names:
        series = [s[name] for _, s in samples if s.get(name)]
        if len(series) < 4:
            continue
        early = float(np.median(series[tenth:2 * tenth + 1]))
        late = float(np.median(series[-tenth:]))
        out["per_stage"][name] = {"early_mb": round(early / 2**20, 1), "late_mb": round(late / 2**20, 1),
                                  "growth_pct": round((late / early - 1) * 100, 2)}
    early, late = float(np.median(totals[tenth:2 * tenth + 1])), float(np.median(totals[-tenth:]))
    out["total"] = {"early_mb": round(early / 2**20, 1), "late_mb": round(late / 2**20, 1),
                    "growth_pct": round((late / early - 1) * 100, 2)}
    return out


# -- the benchmark ----------------------------------------------------------------------------------

def bench_stream(model: str, video: Path | None = None, video_frames: int = 300, imgsz: int = 320,
                 conf: float = DEFAULT_CONF, rounds: int = 2, batch: int | None = None, duration_s: float = 0.0,
                 memory_frames: int = 0, workers: int | str = "auto", workdir: Path | None = None) -> dict[str, Any]:
    work = Path(workdir or tempfile.mkdtemp(prefix="ghostbox-bench-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    if video is None:
        video = write_synth_video(work / "street.mp4", video_frames)
    frames = _video_frames(video)
    # the plan the runs below make for themselves (their graph's), not a second reckoning of it
    plan = graph_from_dict(_base_graph(video, model, imgsz, conf, work / "plan", batch=batch, workers=workers),
                           "bench").worker_plan()
    result: dict[str, Any] = {"model": model, "video": str(video), "frames": frames, "imgsz": imgsz,
                              "batch": plan.batch}
    result["workers"] = {"count": plan.count, "threads": plan.threads, "batch": plan.batch, "why": plan.why}

    # throughput, alternating so that machine noise hits both alike
    ours, theirs, walls = [], [], []
    last_run: dict[str, Any] = {}
    for r in range(rounds):
        fps, n = ultralytics_fps(model, video, imgsz, conf)
        theirs.append(fps)
        run = ghostbox_run(_base_graph(video, model, imgsz, conf, work / f"run{r}", batch=batch, workers=workers),
                           work)
        if run["code"] != 0 or len(run["records"]) != frames:
            raise RuntimeError(f"ghostbox run failed (code {run['code']}, {len(run['records'])}/{frames} frames)")
        ours.append(steady_fps(run["records"]))
        walls.append(frames / run["wall_s"])
        last_run = run
        log.info("round %d: ultralytics %.1f frames/s (%d frames), ghostbox %.1f frames/s", r, fps, n, ours[-1])
    result["throughput"] = {
        "ultralytics_fps": round(statistics.median(theirs), 2), "ghostbox_fps": round(statistics.median(ours), 2),
        "ghostbox_over_ultralytics": round(statistics.median(ours) / statistics.median(theirs), 3),
        "ghostbox_wall_fps_with_startup": round(statistics.median(walls), 2),
        "rounds": {"ultralytics": [round(v, 2) for v in theirs], "ghostbox": [round(v, 2) for v in ours]},
        "pipeline_stages_ms": last_run["summary"]["stages_ms"],
    }

    result["transport"] = {f"{kind}/{payload}": hop_latency(kind, payload)
                           for kind in ("ipc", "tcp") for payload in ("frame640", "frame320", "detections50")}

    if duration_s > 0:
        data = _base_graph(video, model, imgsz, conf, work / "live", mode="live", batch=batch, loop=True, fps=30.0)
        run = ghostbox_run(data, work, stop_after_s=duration_s)
        summary = run["summary"]
        result["live"] = {
            "duration_s": duration_s, "source_fps": 30.0, "frames_processed": summary["frames"],
            "processed_fps": summary["fps"], "dropped": summary["dropped"], "latency_ms": summary["latency_ms"],
            **latency_windows(run["records"]),
        }
    if memory_frames > 0:
        data = _base_graph(video, model, imgsz, conf, work / "memory", batch=batch, loop=True, max_frames=memory_frames)
        run = ghostbox_run(data, work, sample_rss=True)
        result["memory"] = {"frames": run["summary"]["frames"], "fps": run["summary"]["fps"], **rss_growth(run["rss"])}
    return result
