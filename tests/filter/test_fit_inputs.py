"""A filter fitted or re-calibrated on a truncated clip says so in its file (issue 25, item 3)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from pipeline.detect.config import DetectorConfig
from pipeline.detect.detector import Detector
from pipeline.filter import save_filter
from pipeline.filter.fit_from_data import FitRequest, fit_filter, recalibrate_filter
from pipeline.filter.id_collection import collect_id_boxes
from tests.helpers.stream_helpers import IMGSZ, synth_frames, tiny_model

FRAMES = 40


def _clip(path: Path, cut: bool) -> Path:
    """A synth-world MJPG AVI; `cut`: its second half cut off, the header still announcing every frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 128))
    for image in synth_frames(FRAMES, seed=1):
        writer.write(image)
    writer.release()
    if cut:
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    return path


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(DetectorConfig(model=str(tiny_model()), imgsz=IMGSZ, device="cpu"))


@pytest.fixture
def clips(tmp_path: Path) -> tuple[Path, Path]:
    return _clip(tmp_path / "whole.avi", cut=False), _clip(tmp_path / "cut.avi", cut=True)


def _request(spec: Path, **extra: object) -> FitRequest:
    return FitRequest(method="energy", id_spec=str(spec), min_track_frames=2, min_boxes=5, **extra)


def test_unlabelled_id_boxes_carry_the_read_report(detector: Detector, clips: tuple[Path, Path]) -> None:
    whole, cut = clips
    assert collect_id_boxes(detector, str(whole), min_track_frames=2).media.complete
    media = collect_id_boxes(detector, str(cut), min_track_frames=2).media
    assert not media.complete and [t["file"] for t in media.truncated] == [str(cut)]


def test_fitted_filter_records_a_truncated_id_or_calibration_clip(detector: Detector,
                                                                  clips: tuple[Path, Path]) -> None:
    whole, cut = clips
    good, _ = fit_filter(detector, _request(whole))
    assert good.metadata["inputs_complete"] is True and good.metadata["input_problems"] == []
    bad, _ = fit_filter(detector, _request(cut))
    assert bad.metadata["inputs_complete"] is False
    [line] = bad.metadata["input_problems"]
    assert line.startswith(f"'{cut}': ") and f"of {FRAMES} frames read" in line
    held_cut, _ = fit_filter(detector, _request(whole, calibration_id=str(cut)))
    assert held_cut.metadata["inputs_complete"] is False and str(cut) in held_cut.metadata["input_problems"][0]


def test_recalibrated_filter_records_its_own_truncated_clip(tmp_path: Path, detector: Detector,
                                                           clips: tuple[Path, Path]) -> None:
    whole, cut = clips
    fitted, _ = fit_filter(detector, _request(cut))
    path = save_filter(fitted, tmp_path / "cam.filter.safetensors")
    again, _ = recalibrate_filter(detector, str(path), str(cut), min_track_frames=2)
    assert again.metadata["inputs_complete"] is False and str(cut) in again.metadata["input_problems"][0]
    # re-calibrated on a whole clip: this command's inputs are complete, the fit's problems stay listed
    clean, _ = recalibrate_filter(detector, str(path), str(whole), min_track_frames=2)
    assert clean.metadata["inputs_complete"] is True and clean.metadata["input_problems"] == []
    assert clean.metadata["fit_input_problems"] == fitted.metadata["input_problems"]
