"""`ghostbox bench detector`: speed of ghostbox against Ultralytics, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmarks (speed against a baseline in one run)")
    which = parser.add_subparsers(dest="bench", metavar="WHAT", required=True)
    det = which.add_parser("detector", help="frames/s of ghostbox's detector vs Ultralytics predict, both backends")
    det.add_argument("--model", "-m", help=".pt model (default: the bundled street-world model)")
    det.add_argument("--source", help="image, folder or video to take frames from (default: bundled samples)")
    det.add_argument("--frames", type=int, default=40, help="frames per round")
    det.add_argument("--size", default="1280x720", help="frame size WxH when frames are resized (default 1280x720)")
    det.add_argument("--imgsz", type=int, default=640)
    det.add_argument("--conf", type=float, default=0.25)
    det.add_argument("--rounds", type=int, default=5)
    det.add_argument("--backends", default="pt,onnx")
    det.add_argument("--out", help="also write the figures to this JSON file")
    det.set_defaults(handler=run_detector)
    flt = which.add_parser("filter", help="OOD scoring cost per 50 boxes against the detector's time per frame")
    flt.add_argument("--model", "-m", help=".pt model whose frame time is the yardstick (default: bundled)")
    flt.add_argument("--imgsz", type=int, default=640)
    flt.add_argument("--feature-dim", type=int, help="feature size (default: the model's)")
    flt.add_argument("--boxes", type=int, default=50, help="boxes scored per call")
    flt.add_argument("--knn-bank", type=int, default=100_000)
    flt.add_argument("--repeats", type=int, default=200)
    flt.add_argument("--out", help="also write the figures to this JSON file")
    flt.set_defaults(handler=run_filter)
    stream = which.add_parser(
        "stream", help="`ghostbox run` vs Ultralytics predict(stream=True), transport per hop, live latency, memory")
    stream.add_argument("--model", "-m", help=".pt model (default: the bundled street-world model)")
    stream.add_argument("--source", help="video to run on (default: the synthetic world's stream, written once)")
    stream.add_argument("--video-frames", type=int, default=300, help="frames of the generated video")
    stream.add_argument("--imgsz", type=int, default=320)
    stream.add_argument("--conf", type=float, default=0.25)
    stream.add_argument("--batch", type=int, default=8, help="ghostbox worker batch (frames per forward pass)")
    stream.add_argument("--rounds", type=int, default=2, help="throughput rounds, alternating the two runners")
    stream.add_argument("--duration", type=float, default=0.0,
                        help="live run of this many seconds with a 30 fps source (300 for the acceptance figure)")
    stream.add_argument("--frames", type=int, default=0,
                        help="memory run of this many frames, lossless (10000 for the acceptance figure)")
    stream.add_argument("--out", help="also write the figures to this JSON file")
    stream.set_defaults(handler=run_stream)


def _frames(source: str | None, count: int, size: str) -> list[np.ndarray]:
    import cv2

    from pipeline.bundled import sample_images
    from pipeline.errors import GhostboxError
    from pipeline.sources.media_files import iter_frames

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise GhostboxError(f"--size: expected WxH like 1280x720, got '{size}'") from exc
    specs = [source] if source else [str(p) for p in sample_images()]
    if not specs:
        raise GhostboxError("no frames: pass --source (no bundled sample images found)")
    images = [f.image for _, f in zip(range(count), iter_frames(specs))]
    frames = [cv2.resize(images[i % len(images)], (width, height)) for i in range(count)]
    return frames


def run_detector(args: argparse.Namespace) -> int:
    from pipeline.bench.detector_speed import bench_detector
    from pipeline.bundled import default_model

    model = args.model or str(default_model())
    frames = _frames(args.source, args.frames, args.size)
    result = bench_detector(model, frames, imgsz=args.imgsz, conf=args.conf, rounds=args.rounds,
                            backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()))
    print(f"model {result['model']}  imgsz {result['imgsz']}  {result['frames']} frames "
          f"{result['frame_size'][0]}x{result['frame_size'][1]}  median of {result['rounds']} rounds")
    print(f"{'runner':<18}{'frames/s':>10}{'ms/frame':>10}{'boxes':>8}")
    for name, fps in result["fps"].items():
        print(f"{name:<18}{fps:>10.2f}{result['ms_per_frame'][name]:>10.2f}{result['boxes'][name]:>8}")
    for backend, ratio in result["ghostbox_over_ultralytics"].items():
        print(f"ghostbox/ultralytics ({backend}): {ratio:.3f}x  "
              f"feature overhead {result['feature_overhead_pct'][backend]:+.1f}%")
    _write_json(args.out, result)
    return 0


def run_stream(args: argparse.Namespace) -> int:
    from pipeline.bench.stream_speed import bench_stream
    from pipeline.bundled import default_model

    model = args.model or str(default_model())
    result = bench_stream(model, Path(args.source) if args.source else None, video_frames=args.video_frames,
                          imgsz=args.imgsz, conf=args.conf, rounds=args.rounds, batch=args.batch,
                          duration_s=args.duration, memory_frames=args.frames)
    tp = result["throughput"]
    print(f"model {result['model']}  imgsz {result['imgsz']}  video {result['frames']} frames")
    print(f"throughput: ghostbox run (lossless, 1 worker) {tp['ghostbox_fps']:.1f} frames/s, Ultralytics "
          f"predict(stream=True) {tp['ultralytics_fps']:.1f} frames/s: {tp['ghostbox_over_ultralytics']:.2f}x "
          f"(with process start-up {tp['ghostbox_wall_fps_with_startup']:.1f} frames/s)")
    print("transport, one hop (round trip / 2, encode + validate):")
    for name, figures in result["transport"].items():
        print(f"  {name:<18} p50 {figures['p50_ms']:.3f} ms  p99 {figures['p99_ms']:.3f} ms  "
              f"({figures['bytes']} bytes)")
    print("inside the pipeline (p50 ms): "
          + ", ".join(f"{k} {v['p50']:.1f}" for k, v in tp["pipeline_stages_ms"].items()))
    if "live" in result:
        live = result["live"]
        print(f"live {live['duration_s']:.0f} s at 30 fps: {live['frames_processed']} frames processed "
              f"({live['processed_fps']:.1f}/s), {live['dropped']} dropped; latency p99 first third "
              f"{live.get('p99_first_third_ms', 0):.0f} ms, last third {live.get('p99_last_third_ms', 0):.0f} ms, "
              f"trend {live.get('p99_slope_ms_per_min', 0):+.1f} ms/min; without the detector's own time: "
              f"{live.get('non_detect_p99_first_third_ms', 0):.0f} -> "
              f"{live.get('non_detect_p99_last_third_ms', 0):.0f} ms, "
              f"trend {live.get('non_detect_p99_slope_ms_per_min', 0):+.1f} ms/min")
    if "memory" in result:
        mem = result["memory"]
        total = mem.get("total", {})
        print(f"memory over {mem['frames']} frames: all stages {total.get('early_mb', 0):.0f} MB -> "
              f"{total.get('late_mb', 0):.0f} MB ({total.get('growth_pct', 0):+.1f}%)")
        for name, row in mem.get("per_stage", {}).items():
            print(f"  {name:<14} {row['early_mb']:.0f} -> {row['late_mb']:.0f} MB ({row['growth_pct']:+.1f}%)")
    _write_json(args.out, result)
    return 0


def run_filter(args: argparse.Namespace) -> int:
    """Time the detector on frames, then each scorer on a frame's worth of boxes, in one run."""
    import statistics
    import time

    from pipeline.bench.scorer_speed import bench_scorers
    from pipeline.bundled import default_model
    from pipeline.detect.detector import Detector

    model = args.model or str(default_model())
    detector = Detector(model=model, imgsz=args.imgsz, device="cpu", batch=1)
    frames = _frames(None, 20, "1280x720")
    detector.detect(frames[:2])
    times = []
    for frame in frames:
        start = time.perf_counter()
        detector.detect([frame])
        times.append(time.perf_counter() - start)
    frame_ms = 1000 * statistics.median(times)
    result = bench_scorers(feature_dim=args.feature_dim or detector.feature_dim, num_classes=len(detector.class_names),
                           batch=args.boxes, repeats=args.repeats, knn_bank=args.knn_bank)
    result["detector_ms_per_frame"] = round(frame_ms, 2)
    result["fraction_of_frame"] = {k: round(v / frame_ms, 4) for k, v in result["ms_per_batch"].items()}
    print(f"detector {model}: {frame_ms:.1f} ms/frame (imgsz {args.imgsz}, 1280x720, CPU)")
    print(f"{'score':<14}{'ms/' + str(args.boxes) + ' boxes':>14}{'of a frame':>12}{'fit s':>8}")
    for name, ms in result["ms_per_batch"].items():
        print(f"{name:<14}{ms:>14.3f}{100 * ms / frame_ms:>11.2f}%{result['fit_s'][name]:>8.2f}")
    knn = result.get("knn_bank") or {}
    if knn:
        shown = ", ".join(f"{k[:-3]} {v:.2f} ms" for k, v in knn.items() if k.endswith("_ms"))
        print(f"knn over a {knn['bank']:,}-feature bank, {args.boxes} boxes: {shown} "
              f"(index {knn.get('faiss_auto_index')}, nprobe {knn.get('ivf_nprobe')})")
    if "abet_train_s" in result:
        abet = result["abet_train_s"]
        print(f"abet training: {abet['seconds']:.2f} s for {abet['boxes']:,} boxes, {abet['epochs']} epochs")
    _write_json(args.out, result)
    return 0


def _write_json(path: str | None, result: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2))
