"""`ghostbox bench gpu`: the CUDA backends checked against the CPU and timed in `ghostbox run`.

On a machine with CUDA (`bench_gpu`):
- parity: the same frames through the CPU PyTorch backend (the reference) and through PyTorch
  CUDA fp32 and fp16 and ONNX Runtime CUDA fp32 (ghostbox's own export). Logits and features
  are compared as the network outputs them, every anchor of the same letterboxed input: a box's
  features are one anchor's column of that output, so this checks every box feature a frame
  could give without depending on which of two near-equal anchors NMS keeps. Boxes are
  compared as detections, matched by class and IoU. ONNX Runtime fp16 is asked for too, and
  reported as not supported when the detector falls back to float32 (ghostbox's ONNX models run
  in the precision they were exported in);
- throughput: lossless `ghostbox run` on 1, 4 and 16 copies of a generated 640-px street video,
  device cuda, for each backend that ran; frames/s from the first detection to the last row
  written (process start-up apart), and GPU memory sampled from `nvidia-smi` during the run
  (the worker is another process: its `torch.cuda.max_memory_allocated` is not visible here).

Without CUDA nothing is measured (the command says so and exits 0; CI runs that path). With CUDA, a
backend that exists but cannot run here (ONNX export failed, onnxruntime without its CUDA provider)
is reported as unavailable: the result's `unavailable` and the verdict line name it and why, and the
exit stays 0 when every backend measured passed (those are optional; the verdict does not claim them).

The code that touches CUDA is kept apart from pure functions (`parse_smi_csv`, `memory_peak`,
`compare`, `match_boxes`, `box_parity`, `parity_row`, `throughput_run`, `build_result`,
`summary_rows`, `table_text`, `summary_line`) that turn raw measurements into the result, its table
and its verdict, so the GPU path's parsing, table and verdict are tested on recorded output on
machines without a GPU.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.detect.config import DEFAULT_CONF
from pipeline.matching import box_iou

NO_CUDA = "no CUDA device: nothing measured"

# Scale-relative tolerance of logits and features against the CPU: max |gpu - cpu| over the
# largest |cpu| of the whole output. fp32: cuDNN runs float32 convolutions in TF32 by default
# (torch.backends.cudnn.allow_tf32; ONNX Runtime's CUDA provider likewise), a 10-bit mantissa
# whose rounding (~5e-4 per product) adds up over the network's layers, hence more than float32's
# own 1e-6. fp16: the same mantissa for every activation and weight, not only inside the convolutions.
FEATURE_TOLERANCE = {"fp32": 5e-3, "fp16": 2e-2}
# Matched boxes' corners, in pixels of the 640-px frames: the box decoder (DFL) takes an
# expectation over 16 bins times the stride (up to 32 px), so a bin's error moves a corner by
# a fraction of the stride; fp16 also holds 640-px coordinates to 0.25-0.5 px only.
BOX_TOLERANCE_PX = {"fp32": 0.5, "fp16": 2.0}
# Boxes kept on one side and not on the other, over the CPU's boxes: a box whose confidence is
# within the precision's error of the threshold may be kept by one backend only.
MAX_UNMATCHED = {"fp32": 0.01, "fp16": 0.03}
MATCH_IOU = 0.5

# The four rows of the table, in order: (name, backend, precision).
CANDIDATES = (("torch-cuda-fp32", "torch", "fp32"), ("torch-cuda-fp16", "torch", "fp16"),
              ("onnx-cuda-fp32", "onnx", "fp32"), ("onnx-cuda-fp16", "onnx", "fp16"))
ONNX_FP16 = ("ghostbox's ONNX models run in the precision they were exported in (float32); Detector(half=True) "
             "falls back to it")
SMI_QUERY = ["nvidia-smi", "--query-gpu=index,name,memory.used,memory.total", "--format=csv"]


# -- pure: nvidia-smi ------------------------------------------------------------------------------

def _smi_value(text: str) -> int | str | None:
    """'1234 MiB' -> 1234; '[N/A]' -> None; anything else as text."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):  # [N/A], [Not Supported]
        return None
    number = text.split()[0] if text else ""
    return int(number) if number.isdigit() else text


def parse_smi_csv(text: str) -> list[dict[str, Any]]:
    """Rows of `nvidia-smi --query-gpu=... --format=csv` (with or without header and units), keyed by query
    field ('memory.used'); MiB values as ints."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True))
    if "memory.used" in ",".join(rows[0]):  # the header line: 'memory.used [MiB]'
        keys = [cell.split(" [")[0].strip() for cell in rows[0]]
        rows = rows[1:]
    else:  # noheader: the order of SMI_QUERY
        keys = SMI_QUERY[1].split("=", 1)[1].split(",")
    return [{k: _smi_value(v) for k, v in zip(keys, row)} for row in rows if len(row) == len(keys)]


def _used(rows: list[dict[str, Any]]) -> int:
    return sum(int(r.get("memory.used") or 0) for r in rows)


def memory_peak(baseline: list[dict[str, Any]], samples: Sequence[list[dict[str, Any]]]) -> dict[str, Any] | None:
    """GPU memory of a run from nvidia-smi samples: memory.used summed over the GPUs, its peak, and the peak
    above the baseline taken just before the run (which holds this process's own CUDA context)."""
    samples = [s for s in samples if s]
    if not baseline or not samples:
        return None
    peak = max(_used(s) for s in samples)
    total = sum(int(r.get("memory.total") or 0) for r in baseline)
    return {"baseline_mib": _used(baseline), "peak_used_mib": peak, "peak_above_baseline_mib": peak - _used(baseline),
            "total_mib": total or None, "samples": len(samples)}


# -- pure: parity ----------------------------------------------------------------------------------

def compare(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Max abs difference, and that over the reference's largest magnitude (scale-relative: an elementwise
    ratio would blow up at the many values near zero)."""
    reference = np.asarray(reference, np.float64)
    got = np.asarray(got, np.float64)
    if reference.shape != got.shape:
        raise ValueError(f"shapes differ: {reference.shape} against {got.shape}")
    if reference.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0}
    diff = float(np.abs(reference - got).max())
    scale = float(np.abs(reference).max())
    return {"max_abs": diff, "max_rel": diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))}


def match_boxes(ref_xyxy: np.ndarray, ref_cls: np.ndarray, got_xyxy: np.ndarray, got_cls: np.ndarray,
                iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Greedy pairs (reference index, candidate index), highest IoU first, same class, IoU >= `iou`."""
    ious = box_iou(np.asarray(ref_xyxy, np.float64), np.asarray(got_xyxy, np.float64))
    if ious.size == 0:
        return []
    ious = np.where(np.asarray(ref_cls)[:, None] == np.asarray(got_cls)[None, :], ious, 0.0)
    pairs: list[tuple[int, int]] = []
    while True:
        i, j = np.unravel_index(int(np.argmax(ious)), ious.shape)
        if ious[i, j] < iou:
            return sorted(pairs)
        pairs.append((int(i), int(j)))
        ious[i, :] = 0.0
        ious[:, j] = 0.0


def box_parity(reference: Sequence[tuple[np.ndarray, np.ndarray]],
               candidate: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Matched boxes of each frame (xyxy, class ids) against the reference's: counts and corner differences."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference frames against {len(candidate)}")
    ref_corners, got_corners = [], []
    boxes = got_boxes = unmatched = 0
    for (rx, rc), (gx, gc) in zip(reference, candidate):
        pairs = match_boxes(rx, rc, gx, gc)
        boxes += len(rx)
        got_boxes += len(gx)
        unmatched += (len(rx) - len(pairs)) + (len(gx) - len(pairs))
        ref_corners += [np.asarray(rx)[i] for i, _ in pairs]
        got_corners += [np.asarray(gx)[j] for _, j in pairs]
    diff = compare(np.array(ref_corners).reshape(-1, 4), np.array(got_corners).reshape(-1, 4))
    return {"reference_boxes": boxes, "boxes": got_boxes, "matched": len(ref_corners), "unmatched": unmatched,
            "max_abs_px": diff["max_abs"], "max_rel": diff["max_rel"]}


def parity_row(precision: str, logits: dict[str, float], features: dict[str, float],
               boxes: dict[str, Any], peak_allocated_mib: float | None = None) -> dict[str, Any]:
    """One measured candidate against the tolerances of its precision: its figures and pass/fail."""
    tol, box_tol, max_unmatched = FEATURE_TOLERANCE[precision], BOX_TOLERANCE_PX[precision], MAX_UNMATCHED[precision]
    unmatched_fraction = boxes["unmatched"] / max(boxes["reference_boxes"], 1)
    checks = {"logits": logits["max_rel"] <= tol, "features": features["max_rel"] <= tol,
              "boxes": boxes["max_abs_px"] <= box_tol, "unmatched": unmatched_fraction <= max_unmatched}
    return {"status": "measured", "precision": precision, "logits": logits, "features": features, "boxes": boxes,
            "unmatched_fraction": round(unmatched_fraction, 4), "peak_allocated_mib": peak_allocated_mib,
            "checks": checks, "pass": all(checks.values())}


def skipped_row(precision: str, status: str, reason: str) -> dict[str, Any]:
    """A candidate that was not measured: 'not supported' (no such path) or 'unavailable' (not on this machine)."""
    return {"status": status, "precision": precision, "reason": reason, "pass": None}


# -- pure: throughput ------------------------------------------------------------------------------

def stream_graph(video: Path, model: str, imgsz: int, out: Path, streams: int, frames: int, batch: int,
                 workers: int, half: bool, device: str = "cuda") -> dict[str, Any]:
    """The `ghostbox run` graph of one throughput run: `streams` looped copies of `video`, `frames` in all."""
    per_stream = max(1, -(-frames // streams))
    return {
        "mode": "lossless",
        "sources": [{"id": f"cam{i}", "uri": str(video), "loop": True, "max_frames": per_stream}
                    for i in range(streams)],
        "detector": {"model": model, "imgsz": imgsz, "conf": DEFAULT_CONF, "device": device, "batch": batch,
                     "half": half},
        "workers": {"count": workers},
        # tracking is the sink's CPU work per box, not the GPU's: left out, as are video and crops
        "tracks": {"enabled": False},
        "sinks": [{"name": "out", "out": str(out), "video": False, "crops": False, "gallery": False}],
    }


def throughput_run(backend: str, streams: int, expected: int, code: int | None, rows: int, fps: float | None,
                   wall_s: float | None, memory: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    """One run's figures; `ok` when it exited 0 with a row for every frame."""
    return {"backend": backend, "streams": streams, "frames": expected, "rows": rows, "code": code,
            "fps": None if fps is None else round(fps, 2),
            "wall_fps": round(rows / wall_s, 2) if wall_s else None,
            "wall_s": None if wall_s is None else round(wall_s, 2), "gpu_memory": memory, "error": error,
            "ok": code == 0 and rows == expected and error is None}


# -- pure: the result and its table ----------------------------------------------------------------

def build_result(meta: dict[str, Any], parity: dict[str, dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The result `write_result` stamps and writes: settings and versions, parity rows, runs, tolerances.

    `passed` judges the backends measured; `unavailable` names those that exist but could not be measured on
    this machine (ONNX export failed, onnxruntime without its CUDA provider), with why, so that a pass is
    never read as covering them. 'not supported' rows (no such path, e.g. ONNX fp16) are not in it."""
    measured = [row for row in parity.values() if row["status"] == "measured"]
    return {**meta, "tolerances": {"features_rel": FEATURE_TOLERANCE, "boxes_px": BOX_TOLERANCE_PX,
                                   "unmatched": MAX_UNMATCHED, "match_iou": MATCH_IOU},
            "parity": parity, "runs": runs,
            "unavailable": {name: row["reason"] for name, row in parity.items() if row["status"] == "unavailable"},
            "passed": bool(measured) and all(row["pass"] for row in measured) and all(r["ok"] for r in runs)}


def summary_line(result: dict[str, Any]) -> str:
    """The verdict printed under the table: pass or fail, and every backend that was not measured, with why."""
    unavailable = result.get("unavailable") or {}
    skipped = ("; not measured: " + ", ".join(f"{name} ({why})" for name, why in unavailable.items())
               if unavailable else "")
    if result["passed"]:
        return "all checks passed for the backends measured" + skipped if unavailable else "all checks passed"
    if not any(row["status"] == "measured" for row in result["parity"].values()):
        return "FAILED: no backend was measured" + skipped
    return "some checks FAILED (see the table)" + skipped


def _sci(value: float | None) -> str:
    return "" if value is None else f"{value:.1e}"


def summary_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The one table (header, rows): a row per backend and precision, its parity and its runs."""
    streams = sorted({r["streams"] for r in result["runs"]}) or list(result.get("streams", ()))
    head = ["backend", "logits rel", "features rel", "boxes px", "unmatched", "parity",
            *(f"frames/s x{n}" for n in streams), "GPU MiB"]
    rows = []
    for name, row in result["parity"].items():
        if row["status"] != "measured":
            rows.append([name, f"{row['status']}: {row['reason']}", *[""] * (len(head) - 2)])
            continue
        boxes = row["boxes"]
        cells = [name, _sci(row["logits"]["max_rel"]), _sci(row["features"]["max_rel"]), f"{boxes['max_abs_px']:.3f}",
                 f"{boxes['unmatched']}/{boxes['reference_boxes']}", "pass" if row["pass"] else "FAIL"]
        runs = {r["streams"]: r for r in result["runs"] if r["backend"] == name}
        for n in streams:
            run = runs.get(n)
            if run is None:
                cells.append("")
            elif not run["ok"]:
                cells.append("failed")
            else:
                cells.append(f"{run['fps']:.1f}")
        peaks = [r["gpu_memory"]["peak_above_baseline_mib"] for r in runs.values() if r.get("gpu_memory")]
        cells.append(str(max(peaks)) if peaks else "")
        rows.append(cells)
    return head, rows


def run_line(run: dict[str, Any]) -> str:
    """One throughput run as a progress line."""
    head = f"{run['backend']} x{run['streams']} streams: "
    if not run["ok"]:
        why = f", {run['error']}" if run["error"] else ""
        return head + f"FAILED (code {run['code']}, {run['rows']}/{run['frames']} rows{why})"
    memory = run["gpu_memory"]
    shown = f"GPU +{memory['peak_above_baseline_mib']} MiB" if memory else "GPU memory n/a (no nvidia-smi)"
    return head + f"{run['fps']:.1f} frames/s ({run['rows']} frames, {run['wall_s']:.1f} s with start-up), {shown}"


def table_text(result: dict[str, Any]) -> str:
    """The table as printed: columns padded, skipped rows on one line."""
    head, rows = summary_rows(result)
    full = [r for r in rows if any(r[2:])]
    widths = [max(len(str(r[i])) for r in [head, *full]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)).rstrip()]
    for row in rows:
        if row in full:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        else:
            lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
    return "\n".join(lines)


# -- what touches CUDA -----------------------------------------------------------------------------

def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def no_cuda_line() -> str:
    """The no-CUDA line, with why when nvidia-smi sees a GPU that torch cannot use."""
    import torch

    rows = _smi() if shutil.which("nvidia-smi") else []
    if rows:
        return (f"{NO_CUDA} (nvidia-smi lists {', '.join(str(r.get('name')) for r in rows)}, but torch "
                f"{torch.__version__} built for CUDA {torch.version.cuda} cannot use it: is the driver older?)")
    return NO_CUDA


def _smi() -> list[dict[str, Any]]:
    """nvidia-smi's rows now; none when it is missing or fails."""
    try:
        return parse_smi_csv(subprocess.run(SMI_QUERY, capture_output=True, text=True, timeout=10).stdout)
    except (OSError, subprocess.SubprocessError):
        return []


class _SmiSampler(threading.Thread):
    """nvidia-smi's memory.used every `interval_s` while a run goes on."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.samples: list[list[dict[str, Any]]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append(_smi())
            self.stop_event.wait(self.interval_s)


def _versions(device: str) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    out: dict[str, Any] = {"device": device, "gpu": gpu, "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                           "tf32": {"cudnn": torch.backends.cudnn.allow_tf32,
                                    "matmul": torch.backends.cuda.matmul.allow_tf32}}
    try:
        import onnxruntime as ort

        out["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except ImportError:
        out["onnxruntime"] = None
    return out


def _raw(detector: Any, images: Any) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) of every anchor for the reference's letterboxed batch, in the detector's precision."""
    import torch

    with torch.inference_mode():
        batch = images.to(detector.device)
        _head, logits, features, *_maps = detector.backend.forward(batch.half() if detector.half else batch.float())
    return logits.float().cpu().numpy(), features.float().cpu().numpy()


def _measure_parity(model: str, onnx_model: Path | None, onnx_reason: str | None, frames: list[np.ndarray],
                    imgsz: int, batch: int, device: str, progress: Callable[[str], None]
                    ) -> dict[str, dict[str, Any]]:
    import torch

    from pipeline.detect.detector import Detector

    cuda = device.startswith("cuda")
    reference = Detector(model=model, imgsz=imgsz, device="cpu", batch=batch)
    chunks = [frames[i:i + batch] for i in range(0, len(frames), batch)]
    # the reference's own letterbox (a private step of Detector) so every candidate sees the same tensor
    images = [reference._letterbox(chunk) for chunk in chunks]
    ref_raw = [_raw(reference, im) for im in images]
    ref_boxes = [(d.xyxy, d.class_id) for d in reference.detect(frames)]
    progress(f"parity: CPU reference, {len(frames)} frames, {sum(len(b[0]) for b in ref_boxes)} boxes")
    rows: dict[str, dict[str, Any]] = {}
    for name, backend, precision in CANDIDATES:
        half = precision == "fp16"
        if backend == "onnx" and onnx_model is None:
            rows[name] = skipped_row(precision, "unavailable", onnx_reason or "no ONNX model")
            continue
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            detector = Detector(model=str(onnx_model) if backend == "onnx" else model, imgsz=imgsz, device=device,
                                batch=batch, half=half)
        except Exception as exc:  # noqa: BLE001 - e.g. onnxruntime without its CUDA provider: say so, go on
            rows[name] = skipped_row(precision, "unavailable", str(exc).splitlines()[0][:200])
            progress(f"parity: {name} unavailable ({rows[name]['reason']})")
            continue
        if half and not detector.half and (cuda or backend == "onnx"):  # asked for fp16, given fp32: no such path
            rows[name] = skipped_row(precision, "not supported", ONNX_FP16 if backend == "onnx" else
                                     "Detector(half=True) fell back to float32")
            progress(f"parity: {name} not supported")
            continue
        providers = getattr(detector.backend, "providers", None)
        # ONNX Runtime falls back to the CPU when its CUDA libraries do not load: not a CUDA figure
        if cuda and providers is not None and "CUDAExecutionProvider" not in providers:
            rows[name] = skipped_row(precision, "unavailable", f"onnxruntime ran on {', '.join(providers)}")
            progress(f"parity: {name} unavailable ({rows[name]['reason']})")
            continue
        raw = [_raw(detector, im) for im in images]
        logits = compare(np.concatenate([r[0] for r in ref_raw]), np.concatenate([r[0] for r in raw]))
        features = compare(np.concatenate([r[1] for r in ref_raw]), np.concatenate([r[1] for r in raw]))
        boxes = box_parity(ref_boxes, [(d.xyxy, d.class_id) for d in detector.detect(frames)])
        # torch's own allocator; ONNX Runtime's CUDA memory is its own arena, not counted here
        peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if backend == "torch" and cuda else None
        rows[name] = parity_row(precision, logits, features, boxes, peak)
        progress(f"parity: {name}: logits rel {logits['max_rel']:.1e}, features rel {features['max_rel']:.1e}, "
                 f"boxes {boxes['max_abs_px']:.3f} px, unmatched {boxes['unmatched']}/{boxes['reference_boxes']}: "
                 f"{'pass' if rows[name]['pass'] else 'FAIL'}")
        del detector
    if cuda:
        torch.cuda.empty_cache()
    return rows


def _measure_run(name: str, graph: dict[str, Any], workdir: Path, expected: int) -> dict[str, Any]:
    from pipeline.bench.stream_speed import ghostbox_run, steady_fps

    count = len(graph["sources"])
    baseline = _smi()
    sampler = _SmiSampler()
    sampler.start()
    try:
        run = ghostbox_run(graph, workdir)
    except Exception as exc:  # noqa: BLE001 - one failed run is a row of the table, not the end of the check
        return throughput_run(name, count, expected, None, 0, None, None, None,
                              error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    finally:
        sampler.stop_event.set()
        sampler.join(timeout=15)
    records = run["records"]
    return throughput_run(name, count, expected, run["code"], len(records),
                          steady_fps(records) if records else None, run["wall_s"],
                          memory_peak(baseline, sampler.samples))


def bench_gpu(model: str, imgsz: int = 640, parity_frames: int = 16, frames: int = 960,
              streams: tuple[int, ...] = (1, 4, 16), batch: int = 16, workers: int = 1,
              workdir: Path | None = None, progress: Callable[[str], None] = print,
              device: str = "cuda") -> dict[str, Any]:
    """Parity of every CUDA backend against the CPU, then `ghostbox run` throughput and GPU memory; needs CUDA.

    `frames` is per configuration (split over the streams), `batch` the worker's frames per forward pass.
    `device="cpu"` runs the same steps on the CPU (fp16 falls back to fp32 there): a smoke test of the
    orchestration on machines without a GPU, not a measurement.
    """
    from pipeline.bench.stream_speed import write_synth_video
    from pipeline.detect.onnx_export import export_onnx
    from pipeline.synth import WorldConfig, render_stream_frame

    work = Path(workdir or tempfile.mkdtemp(prefix="ghostbox-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    meta: dict[str, Any] = {"model": model, "imgsz": imgsz, "parity_frames": parity_frames, "frames": frames,
                            "streams": list(streams), "batch": batch, "workers": workers, **_versions(device)}
    world = WorldConfig(seed=0, width=imgsz, height=imgsz, stream_frames=max(parity_frames, 1))
    parity_images = [render_stream_frame(world, i)[0] for i in range(parity_frames)]
    onnx_model: Path | None = None
    onnx_reason = None
    try:
        onnx_model = export_onnx(model, work / "model.onnx", imgsz=imgsz)
        progress(f"exported {onnx_model.name} ({time.perf_counter() - start:.0f} s)")
    except Exception as exc:  # noqa: BLE001 - the torch rows still tell something
        onnx_reason = f"export failed: {str(exc).splitlines()[0][:200]}"
        progress(onnx_reason)
    parity = _measure_parity(model, onnx_model, onnx_reason, parity_images, imgsz, batch, device,
                             progress)

    video = write_synth_video(work / f"street{imgsz}.mp4", 120, size=imgsz)
    runs = []
    for name, backend, precision in CANDIDATES:
        if parity[name]["status"] != "measured":
            continue
        weights = str(onnx_model) if backend == "onnx" else model
        for count in streams:
            graph = stream_graph(video, weights, imgsz, work / f"{name}-x{count}", count, frames, batch, workers,
                                 precision == "fp16", device)
            # the graph's own frame counts (frames split over the streams, rounded up): a row for each is expected
            run = _measure_run(name, graph, work, sum(s["max_frames"] for s in graph["sources"]))
            runs.append(run)
            progress(f"run: {run_line(run)}  [{time.perf_counter() - start:.0f} s]")
    result = build_result(meta, parity, runs)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result
