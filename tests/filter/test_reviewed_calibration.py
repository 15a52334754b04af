"""`ghostbox calibrate --reviewed OUT`: boxes of tracks a person confirmed real join the ID set."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from pipeline.detect.config import DetectorConfig
from pipeline.detect.detector import Detector
from pipeline.errors import GhostboxError
from pipeline.filter.fit_from_data import FitRequest, fit_filter, reviewed_real_boxes
from tests.helpers.stream_helpers import IMGSZ, ghostbox, tiny_model, video


def _reviewed_run(out: Path, detector: Detector, answers: dict[int, str], weights: str | None = None) -> Path:
    """A run folder as the sink and the review page leave it: tracks/index.jsonl with each box's
    logits and box features (from `detector` on a clip), and review.jsonl."""
    capture = cv2.VideoCapture(str(video(12, seed=3)))
    frames = [capture.read()[1] for _ in range(12)]
    lines = []
    for seq, dets in enumerate(detector.detect(frames)):
        for i in range(min(len(dets), 2)):
            track = i + 1  # two "tracks" through the clip
            lines.append({"file": f"cam/{seq:07d}_{i:03d}.jpg", "stream": "cam", "seq": seq, "track_id": track,
                          "cls": int(dets.class_id[i]), "label": dets.labels[i], "level": int(dets.level[i]),
                          "logits": dets.logits[i].tolist(), "box_features": dets.box_features[i].tolist(),
                          "detector": weights or detector.info.weights_sha256})
    (out / "tracks").mkdir(parents=True)
    (out / "tracks" / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (out / "review.jsonl").write_text("".join(
        json.dumps({"stream": "cam", "track_id": t, "answer": a, "crops": []}) + "\n" for t, a in answers.items()))
    return out


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(DetectorConfig(model=str(tiny_model()), imgsz=IMGSZ, device="cpu"))


def test_confirmed_real_tracks_join_the_id_set_whole(tmp_path: Path, detector: Detector) -> None:
    run = _reviewed_run(tmp_path / "run", detector, {1: "real", 2: "hallucination"})
    boxes, tracks = reviewed_real_boxes(str(run), detector)
    assert len(boxes) == 12 and set(tracks) == {0}  # track 1's boxes only, one group
    request = dict(method="energy", id_spec=str(video(40, seed=1)), min_track_frames=2, min_boxes=5)
    plain, notes_plain = fit_filter(detector, FitRequest(**request))
    reviewed, notes = fit_filter(detector, FitRequest(**request, reviewed=[str(run)]))
    assert "12 reviewed boxes of 1 tracks confirmed real" in notes[0] and "reviewed" not in notes_plain[0]
    def total(filt) -> int:
        return filt.metadata["fit_boxes"] + filt.metadata["calibration_boxes"]

    assert total(reviewed) == total(plain) + 12


def test_reviews_of_another_detector_or_without_answers_are_refused(tmp_path: Path, detector: Detector) -> None:
    other = _reviewed_run(tmp_path / "other", detector, {1: "real"}, weights="f" * 64)
    with pytest.raises(GhostboxError, match="another detector"):
        reviewed_real_boxes(str(other), detector)
    none = _reviewed_run(tmp_path / "none", detector, {1: "hallucination"})
    with pytest.raises(GhostboxError, match="no track confirmed real"):
        reviewed_real_boxes(str(none), detector)


def test_the_command_line(tmp_path: Path, detector: Detector) -> None:
    run = _reviewed_run(tmp_path / "run", detector, {1: "real", 2: "real"})
    out = tmp_path / "cam.filter.safetensors"
    proc = ghostbox("calibrate", "--id", video(40, seed=1), "--method", "energy", "--reviewed", run, "--model",
                    tiny_model(), "--imgsz", IMGSZ, "--device", "cpu", "--min-track-frames", 2, "--min-boxes", 5,
                    "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "+ 24 reviewed boxes of 2 tracks confirmed real" in proc.stdout and out.is_file()
