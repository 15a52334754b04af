"""Export a detector to ONNX with the logits and box features as extra outputs.

The graph has one input, `images` (B, 3, H, W) float32 in [0, 1], with dynamic batch and
size so the letterbox is the same as the PyTorch backend's, and the outputs `head`,
`logits`, `features` (see `head_tap`) and `roi0`..`roiK-1`, the maps RoI-aligned box features
are read from (the head's inputs, then the backbone taps). The model's metadata (class names, strides, feature
size, head kind, the hash of the source weights) is stored under the `ghostbox` key, so a
filter fitted on the `.pt` model also accepts its ONNX export.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

import pipeline
from pipeline.detect.config import FALLBACK_IMGSZ
from pipeline.detect.head_tap import detect_head
from pipeline.detect.model_source import resolve_model
from pipeline.detect.torch_backend import TorchBackend
from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)

METADATA_KEY = "ghostbox"
OUTPUT_NAMES = ("head", "logits", "features")  # then one "roi<i>" per RoI map
OPSET = 17


class _Graph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(images)


def roi_output_names(maps: int) -> tuple[str, ...]:
    return tuple(f"roi{i}" for i in range(maps))


def export_onnx(
    model: str | Path,
    out: str | Path | None = None,
    imgsz: int | None = None,
    end2end: bool = False,
    max_det: int = 300,
    simplify: bool = True,
) -> Path:
    source = resolve_model(model)
    if source.kind == "onnx":
        raise GhostboxError(f"model '{model}' is already an ONNX file")
    backend = TorchBackend(source, torch.device("cpu"), half=False, end2end=end2end, max_det=max_det)
    head = detect_head(backend.model)
    head.dynamic = True  # rebuild anchors inside the graph for every input size
    head.export = True
    head.format = "onnx"
    stride = backend.info.max_stride
    imgsz = imgsz or backend.info.train_imgsz or FALLBACK_IMGSZ
    size = max(stride, (int(imgsz) + stride - 1) // stride * stride)
    example = torch.zeros(1, 3, size, size)
    if out is None:
        base = source.path if source.kind == "pt" else Path(Path(source.spec).name)
        out = base.with_suffix(".onnx")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    anchors = "k" if backend.info.end2end else "anchors"
    dynamic_axes = {
        "images": {0: "batch", 2: "height", 3: "width"},
        "head": {0: "batch", (1 if backend.info.end2end else 2): anchors},
        "logits": {0: "batch", 2: "anchors"},
        "features": {0: "batch", 2: "anchors"},
    }
    necks = roi_output_names(len(backend.info.roi_channels))
    for name in necks:
        dynamic_axes[name] = {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
    try:
        torch.onnx.export(
            _Graph(backend.model),
            (example,),
            str(out),
            dynamo=False,
            opset_version=OPSET,
            input_names=["images"],
            output_names=[*OUTPUT_NAMES, *necks],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    except Exception as exc:  # noqa: BLE001
        raise GhostboxError(f"ONNX export of '{model}' failed: {exc}") from exc

    import onnx  # only for export: onnx_backend imports this module, and a detector need not load onnx

    graph = onnx.load(str(out))
    if simplify:
        try:
            import onnxslim  # optional step: any failure (import included) keeps the unsimplified graph

            graph = onnxslim.slim(graph)
        except Exception as exc:  # noqa: BLE001 - an unsimplified graph is still correct
            log.warning("onnxslim failed (%s); keeping the unsimplified graph", exc)
    meta = {
        **asdict(backend.info),
        "imgsz": size,
        "max_det": int(head.max_det) if backend.info.end2end else int(max_det),
        "feature_layer": "detect head classification branch, hidden output before the logit conv",
        "ghostbox_version": pipeline.__version__,
        "source": Path(source.spec).name,
    }
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(graph, str(out))
    return out
