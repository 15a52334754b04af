"""`ghostbox bench crop`: what a crop model costs, per box and in the running pipeline, side by side.

Per box: the filter's scorer on the demo stream's own detections (crops cut at the frame's
resolution), in batches of 1, 16 and 64 boxes, with `threads` torch threads (the filter stage's
share of a small machine), against the same filter's box-feature member alone when the filter
is a fusion. Median of `repeats` calls.

In the pipeline: the demo graph (`synth:seed=0`, lossless, `workers` detector workers, tracks
on, no video) run with the filter under test and with the baseline filter, alternating round
by round; frames/s over the span from the first detection to the last frame written (start-up
excluded, as `bench stream`), and the wall time of the whole run beside it. The filter must
not become the bottleneck: the ratio (with / without) is the figure.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench.report import GENERATED, short_path, table, write_result
from pipeline.detections import Detections
from pipeline.filter.filter_file import load_filter, with_filter_features
from pipeline.page_stamp import header_line

BATCHES = (1, 16, 64)


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 3)


def demo_boxes(filter_path: str | Path, frames: int = 60, seed: int = 0) -> Detections:
    """The demo stream's detections (with crops) on its first `frames` frames, as the workers send them."""
    from pipeline import synth
    from pipeline.bundled import default_model
    from pipeline.detect.config import DetectorConfig
    from pipeline.detect.detector import Detector

    world = synth.WorldConfig(seed=seed, stream_frames=max(frames, 1))
    detector = Detector(with_filter_features(DetectorConfig(model=str(default_model()), batch=16),
                                             [str(filter_path)]))
    images = [synth.render_stream_frame(world, i)[0] for i in range(frames)]
    return Detections.merge([d for d in detector.detect(images, crops=True) if len(d)])


def per_box_ms(filter_path: str | Path, boxes: Detections, threads: int = 2, repeats: int = 20) -> dict[str, Any]:
    """Milliseconds per batch and per box of the filter's scorer (and of each fusion member)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # before loading: the crop model's ONNX session takes this count
    try:
        filt = load_filter(filter_path)
        scorers = {"filter": filt.scorer}
        for member in getattr(filt.scorer, "members", []):
            scorers[member.name] = member
        rows: dict[str, dict[str, Any]] = {}
        for name, scorer in scorers.items():
            rows[name] = {}
            for batch in BATCHES:
                part = boxes[np.arange(batch) % len(boxes)]
                ms = _median_ms(lambda p=part, s=scorer: s.score(p), repeats)
                rows[name][str(batch)] = {"ms_per_batch": ms, "ms_per_box": round(ms / batch, 4)}
    finally:
        torch.set_num_threads(before)
    return {"threads": threads, "repeats": repeats, "boxes": len(boxes), "rows": rows}


def pipeline_fps(filters: dict[str, str], frames: int = 300, workers: int = 2, rounds: int = 2,
                 seed: int = 0) -> dict[str, Any]:
    """The demo graph with each filter, alternating round by round: frames/s and wall seconds per run."""
    from pipeline.bench.stream_speed import ghostbox_run, steady_fps
    from pipeline.stream.demo import demo_config

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in filters}
    for _ in range(rounds):
        for name, path in filters.items():
            with tempfile.TemporaryDirectory(prefix="gbx-crop-bench-") as tmp:
                data = demo_config(str(Path(tmp) / "out"), frames=frames, seed=seed, workers=workers,
                                   filter_path=path, video=False, tracks=True)
                result = ghostbox_run(data, Path(tmp))
                runs[name].append({"code": result["code"], "fps": round(steady_fps(result["records"]), 2),
                                   "wall_s": round(result["wall_s"], 2), "frames": len(result["records"])})
    out: dict[str, Any] = {"frames": frames, "workers": workers, "rounds": rounds, "runs": runs, "median": {}}
    for name, items in runs.items():
        out["median"][name] = {"fps": round(statistics.median(r["fps"] for r in items), 2),
                               "wall_s": round(statistics.median(r["wall_s"] for r in items), 2)}
    return out


def bench_crop(filter_path: str, baseline_path: str, frames: int = 300, workers: int = 2, rounds: int = 2,
               threads: int = 2, box_frames: int = 60) -> dict[str, Any]:
    boxes = demo_boxes(filter_path, box_frames)
    result: dict[str, Any] = {"filter": str(filter_path), "baseline": str(baseline_path),
                              "per_box": per_box_ms(filter_path, boxes, threads)}
    stream = pipeline_fps({"with": str(filter_path), "baseline": str(baseline_path)}, frames, workers, rounds)
    result["pipeline"] = stream
    base = stream["median"]["baseline"]["fps"]
    result["fps_ratio"] = round(stream["median"]["with"]["fps"] / base, 3) if base else None
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [GENERATED, "", "# What a crop model costs", "", header_line(result["made"]), "",
             f"Filter `{short_path(result['filter'])}` against the baseline `{short_path(result['baseline'])}`.", "",
             f"## Per box ({result['per_box']['threads']} torch threads, median of {result['per_box']['repeats']} "
             f"calls, the demo stream's own boxes)", ""]
    head = ["scorer"] + [f"{b} boxes: ms (ms/box)" for b in BATCHES]
    rows = [[name] + [f"{v[str(b)]['ms_per_batch']:.2f} ({v[str(b)]['ms_per_box']:.3f})" for b in BATCHES]
            for name, v in result["per_box"]["rows"].items()]
    lines += table(head, rows)
    stream = result["pipeline"]
    lines += ["", f"## The demo stream through the pipeline ({stream['frames']} frames, {stream['workers']} workers, "
              f"tracks on, no video; {stream['rounds']} rounds alternating)", ""]
    rows = [[name, f"{m['fps']:.1f}", f"{m['wall_s']:.1f}",
             ", ".join(f"{r['fps']:.1f}" for r in stream["runs"][name])] for name, m in stream["median"].items()]
    lines += table(["filter", "frames/s (median)", "wall s (median)", "frames/s per round"], rows)
    ratio = result.get("fps_ratio")
    lines += ["", f"With the crop filter the pipeline runs at **{'n/a' if ratio is None else f'{100 * ratio:.0f}%'}** "
              f"of its frames/s with the baseline filter."]
    return "\n".join(lines) + "\n"


def write_page(out: str | Path | None, result: dict[str, Any], command: str) -> list[Path]:
    return write_result(out, "crop-model-cost", result, command, page=markdown)
