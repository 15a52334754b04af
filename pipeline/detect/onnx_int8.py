"""Static int8 quantization of a `ghostbox export` model, calibrated on the user's own frames.

`export_int8` reads calibration frames (an image folder, glob or video) with `iter_frames`,
letterboxes them with the fp32 model's own `Detector` preprocessing (so activation ranges are
measured on exactly the tensors the model will see), and `quantize_int8` writes an ONNX Runtime
QDQ model (`onnxruntime.quantization.quantize_static`). The quantized model keeps the fp32 model's
outputs (`head`, `logits`, `features`, `roi*`) and its `ghostbox` metadata, plus a
`quantization` entry naming what was quantized and what it was calibrated on, so a filter
can tell an int8 detector from the fp32 one (`Detector.fingerprint`).

What is quantized (chosen by measurement, docs/detect.md#int8): every operator of the backbone
and neck, and the head's hidden Conv+SiLU layers, int8 weights per channel and uint8 activations
per tensor, ranges by MinMax. The head's final box and class convolutions, the DFL and the box
decode stay float (`float_head_nodes`): the logits and boxes come out of them directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.detect.model_source import sha256_file
from pipeline.detect.onnx_export import METADATA_KEY
from pipeline.errors import GhostboxError
from pipeline.sources.media_files import MediaReport, count_frames, iter_frames

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_FRAMES = 100
INT8_SUFFIX = ".int8.onnx"
# ranges are merged every this many frames: ONNX Runtime's calibrator otherwise keeps every
# intermediate tensor of every frame in memory until the end
MERGE_EVERY = 16


@dataclass
class CalibrationFrames:
    """Letterboxed calibration inputs (uint8, (1, 3, H, W) RGB) and where they came from."""

    source: str
    images: list[np.ndarray]
    picked: list[tuple[str, int]]  # (file, frame index) of every kept frame
    available: int  # frames read from the source
    sha256: str  # of the picked frames' files (bytes) and positions
    imgsz: int
    report: MediaReport = field(default_factory=MediaReport)

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "frames": len(self.images), "of": self.available,
                "files": len({name for name, _ in self.picked}), "imgsz": self.imgsz, "sha256": self.sha256}


def _pick(total: int | None, count: int) -> set[int] | None:
    """Evenly spaced frame positions (None: the first `count`, when the source cannot say how many it has)."""
    if total is None:
        return None
    return {int(i) for i in np.linspace(0, total - 1, min(count, total)).round()}


def read_calibration_frames(source: str, count: int, letterbox: Any, imgsz: int) -> CalibrationFrames:
    """`count` frames spread over `source`, letterboxed by `letterbox` (a `Detector._letterbox`).

    The whole source is read, so a cut video or an unreadable file shows in the report however
    few frames are kept. The digest covers the picked frames' files (their bytes, not their
    paths) and positions: the same frames under another path give the same digest.
    """
    if count < 1:
        raise GhostboxError(f"--calibration-frames: at least 1, got {count}")
    report = MediaReport()
    wanted = _pick(count_frames([source]), count)
    images: list[np.ndarray] = []
    picked: list[tuple[str, int]] = []
    hashes: dict[str, str] = {}
    position = 0
    for frame in iter_frames([source], report):
        keep = position in wanted if wanted is not None else len(images) < count
        position += 1
        if not keep:
            continue
        boxed = letterbox([frame.image])  # float in [0, 1], exactly k/255: stored back as uint8
        images.append((boxed.cpu().numpy() * 255).round().astype(np.uint8))
        picked.append((frame.source, frame.index))
        if frame.source not in hashes:
            hashes[frame.source] = sha256_file(Path(frame.source))
    digest = hashlib.sha256(json.dumps([[hashes[name], index] for name, index in picked]).encode())
    return CalibrationFrames(source, images, picked, position, digest.hexdigest(), imgsz, report)


class _FrameReader:
    """The `CalibrationDataReader` protocol over letterboxed frames (one frame per run: sizes may differ)."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self._images = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        return None if image is None else {"images": image.astype(np.float32) / np.float32(255)}


def float_head_nodes(model: Any) -> list[str]:
    """The detect head's nodes that stay float: all of the head (the last Ultralytics layer's scope,
    "/model/model.<last>/") except its hidden Conv+SiLU layers. What stays float are the final box and
    class convolutions, the DFL, the anchor decode and the concatenations into `head`: one int8 scale
    over `head`'s pixel coordinates and [0, 1] scores zeroes every score (measured: mAP50 0)."""
    layers = [int(part[6:]) for node in model.graph.node for part in node.name.split("/")
              if part.startswith("model.") and part[6:].isdigit()]
    if not layers:
        raise GhostboxError("int8: the ONNX graph's node names do not show Ultralytics' layers; cannot find the head")
    scope = f"/model/model.{max(layers)}/"
    head = [node for node in model.graph.node if node.name.startswith(scope)]
    users: dict[str, list[Any]] = {}
    for node in head:
        for name in node.input:
            users.setdefault(name, []).append(node)
    hidden: set[str] = set()
    for node in head:  # an Ultralytics Conv module: Conv, then SiLU as Sigmoid and Mul on the conv's output
        after = users.get(node.output[0], []) if node.op_type == "Conv" else []
        sigmoid = [u for u in after if u.op_type == "Sigmoid"]
        mul = [u for u in after if u.op_type == "Mul"]
        if sigmoid and mul:
            hidden |= {node.name, sigmoid[0].name, mul[0].name}
    return [node.name for node in head if node.name not in hidden]


class _QuietAdvice(logging.Filter):
    """Drops onnxruntime's advice to run its pre-processing (measured: it changes 7 of 342 nodes of an
    onnxslim-ed export, and its symbolic shape inference fails on the dynamic anchors)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def quantize_int8(fp32: Path, calibration: CalibrationFrames, out: Path) -> Path:
    """Write the int8 QDQ model of `fp32` at `out`, its metadata extended with the calibration."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration.images:
        raise GhostboxError(f"--calibration '{calibration.source}': no frames read")
    model = onnx.load(str(fp32))
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta:
        raise GhostboxError(f"model '{fp32}' was not exported by ghostbox (no '{METADATA_KEY}' metadata)")
    info = json.loads(meta[METADATA_KEY])
    if info.get("quantization"):
        raise GhostboxError(f"model '{fp32}' is already quantized ({info['quantization'].get('type')})")
    excluded = float_head_nodes(model)
    quiet = _QuietAdvice()
    logging.getLogger().addFilter(quiet)  # onnxruntime's quantizer logs on the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="ghostbox-int8-") as tmp:
            # the calibrator writes its augmented copy of the model beside the output: keep it out of the user's folder
            quantize_static(
                str(fp32), str(Path(tmp) / "q.onnx"), _FrameReader(calibration.images),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=None, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibMaxIntermediateOutputs": MERGE_EVERY},
            )
            quantized = onnx.load(str(Path(tmp) / "q.onnx"))
    finally:
        logging.getLogger().removeFilter(quiet)
    info["quantization"] = {
        "type": "int8", "format": "QDQ", "activations": "uint8, per tensor", "weights": "int8, per channel",
        "calibration": {**calibration.record(), "method": "MinMax"},
        "excluded": {"rule": "detect head except its hidden Conv+SiLU layers", "nodes": excluded},
    }
    del quantized.metadata_props[:]
    for key, value in meta.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, json.dumps(info) if key == METADATA_KEY else value
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(quantized, str(out))
    return out


def export_int8(fp32: str | Path, calibration: str, frames: int = DEFAULT_CALIBRATION_FRAMES,
                out: str | Path | None = None) -> tuple[Path | None, CalibrationFrames]:
    """Quantize the ghostbox ONNX model `fp32` on `frames` frames of `calibration`.

    Returns (the int8 model's path, the calibration frames); the path is None, and nothing is
    written, when the calibration input was incomplete (`CalibrationFrames.report` names why):
    ranges measured on part of what the user pointed at are not what they asked for.
    """
    from pipeline.detect.detector import Detector  # torch and Ultralytics: only once a model is quantized

    fp32 = Path(fp32)
    detector = Detector(model=str(fp32), device="cpu")
    if getattr(detector.backend, "quantization", None):  # before the frames are read, not after
        raise GhostboxError(f"model '{fp32}' is already quantized: give the fp32 export or the .pt")
    # the fp32 model's own preprocessing, at the size the export records as the model's default
    imgsz = (getattr(detector.backend, "metadata", None) or {}).get("imgsz")
    if imgsz and int(imgsz) != detector.imgsz:
        detector = Detector(model=str(fp32), device="cpu", imgsz=int(imgsz))
    frames_read = read_calibration_frames(calibration, frames, detector._letterbox, detector.imgsz)
    if not frames_read.report.complete:
        return None, frames_read
    target = Path(out) if out is not None else int8_path(fp32)
    log.info("int8: calibrating on %d of %d frames of '%s' at imgsz %d", len(frames_read.images),
             frames_read.available, calibration, detector.imgsz)
    return quantize_int8(fp32, frames_read, target), frames_read


def int8_path(fp32: Path) -> Path:
    """`model.onnx` -> `model.int8.onnx`."""
    return fp32.with_name(fp32.name.removesuffix(".onnx") + INT8_SUFFIX)
