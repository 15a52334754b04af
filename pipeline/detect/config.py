"""Detector settings without torch: what YAML configs and command lines say about a detector.

Torch-free so that stages that never run a model (broker, filter, sinks) and the graph config
validate the same `detector:` section as `ghostbox detect`, from one definition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_CONF = 0.25  # M-Hood's operating point: a box at or above it is reported (and counted by eval)
FALLBACK_IMGSZ = 640  # for a model that records no training size (Ultralytics' own default)
# Frames per forward pass when a config names none. Measured on a 2-core CPU (issue 27; one process,
# 32 frames, median of 4 interleaved rounds): a 640-px YOLOv8 person model ran 2-12% faster per frame
# at batch 2-4 than at 8 (torch 225 against 252 ms, ONNX Runtime 114 against 117 ms; a large batch's
# activations leave the caches) and `ghostbox run` 3% faster at 4; the bundled 320-px model was equal
# at 4 and 8 and slower at 1-2 (per-call cost). A GPU is fed better by larger batches.
CPU_BATCH = 4
GPU_BATCH = 8


def default_batch(gpu: bool) -> int:
    """Frames per forward pass for a detector on a GPU or on the CPU, when the config names none."""
    return GPU_BATCH if gpu else CPU_BATCH


class DetectorConfig(BaseModel):
    """Detector settings; the same fields in YAML configs and on the command line."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(description=".pt, .onnx (from `ghostbox export`), an Ultralytics name or an architecture "
                       ".yaml (the commands' default: the bundled street-world model)")
    imgsz: int | None = Field(None, ge=32, le=8192,
                              description="inference size in pixels (default: the model's training size, else "
                              f"{FALLBACK_IMGSZ})")
    conf: float = Field(DEFAULT_CONF, ge=0.0, le=1.0, description="confidence threshold")
    iou: float = Field(0.7, ge=0.0, le=1.0, description="NMS IoU threshold")
    max_det: int = Field(300, ge=1, description="maximum boxes per frame")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    batch: int | None = Field(None, ge=1, description=f"frames per forward pass (default: {CPU_BATCH} on a CPU, "
                              f"{GPU_BATCH} on a GPU)")
    half: bool = Field(False, description="float16 on CUDA")
    end2end: bool = Field(False, description="use the NMS-free one-to-one head (YOLOv10, YOLO26), as Ultralytics' "
                          "nms=False")
    agnostic_nms: bool = Field(False, description="NMS across classes")
    classes: list[int] | None = Field(None, description="keep only these class ids (default: all)")
    # "head": the classification branch's hidden output at the box's anchor (M-Hood's box
    # feature). "head+roi": that vector L2-normalised, followed by the box RoI-aligned on the
    # head's input maps and on the backbone's maps at the same strides (2x2 cells each, each
    # map's block L2-normalised): the box's appearance and shape, not one anchor's view of it.
    box_features: Literal["head", "head+roi"] | None = Field(
        None, description="box features: the head's hidden vector at the anchor, or that plus RoI-aligned neck "
        "features (default: what the filter was fitted with, else head)")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = str(value).strip().lower()
        if value in {"auto", "cpu", "cuda"} or (value.startswith("cuda:") and value[5:].isdigit()) or value.isdigit():
            return value
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got '{value}'")


def box_features_for(fingerprint: dict[str, object]) -> str:
    """The `box_features` setting a detector needs to produce a fingerprint's features."""
    return "head+roi" if "+roi_align" in str(fingerprint.get("feature_layer", "")) else "head"
