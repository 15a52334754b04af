"""Detector settings without torch: what YAML configs and command lines say about a detector.

Torch-free so that stages that never run a model (broker, filter, sinks) and the graph config
validate the same `detector:` section as `ghostbox detect`, from one definition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DetectorConfig(BaseModel):
    """Detector settings; the same fields in YAML configs and on the command line."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    imgsz: int | None = Field(None, ge=32, le=8192)  # None: the model's training size, else 640
    conf: float = Field(0.25, ge=0.0, le=1.0)
    iou: float = Field(0.7, ge=0.0, le=1.0)
    max_det: int = Field(300, ge=1)
    device: str = "auto"
    batch: int = Field(8, ge=1)
    half: bool = False
    end2end: bool = False  # the one-to-one NMS-free head (YOLOv10/YOLO26), as Ultralytics' nms=False
    agnostic_nms: bool = False
    classes: list[int] | None = None
    # "head": the classification branch's hidden output at the box's anchor (M-Hood's box
    # feature). "head+roi": that vector L2-normalised, followed by the box RoI-aligned on the
    # head's input maps and on the backbone's maps at the same strides (2x2 cells each, each
    # map's block L2-normalised): the box's appearance and shape, not one anchor's view of it.
    # None: what the --filter was fitted with, else "head" (`pipeline.filter.filter_file.with_filter_features`)
    box_features: Literal["head", "head+roi"] | None = None

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
