"""Model resolution: local files, Ultralytics names (online/offline) and architecture yamls."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from pipeline.detect import model_source
from pipeline.detect.detector import Detector
from pipeline.detect.model_source import resolve_model
from pipeline.errors import GhostboxError


def test_local_files_by_suffix(checkpoints, tmp_path):
    assert resolve_model(checkpoints["yolov8"]).kind == "pt"
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert resolve_model(tmp_path / "m.onnx").kind == "onnx"
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(GhostboxError, match="unsupported file type '.txt'"):
        resolve_model(tmp_path / "m.txt")
    with pytest.raises(GhostboxError, match="is a directory"):
        resolve_model(tmp_path)
    with pytest.raises(GhostboxError, match="file not found"):
        resolve_model(tmp_path / "missing.pt")


def test_offline_name_fails_at_once_with_advice(monkeypatch):
    monkeypatch.setenv("GHOSTBOX_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(GhostboxError, match=r"yolov8s\.pt.*offline.*pass its path"):
        resolve_model("yolov8s.pt")
    assert time.perf_counter() - start < 1.0


def test_offline_probe_failure_also_fails_fast(monkeypatch):
    monkeypatch.delenv("GHOSTBOX_OFFLINE", raising=False)

    def refuse(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(model_source.socket, "create_connection", refuse)
    with pytest.raises(GhostboxError, match="offline"):
        resolve_model("yolo11n")


def test_online_name_downloads_into_ghostbox_weights(monkeypatch, checkpoints, ghostbox_home):
    """The download path, with the network replaced by a local copy of a checkpoint."""
    from ultralytics.utils import downloads

    calls = []

    def fake_download(target, *args, **kwargs):
        calls.append(target)
        shutil.copyfile(checkpoints["yolo11"], target)
        return target

    monkeypatch.setattr(model_source, "_online", lambda *a, **k: True)
    monkeypatch.setattr(downloads, "attempt_download_asset", fake_download)
    source = resolve_model("yolo11x.pt")
    assert source.kind == "pt" and source.path.parent == ghostbox_home / "weights"
    assert calls and source.path.is_file()
    # second time it is on disk: no download
    monkeypatch.setattr(model_source, "_online", lambda *a, **k: pytest.fail("probed the network"))
    assert resolve_model("yolo11x").path == source.path
    source.path.unlink()


def test_yaml_builds_the_same_untrained_model_every_time(frames):
    a = Detector(model="yolov8n.yaml", imgsz=320, conf=1e-4, device="cpu")
    b = Detector(model="yolov8n.yaml", imgsz=320, conf=1e-4, device="cpu")
    assert a.source.kind == "yaml" and len(a.class_names) == 80
    assert a.fingerprint() == b.fingerprint()
    [x], [y] = a.detect([frames[0]]), b.detect([frames[0]])
    np.testing.assert_array_equal(x.xyxy, y.xyxy)


def test_unknown_yaml_is_an_error():
    with pytest.raises(GhostboxError, match="no such file"):
        resolve_model("not-a-model.yaml")
