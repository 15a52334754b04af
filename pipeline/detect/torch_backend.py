"""The PyTorch backend: an Ultralytics detection model with the feature tap installed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from pipeline.detect.head_tap import detect_head, feature_dim, install_tap, model_layers, roi_channels
from pipeline.detect.model_source import ModelSource, sha256_file
from pipeline.errors import GhostboxError
from pipeline.ultralytics_env import import_ultralytics

if TYPE_CHECKING:
    from ultralytics.nn.tasks import DetectionModel

# Seed for models built from a yaml: an untrained model must be the same model every time,
# or features and fingerprints would change between runs.
YAML_BUILD_SEED = 0


@dataclass(frozen=True)
class ModelInfo:
    class_names: tuple[str, ...]
    strides: tuple[int, ...]  # per pyramid level, e.g. (8, 16, 32)
    max_stride: int
    feature_dim: int
    end2end: bool
    weights_sha256: str
    train_imgsz: int | None
    # RoI maps (head inputs, then backbone taps): channels and strides; () = not available
    roi_channels: tuple[int, ...] = ()
    roi_strides: tuple[int, ...] = ()


def _load_module(source: ModelSource) -> tuple[DetectionModel, str]:
    """The model and its weights' hash; a checkpoint of another task (its own model class) is
    refused afterwards by `_check_detection_head`."""
    import_ultralytics()
    # heavy, so imported only when a model is loaded (and after import_ultralytics() has prepared it)
    from ultralytics.nn.tasks import DetectionModel, guess_model_task, load_checkpoint, yaml_model_load

    if source.kind == "pt":
        try:
            # Ultralytics prints "WARNING ... not a valid checkpoint" banners for bad files; ours is one line.
            with contextlib.redirect_stdout(io.StringIO()):
                model, _ = load_checkpoint(str(source.path))
        except Exception as exc:  # noqa: BLE001 - torch/pickle raise many types for bad files
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GhostboxError(
                f"model '{source.spec}': not a readable Ultralytics checkpoint ({reason[:160]})") from exc
        return model, sha256_file(source.path)
    if source.kind == "yaml":
        try:
            cfg = yaml_model_load(str(source.path))
            task = guess_model_task(cfg)
        except Exception as exc:  # noqa: BLE001
            raise GhostboxError(f"model '{source.spec}': not a valid Ultralytics architecture yaml ({exc})") from exc
        if task != "detect":
            raise GhostboxError(f"model '{source.spec}' is a '{task}' architecture; ghostbox needs a detection model")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(YAML_BUILD_SEED)
            model = DetectionModel(cfg, verbose=False)
        model.eval()
        digest = hashlib.sha256(repr(sorted(cfg.items())).encode() + f"seed={YAML_BUILD_SEED}".encode())
        return model, "yaml-" + digest.hexdigest()
    raise GhostboxError(f"model '{source.spec}': the PyTorch backend cannot load a '{source.kind}' file")


def _check_detection_head(model: nn.Module, spec: str) -> nn.Module:
    from ultralytics.nn.modules.head import Detect, v10Detect  # heavy: only when a model is loaded

    task = getattr(model, "task", None)
    head = model_layers(model)[-1] if hasattr(model, "model") else None
    if task not in (None, "detect"):
        raise GhostboxError(f"model '{spec}' is a '{task}' model; ghostbox needs a detection model (task 'detect')")
    if head is None or type(head) not in (Detect, v10Detect):
        kind = type(head).__name__ if head is not None else type(model).__name__
        raise GhostboxError(f"model '{spec}': unsupported head '{kind}'; supported: Detect (YOLOv8/11/26), v10Detect")
    return head


def _channels_last_pays_off() -> bool:
    return platform.machine() in {"AMD64", "x86_64"} and torch.backends.mkldnn.is_available() and bool(
        torch.backends.mkldnn.enabled
    )


class TorchBackend:
    """Runs the tapped model on preprocessed BCHW float tensors."""

    format = "pt"

    def __init__(
        self,
        source: ModelSource,
        device: torch.device,
        half: bool = False,
        end2end: bool = False,
        max_det: int = 300,
        agnostic_nms: bool = False,
    ) -> None:
        model, weights_hash = _load_module(source)
        has_one2one = getattr(_check_detection_head(model, source.spec), "one2one_cv2", None) is not None
        if end2end and not has_one2one:
            raise GhostboxError(f"model '{source.spec}' has no end-to-end (one-to-one) head; run it with NMS")
        if has_one2one:
            model.end2end = end2end  # choose the branch before fusion removes the other one
        model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
        model = model.to(device).eval()
        if device.type == "cpu" and _channels_last_pays_off():
            # As Ultralytics' AutoBackend: oneDNN convolutions are faster in NHWC on x86, and
            # the same memory format keeps our numbers identical to its predict.
            model = model.to(memory_format=torch.channels_last)
        model = model.half() if half else model.float()
        for param in model.parameters():
            param.requires_grad_(False)
        head = detect_head(model)
        if head.end2end:
            # As Ultralytics' predictor: the head's top-k keeps enough candidates for conf filtering.
            head.max_det = max(max_det, 300)
            head.agnostic_nms = agnostic_nms
        install_tap(model)
        names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
        self.model = model
        self.device = device
        self.half = half
        train_args = getattr(model, "args", {}) or {}
        imgsz = train_args.get("imgsz") if isinstance(train_args, dict) else None
        self.info = ModelInfo(
            class_names=tuple(str(names[i]) for i in range(len(names))),
            strides=tuple(int(s) for s in head.stride.tolist()),
            max_stride=max(int(model.stride.max()), 32),
            feature_dim=feature_dim(head),
            end2end=bool(head.end2end),
            weights_sha256=weights_hash,
            train_imgsz=int(imgsz) if isinstance(imgsz, int) else None,
            roi_channels=roi_channels(model),
            roi_strides=tuple(int(s) for s in head.stride.tolist()) * (1 + (len(head._ghostbox_taps) > 0)),
        )

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, maps: bool = True) -> tuple[torch.Tensor, ...]:
        """(head_out, logits, features, *roi_maps); see `head_tap`. The maps are the network's own
        activations here, so `maps=False` (ONNX Runtime's copy-out saving) changes nothing."""
        return self.model(images)
