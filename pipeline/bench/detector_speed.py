"""Frames/s of ghostbox's detector against Ultralytics' predict, same frames, same model.

Five runners, interleaved round by round so that machine noise hits them alike:
    ultralytics-pt    YOLO(model.pt).predict(stream=True), one frame per batch
    ghostbox-pt       Detector(model.pt).detect([frame]) with logits and box features
    ghostbox-pt-roi   the same with box_features="head+roi" (RoI-aligned neck and backbone maps)
    ultralytics-onnx  YOLO(Ultralytics' own dynamic ONNX export).predict(stream=True)
    ghostbox-onnx     Detector(ghostbox's ONNX export).detect([frame])
The figure that matters is the ratio of each ghostbox runner to its Ultralytics twin.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.bundled import sample_images
from pipeline.detect.config import DEFAULT_CONF
from pipeline.detect.detector import Detector
from pipeline.detect.onnx_export import export_onnx
from pipeline.errors import GhostboxError
from pipeline.sources.media_files import MediaReport, iter_frames
from pipeline.ultralytics_env import import_ultralytics


def _ultralytics_runner(weights: str, imgsz: int, conf: float, frames: list[np.ndarray]) -> Callable[[], int]:
    from ultralytics import YOLO  # after import_ultralytics() (bench_detector) set its offline environment
    from ultralytics.engine.results import Results

    model = YOLO(weights, task="detect")

    def run() -> int:
        boxes = 0
        for result in model.predict(frames, imgsz=imgsz, conf=conf, stream=True, verbose=False, device="cpu"):
            assert isinstance(result, Results)  # predict yields one Results per frame
            boxes += len(result.boxes or [])
        return boxes

    return run


def _ghostbox_runner(weights: str, imgsz: int, conf: float, frames: list[np.ndarray],
                     box_features: str = "head") -> Callable[[], int]:
    detector = Detector(model=weights, imgsz=imgsz, conf=conf, device="cpu", batch=1, box_features=box_features)

    def run() -> int:
        boxes = 0
        for frame in frames:
            [dets] = detector.detect([frame])
            boxes += len(dets)
        return boxes

    return run


def sample_frames(source: str | None = None, count: int = 40, size: str = "1280x720",
                  report: MediaReport | None = None) -> list[np.ndarray]:
    """`count` frames of `size` (WxH) from an image, folder or video (default: the bundled samples), repeated
    when there are fewer; what the read skipped or cut goes to `report`."""
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise GhostboxError(f"--size: expected WxH like 1280x720, got '{size}'") from exc
    specs = [source] if source else [str(p) for p in sample_images()]
    if not specs:
        raise GhostboxError("no frames: pass --source (no bundled sample images found)")
    images = [f.image for _, f in zip(range(count), iter_frames(specs, report))]
    return [cv2.resize(images[i % len(images)], (width, height)) for i in range(count)]


def bench_detector(
    model: str, frames: list[np.ndarray], imgsz: int = 640, conf: float = DEFAULT_CONF, rounds: int = 5,
    backends: tuple[str, ...] = ("pt", "onnx"), workdir: str | Path | None = None,
) -> dict[str, Any]:
    import_ultralytics()
    from ultralytics import YOLO  # only once import_ultralytics() has set its offline environment

    tmp = Path(workdir or tempfile.mkdtemp(prefix="ghostbox-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    runners: dict[str, Callable[[], int]] = {}
    if "pt" in backends:
        runners["ultralytics-pt"] = _ultralytics_runner(model, imgsz, conf, frames)
        runners["ghostbox-pt"] = _ghostbox_runner(model, imgsz, conf, frames)
        runners["ghostbox-pt-roi"] = _ghostbox_runner(model, imgsz, conf, frames, "head+roi")
    if "onnx" in backends:
        # Ultralytics writes its export beside the weights: give it a copy in the work dir.
        copy = tmp / f"ultralytics-{Path(model).name}"
        shutil.copyfile(model, copy)
        plain = YOLO(str(copy)).export(format="onnx", imgsz=imgsz, dynamic=True, simplify=True, verbose=False)
        ours = export_onnx(model, tmp / "ghostbox.onnx", imgsz=imgsz)
        runners["ultralytics-onnx"] = _ultralytics_runner(str(plain), imgsz, conf, frames)
        runners["ghostbox-onnx"] = _ghostbox_runner(str(ours), imgsz, conf, frames)
    for run in runners.values():  # warm-up: first calls pay for allocation and kernel selection
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    boxes: dict[str, int] = {}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            boxes[name] = run()
            seconds[name].append(time.perf_counter() - start)
    n = len(frames)
    fps = {name: n / statistics.median(times) for name, times in seconds.items()}
    result: dict[str, Any] = {
        "model": str(model), "imgsz": imgsz, "frames": n, "rounds": rounds,
        "frame_size": list(frames[0].shape[:2][::-1]),
        "fps": {k: round(v, 2) for k, v in fps.items()},
        "ms_per_frame": {k: round(1000 / v, 2) for k, v in fps.items()},
        "boxes": boxes,
    }
    ratios = {}
    for backend in backends:
        if f"ghostbox-{backend}" in fps:
            ratios[backend] = round(fps[f"ghostbox-{backend}"] / fps[f"ultralytics-{backend}"], 3)
    if "ghostbox-pt-roi" in fps:
        ratios["pt-roi"] = round(fps["ghostbox-pt-roi"] / fps["ultralytics-pt"], 3)
    result["ghostbox_over_ultralytics"] = ratios
    result["feature_overhead_pct"] = {k: round((1 / v - 1) * 100, 1) for k, v in ratios.items()}
    return result
