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
        print(f"ghostbox/ultralytics ({backend}): {ratio:.3f}x  feature overhead {result['feature_overhead_pct'][backend]:+.1f}%")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0
