"""The detector API: frames in, one `Detections` per frame out, for either backend.

Pre- and post-processing are Ultralytics' own (LetterBox, NMS, scale_boxes) with the same
settings its predictor uses, so boxes and confidences equal `YOLO(...).predict` on the same
frames; the logits and box features are gathered at the anchor index of every kept box.
Frames are grouped by shape inside a batch so a frame's result does not depend on the
other frames it was batched with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.box_geometry import cut_crops
from pipeline.detect.config import FALLBACK_IMGSZ, DetectorConfig, box_features_for, default_batch  # noqa: F401 - re-exported
from pipeline.detect.model_source import resolve_model
from pipeline.detect.torch_backend import TorchBackend
from pipeline.detect.unknown_class import split_unknown
from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.ultralytics_env import import_ultralytics

if TYPE_CHECKING:
    from pipeline.detect.onnx_backend import OnnxBackend

log = logging.getLogger(__name__)

ROI_GRID = 2  # RoI-align output cells per side and level for box_features="head+roi"


def select_device(spec: str) -> torch.device:
    spec = spec.lower()
    if spec.isdigit():
        spec = f"cuda:{spec}"
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GhostboxError(f"device '{spec}': CUDA is not available on this machine (use --device cpu or auto)")
    device = torch.device(spec if ":" in spec else "cuda:0")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise GhostboxError(f"device '{spec}': only {torch.cuda.device_count()} CUDA device(s) present")
    return device


def validate_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray):
        frames = [frames] if frames.ndim == 3 else list(frames)
    frames = list(frames)
    if not frames:
        raise GhostboxError("detect(): empty batch (no frames given)")
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray):
            raise GhostboxError(f"frame {i}: expected a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise GhostboxError(f"frame {i}: expected dtype uint8 (BGR 0-255), got {frame.dtype}")
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise GhostboxError(f"frame {i}: expected shape (H, W, 3) BGR, got {frame.shape}")
        if frame.shape[0] < 1 or frame.shape[1] < 1:
            raise GhostboxError(f"frame {i}: empty image of shape {frame.shape}")
    return frames


def _stride_multiple(imgsz: int, stride: int) -> int:
    """`imgsz` rounded up to a multiple of the model's largest stride (its feature maps must tile the
    input), with a warning naming the size used: the run's boxes and a filter's `imgsz` depend on it."""
    size = max(stride, -(-int(imgsz) // stride) * stride)
    if size != imgsz:
        log.warning("imgsz %d is not a multiple of the model's stride %d: running at imgsz %d "
                    "(pass --imgsz %d to say so)", imgsz, stride, size, size)
    return size


class Detector:
    """A YOLO detector whose detections carry class logits and box features.

    >>> detector = Detector(DetectorConfig(model="assets/models/ghostbox-street-n.pt", imgsz=320))
    >>> [dets] = detector.detect([cv2.imread("street.jpg")])
    >>> dets.box_features.shape  # (N, D)
    """

    def __init__(self, config: DetectorConfig | None = None, **overrides: object) -> None:
        if config is None:
            config = DetectorConfig(**overrides)
        elif overrides:
            config = config.model_copy(update=overrides)
        self.config = config
        # Ultralytics (here and in the methods below) only once a detector is built, and only after
        # import_ultralytics() has set up its offline environment; importing this module stays light
        import_ultralytics()

        source = resolve_model(config.model)
        device = select_device(config.device)
        half = bool(config.half)
        if half and device.type != "cuda":
            log.warning("half precision needs a CUDA device; running in float32 on %s", device)
            half = False
        self.backend: TorchBackend | OnnxBackend
        if source.kind == "onnx":
            from pipeline.detect.onnx_backend import OnnxBackend  # onnxruntime: optional, for ONNX models only

            if half:
                log.warning("ONNX models run in the precision they were exported in (float32)")
                half = False
            if config.end2end:
                log.info("the ONNX model's head was fixed at export time; --end2end is ignored")
            self.backend = OnnxBackend(source, device)
        else:
            self.backend = TorchBackend(
                source, device, half=half, end2end=config.end2end, max_det=config.max_det,
                agnostic_nms=config.agnostic_nms,
            )
        self.source = source
        self.device = device
        self.half = half
        self.info = self.backend.info
        self.imgsz = _stride_multiple(config.imgsz or self.info.train_imgsz or FALLBACK_IMGSZ, self.info.max_stride)
        self.batch = config.batch or default_batch(device.type == "cuda")
        self.roi = config.box_features == "head+roi"
        if self.roi and not self.info.roi_channels:
            raise GhostboxError(
                f"model '{config.model}': box_features 'head+roi' needs the head's input maps, which this "
                f"ONNX file does not output; re-export it with `ghostbox export MODEL --format onnx`")
        self._names, self.unknown_class = split_unknown(self.info.class_names)
        self.unknown_boxes = 0  # boxes of the unknown class dropped so far
        if config.classes is not None:
            bad = [c for c in config.classes if not 0 <= c < len(self._names)]
            if bad:
                raise GhostboxError(f"classes: {bad} out of range for {len(self._names)} model classes")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The ID classes (an open-set model's unknown class is not one of them)."""
        return self._names

    @property
    def feature_dim(self) -> int:
        if self.roi:
            return self.info.feature_dim + ROI_GRID * ROI_GRID * sum(self.info.roi_channels)
        return self.info.feature_dim

    def fingerprint(self) -> dict[str, object]:
        """What a fitted filter is tied to: the weights, the input size and the feature layer; for an
        int8 model (`ghostbox export --int8`) also its precision and calibration, which move the features."""
        layer = "detect.cls_head[-2]"
        if self.roi:
            layer += f"+roi_align(detect.inputs+backbone,{ROI_GRID}x{ROI_GRID})"
        quantization = getattr(self.backend, "quantization", None)
        int8 = {"precision": str(quantization.get("type", "int8")),
                "int8_calibration": str(quantization.get("calibration", {}).get("sha256", ""))} if quantization else {}
        return {
            "weights_sha256": self.info.weights_sha256,
            "imgsz": self.imgsz,
            "end2end": self.info.end2end,
            "feature_dim": self.feature_dim,
            "feature_layer": layer,
            "class_names": list(self.class_names),
            **({"unknown_class": True} if self.unknown_class is not None else {}),
            **int8,
        }

    # -- preprocessing -------------------------------------------------------------------

    def _letterbox(self, frames: list[np.ndarray]) -> torch.Tensor:
        from ultralytics.data.augment import LetterBox

        # As Ultralytics' predictor with rect=True: minimal padding to a stride multiple
        # (for the PyTorch backend and ghostbox's dynamic ONNX export alike).
        letterbox = LetterBox(self.imgsz, auto=True, stride=self.info.max_stride)
        boxed: list[np.ndarray] = []
        for frame in frames:
            image = letterbox(image=frame)  # given no labels, LetterBox returns the image alone
            if not isinstance(image, np.ndarray):
                raise TypeError(f"LetterBox returned a {type(image).__name__}, expected the letterboxed image")
            boxed.append(image)
        batch = torch.from_numpy(boxed[0][None] if len(boxed) == 1 else np.stack(boxed))
        batch = batch.to(self.device).permute(0, 3, 1, 2).contiguous().flip(1)  # BHWC BGR -> BCHW RGB
        return (batch.half() if self.half else batch.float()).div_(255)

    # -- postprocessing ------------------------------------------------------------------

    def _level_of(self, anchor: np.ndarray, height: int, width: int) -> np.ndarray:
        sizes = [(height // s) * (width // s) for s in self.info.strides]
        return np.searchsorted(np.cumsum(sizes), anchor, side="right").astype(np.int8)

    def _roi_features(self, head_features: torch.Tensor, maps: Sequence[torch.Tensor], b: int,
                      boxes: torch.Tensor) -> np.ndarray:
        from torchvision.ops import roi_align  # box_features="head+roi" only

        rois = torch.cat([torch.zeros(len(boxes), 1, device=boxes.device), boxes.float()], 1)
        blocks = [torch.nn.functional.normalize(head_features.float(), dim=1)]
        for fmap, stride in zip(maps, self.info.roi_strides):
            fmap = fmap[b : b + 1].float()
            pooled = roi_align(fmap, rois.to(fmap.device), (ROI_GRID, ROI_GRID), 1.0 / stride, 2, aligned=True)
            blocks.append(torch.nn.functional.normalize(pooled.flatten(1), dim=1))
        return torch.cat(blocks, 1).cpu().numpy()

    def _postprocess(self, head_out, logits, features, images: torch.Tensor, frames: list[np.ndarray], crops: bool,
                     conf: float, maps: Sequence[torch.Tensor] = ()):
        from ultralytics.utils import nms, ops

        cfg = self.config
        if self.info.end2end:
            kept, _ = nms.non_max_suppression(
                head_out, conf, cfg.iou, cfg.classes, cfg.agnostic_nms, max_det=cfg.max_det,
                end2end=True, return_idxs=True,
            )
            anchors = [k[:, 6].long() for k in kept]
            kept = [k[:, :6] for k in kept]
        else:
            kept, anchors = nms.non_max_suppression(
                head_out, conf, cfg.iou, cfg.classes, cfg.agnostic_nms, max_det=cfg.max_det,
                nc=len(self.info.class_names), return_idxs=True,
            )
        height, width = images.shape[2:]
        results = []
        for b, frame in enumerate(frames):
            pred = kept[b].float()
            anchor = anchors[b].reshape(-1).long()
            if self.unknown_class is not None:  # "not one of mine": not an ID detection
                known = pred[:, 5].long() != self.unknown_class
                self.unknown_boxes += int((~known).sum())
                pred, anchor = pred[known], anchor[known.to(anchor.device)]
            anchor = anchor.to(logits.device)
            box_features = features[b][:, anchor].T
            if self.roi:  # in letterboxed pixels, before the boxes go back to the frame
                box_features = self._roi_features(box_features, maps, b, pred[:, :4])
            else:
                box_features = box_features.float().cpu().numpy()
            pred[:, :4] = ops.scale_boxes((height, width), pred[:, :4], frame.shape)
            xyxy = pred[:, :4].cpu().numpy()
            anchor_np = anchor.cpu().numpy()
            dets = Detections(
                xyxy=xyxy,
                confidence=pred[:, 4].cpu().numpy(),
                class_id=pred[:, 5].cpu().numpy().astype(np.int64),
                logits=logits[b][: len(self._names), anchor].T.float().cpu().numpy(),
                box_features=box_features,
                level=self._level_of(anchor_np, height, width),
                class_names=self._names,
                image_size=(frame.shape[1], frame.shape[0]),
                crops=cut_crops(frame, xyxy) if crops else None,
            )
            results.append(dets)
        return results

    # -- public --------------------------------------------------------------------------

    def detect(self, frames: Sequence[np.ndarray], crops: bool = False, conf: float | None = None) -> list[Detections]:
        """Detect on BGR uint8 frames of any sizes; one `Detections` per frame, in order.

        `conf` overrides the configured threshold for this call (evaluation runs at 0.001).
        """
        frames = validate_frames(frames)
        conf = self.config.conf if conf is None else float(conf)
        if not 0.0 <= conf <= 1.0:
            raise GhostboxError(f"conf must be in [0, 1], got {conf}")
        results: list[Detections | None] = [None] * len(frames)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(frame.shape, []).append(i)
        step = self.batch
        for indices in groups.values():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                chunk_frames = [frames[i] for i in chunk]
                images = self._letterbox(chunk_frames)
                head_out, logits, features, *maps = self.backend.forward(images, maps=self.roi)
                processed = self._postprocess(head_out, logits, features, images, chunk_frames, crops, conf, maps)
                for i, dets in zip(chunk, processed):
                    results[i] = dets
        done = [dets for dets in results if dets is not None]
        assert len(done) == len(frames)  # every frame is in exactly one shape group
        return done

    def warmup(self) -> None:
        self.detect([np.zeros((self.imgsz, self.imgsz, 3), np.uint8)])
