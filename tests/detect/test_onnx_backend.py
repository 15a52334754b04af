"""`ghostbox export` writes an ONNX model whose detections and features equal PyTorch's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from pipeline.detect.detector import Detector
from pipeline.detect.onnx_export import METADATA_KEY, export_onnx
from pipeline.errors import GhostboxError
from tests.helpers.parity import assert_same_boxes, conf_for


@pytest.mark.parametrize("family,end2end", [("yolov8", False), ("yolo26", False), ("yolo26", True), ("yolov10", True)])
def test_onnx_runtime_equals_pytorch(checkpoints, frames, tmp_path, family, end2end):
    weights = checkpoints[family]
    onnx_path = export_onnx(weights, tmp_path / f"{family}.onnx", imgsz=320, end2end=end2end)
    for frame in frames:  # two sizes: the graph takes any stride-multiple input
        conf = conf_for(weights, frame, end2end)
        torch_det = Detector(model=str(weights), imgsz=320, conf=conf, device="cpu", end2end=end2end)
        onnx_det = Detector(model=str(onnx_path), imgsz=320, conf=conf, device="cpu")
        assert onnx_det.backend.format == "onnx"
        assert onnx_det.backend.providers[0] == "CPUExecutionProvider"
        [a] = torch_det.detect([frame])
        [b] = onnx_det.detect([frame])
        assert len(a) >= 5
        assert_same_boxes(b, a.xyxy, a.confidence, a.class_id)
        order_a = np.lexsort((a.xyxy[:, 0], -a.confidence))
        order_b = np.lexsort((b.xyxy[:, 0], -b.confidence))
        scale = np.abs(a.box_features).max()
        np.testing.assert_allclose(b.box_features[order_b], a.box_features[order_a], rtol=1e-3, atol=1e-3 * scale)
        np.testing.assert_allclose(b.logits[order_b], a.logits[order_a], rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(b.level[order_b], a.level[order_a])
        # a filter fitted on the .pt model accepts its export: same fingerprint
        assert onnx_det.fingerprint() == torch_det.fingerprint()


def test_export_metadata_and_outputs(checkpoints, tmp_path):
    path = export_onnx(checkpoints["yolov8"], tmp_path / "m.onnx")
    graph = onnx.load(str(path))
    assert [o.name for o in graph.graph.output] == ["head", "logits", "features", *(f"roi{i}" for i in range(6))]
    meta = json.loads({p.key: p.value for p in graph.metadata_props}[METADATA_KEY])
    assert meta["class_names"] == ["pedestrian", "car", "traffic light", "traffic sign"]
    assert meta["imgsz"] == 320  # the checkpoint's training size when --imgsz is not given
    assert meta["strides"] == [8, 16, 32] and meta["feature_dim"] > 0
    assert meta["roi_strides"] == [8, 16, 32, 8, 16, 32] and len(meta["roi_channels"]) == 6
    # the RoI maps are copied out only when "head+roi" features want them
    backend = Detector(model=str(path), device="cpu").backend
    images = torch.rand(2, 3, 320, 320)
    full, bare = backend.forward(images), backend.forward(images, maps=False)
    assert len(full) == 9 and len(bare) == 3
    for a, b in zip(full, bare):
        torch.testing.assert_close(a, b)


def test_export_cli(checkpoints, tmp_path):
    out = tmp_path / "cli.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "export", str(checkpoints["yolo11"]), "--format", "onnx", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and str(out) in proc.stdout


def test_plain_onnx_is_refused(checkpoints, tmp_path):
    """An ONNX file without ghostbox's outputs cannot give features: say so."""
    from pipeline.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics import YOLO

    plain = YOLO(str(checkpoints["yolov8"])).export(format="onnx", imgsz=320, simplify=False, verbose=False)
    with pytest.raises(GhostboxError, match="not exported by ghostbox"):
        Detector(model=str(plain), device="cpu")


def test_cuda_provider_needs_onnxruntime_gpu(checkpoints, tmp_path, monkeypatch):
    import torch

    from pipeline.detect import onnx_backend

    path = export_onnx(checkpoints["yolov8"], tmp_path / "m.onnx")
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(GhostboxError, match="no CUDA provider"):
        onnx_backend._providers(torch.device("cuda:0"))
    assert onnx_backend._providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    assert path.exists()
