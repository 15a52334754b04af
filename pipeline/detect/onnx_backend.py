"""The ONNX Runtime backend for models written by `ghostbox export`."""

from __future__ import annotations

import json
import logging

import numpy as np
import torch

from pipeline.detect.model_source import ModelSource
from pipeline.detect.onnx_export import METADATA_KEY, OUTPUT_NAMES, roi_output_names
from pipeline.detect.torch_backend import ModelInfo
from pipeline.errors import GhostboxError

log = logging.getLogger(__name__)


def _providers(device: torch.device) -> list:
    import onnxruntime as ort  # optional (the cpu or gpu extra); OnnxBackend says how to install it

    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise GhostboxError(
                f"device '{device}' asked for, but this onnxruntime has no CUDA provider "
                f"(available: {', '.join(available)}); install ghostbox[gpu] (onnxruntime-gpu)"
            )
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBackend:
    format = "onnx"

    def __init__(self, source: ModelSource, device: torch.device) -> None:
        try:
            import onnxruntime as ort  # optional: the cpu or gpu extra
        except ImportError as exc:
            raise GhostboxError(
                "ONNX models need onnxruntime: pip install 'ghostbox[cpu]' (or 'ghostbox[gpu]' for CUDA)"
            ) from exc
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # the process's thread setting governs both backends: a stream worker sets torch's from its worker plan,
        # and ONNX Runtime's own default (every core per session) would oversubscribe several workers
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(source.path), options, providers=_providers(device))
        except GhostboxError:
            raise
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GhostboxError(f"model '{source.spec}': not a readable ONNX model ({first[:160]})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        outputs = tuple(o.name for o in self.session.get_outputs())
        if METADATA_KEY not in meta or outputs[: len(OUTPUT_NAMES)] != OUTPUT_NAMES:
            raise GhostboxError(
                f"model '{source.spec}' was not exported by ghostbox (no logits/features outputs); "
                f"export the .pt with `ghostbox export MODEL --format onnx`"
            )
        info = json.loads(meta[METADATA_KEY])
        self.metadata = info
        # `ghostbox export --int8`: what was quantized and on which frames (None: the float export)
        self.quantization: dict | None = info.get("quantization") or None
        # Older exports have no RoI map outputs: head features only, no RoI-aligned features.
        maps = roi_output_names(len(info.get("roi_channels", ())))
        has_maps = bool(maps) and outputs[len(OUTPUT_NAMES):] == maps
        self.output_names = [*OUTPUT_NAMES, *(maps if has_maps else ())]
        self.info = ModelInfo(
            class_names=tuple(info["class_names"]),
            strides=tuple(info["strides"]),
            max_stride=int(info["max_stride"]),
            feature_dim=int(info["feature_dim"]),
            end2end=bool(info["end2end"]),
            weights_sha256=str(info["weights_sha256"]),
            train_imgsz=info.get("train_imgsz") or info.get("imgsz"),
            roi_channels=tuple(info.get("roi_channels", ())) if has_maps else (),
            roi_strides=tuple(info.get("roi_strides", ())) if has_maps else (),
        )
        self.device = device
        self.half = False
        self.providers = self.session.get_providers()

    def forward(self, images: torch.Tensor, maps: bool = True) -> tuple[torch.Tensor, ...]:
        """(head_out, logits, features, *roi_maps), as the PyTorch backend; `maps=False`: without the RoI maps
        (several MB a frame to copy out, wanted only for "head+roi" features)."""
        feed = {"images": np.ascontiguousarray(images.detach().cpu().float().numpy())}
        names = self.output_names if maps else self.output_names[: len(OUTPUT_NAMES)]
        return tuple(torch.from_numpy(out) for out in self.session.run(names, feed))
