"""Device selection, batch size and half precision."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pipeline.detect.detector import Detector, DetectorConfig, select_device
from pipeline.errors import GhostboxError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_and_auto():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(GhostboxError, match="CUDA is not available"):
        select_device("cuda:0")
    with pytest.raises(GhostboxError, match="CUDA is not available"):
        select_device("0")


def test_device_string_is_validated():
    with pytest.raises(ValueError, match="device must be"):
        DetectorConfig(model="x.pt", device="tpu")
    assert DetectorConfig(model="x.pt", device="CUDA:1").device == "cuda:1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_half_on_cpu_falls_back_to_float32(checkpoints, caplog):
    with caplog.at_level(logging.WARNING):
        detector = Detector(model=str(checkpoints["yolov8"]), device="cpu", half=True)
    assert detector.half is False
    assert next(detector.backend.model.parameters()).dtype == torch.float32
    assert "half precision needs a CUDA device" in caplog.text


@cuda
def test_cuda_float16_matches_float32(checkpoints, frames):
    fp32 = Detector(model=str(checkpoints["yolov8"]), imgsz=320, conf=0.05, device="cuda:0")
    fp16 = Detector(model=str(checkpoints["yolov8"]), imgsz=320, conf=0.05, device="cuda:0", half=True)
    assert next(fp16.backend.model.parameters()).dtype == torch.float16
    [a], [b] = fp32.detect([frames[0]]), fp16.detect([frames[0]])
    assert abs(len(a) - len(b)) <= max(2, len(a) // 10)
    assert b.box_features.dtype == np.float32 and b.logits.dtype == np.float32


@cuda
def test_cuda_matches_cpu(checkpoints, frames):
    cpu = Detector(model=str(checkpoints["yolo11"]), imgsz=320, conf=0.05, device="cpu")
    gpu = Detector(model=str(checkpoints["yolo11"]), imgsz=320, conf=0.05, device="cuda:0")
    [a], [b] = cpu.detect([frames[0]]), gpu.detect([frames[0]])
    assert len(a) == len(b)
    np.testing.assert_allclose(np.sort(a.confidence), np.sort(b.confidence), atol=1e-3)
