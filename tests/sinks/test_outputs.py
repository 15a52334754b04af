"""The outputs behind `pipeline.sinks.output.Output`: the filter's "drop" policy applied in one place
(`policy.shown`), one row builder for `ghostbox detect` and the stream sinks, the image decoded only
when an output wants it, and `ghostbox detect`'s annotated images and videos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pipeline.detections import Detections
from pipeline.filter.calibrate import calibrate
from pipeline.filter.hallucination_filter import HallucinationFilter
from pipeline.sinks.annotated_media import AnnotatedMedia
from pipeline.sinks.crop_outputs import FlaggedCrops
from pipeline.sinks.detections_file import DetectionsFile
from pipeline.sinks.jsonl import frame_row
from pipeline.sinks.output import FrameRecord
from pipeline.sinks.policy import shown
from tests.helpers.filter_fixtures import CLASS_NAMES, WORLD, detections, fitted, id_test, ood_hidden


def _frame(seq: int = 0, source: str = "cam", **kwargs) -> FrameRecord:
    dets = Detections(
        xyxy=np.array([[5, 5, 30, 40], [40, 10, 70, 50]], np.float32), confidence=np.array([0.9, 0.6], np.float32),
        class_id=np.array([0, 1]), logits=np.zeros((2, 2), np.float32), box_features=np.zeros((2, 4), np.float32),
        level=np.zeros(2, np.int8), class_names=("car", "sign"), image_size=(80, 60), source="cam.mp4", frame=seq,
        data={"score": np.array([1.0, -3.0]), "threshold": np.array([0.0, 0.0]),
              "hallucination": np.array([False, True])})
    return FrameRecord.decoded(source, seq, dets, np.full((60, 80, 3), 90, np.uint8), **kwargs)


def test_the_filter_flags_whatever_its_policy_and_drop_is_the_outputs_choice() -> None:
    scorer = fitted("mahalanobis")
    cal = calibrate(scorer, WORLD.id_boxes(800, seed=50), class_names=CLASS_NAMES, shape="per-bin")
    dets = detections(Detections.merge([id_test()[:40], ood_hidden()[:40]]))
    flagged = HallucinationFilter(scorer, cal, CLASS_NAMES, {}, policy="flag").apply(dets)
    marked = HallucinationFilter(scorer, cal, CLASS_NAMES, {}, policy="drop").apply(dets)
    assert len(marked) == len(dets)  # the drop policy is recorded in the filter, not acted on there
    flags = np.asarray(marked.data["hallucination"], bool)
    np.testing.assert_array_equal(flags, flagged.data["hallucination"])
    assert 0 < flags.sum() < len(dets)
    kept, left_out = shown(marked, flags, "drop")
    assert left_out == flags.sum() and len(kept) == len(dets) - left_out and not kept.data["hallucination"].any()
    np.testing.assert_array_equal(kept.xyxy, dets.xyxy[~flags])
    assert (kept.source, kept.frame) == (dets.source, dets.frame)
    for policy in ("flag", None):
        every, none_left_out = shown(marked, flags, policy)
        assert every is marked and none_left_out == 0


def test_one_row_builder_for_detect_and_the_stream() -> None:
    frame = _frame(3)
    detect_row = json.loads(frame_row(frame, "drop"))
    assert set(detect_row) == {"source", "frame", "width", "height", "boxes"}  # detect's schema: nothing added
    assert len(detect_row["boxes"]) == 1 and not detect_row["boxes"][0]["hallucination"]
    stamps = {"capture": 100.0, "sink_out": 100.25}
    stream = _frame(3, ident={"stream": "cam", "seq": 3}, error="not scored", stamps=stamps)
    row = json.loads(frame_row(stream, "drop", count_dropped=True))
    assert list(row) == ["source", "frame", "width", "height", "boxes", "stream", "seq", "dropped_boxes", "error",
                         "t", "latency_ms"]
    assert row["dropped_boxes"] == 1 and row["latency_ms"] == 250.0 and row["t"] == stamps
    assert len(json.loads(frame_row(stream, "flag", count_dropped=True))["boxes"]) == 2


def test_the_image_is_decoded_only_when_an_output_wants_it(tmp_path: Path) -> None:
    calls: list[int] = []

    def load() -> np.ndarray:
        calls.append(1)
        return np.full((60, 80, 3), 90, np.uint8)

    rows, crops = DetectionsFile(tmp_path), FlaggedCrops(tmp_path)
    quiet = _frame()
    unflagged = FrameRecord("cam", 0, quiet.dets.with_data(hallucination=np.zeros(2, bool)), load)
    for output in (rows, crops):
        output.write(unflagged)
    assert calls == []  # rows, and no flagged box to cut: the pixels were never needed
    flagged = FrameRecord("cam", 1, quiet.dets, load)
    for output in (rows, crops):
        output.write(flagged)
    assert flagged.annotated("flag") is not None and flagged.annotated(None) is not None
    assert len(calls) == 1  # decoded once, for the crop and both annotations
    for output in (rows, crops):
        output.close()
    report = crops.report(["cam"])
    assert report.per_source == {"cam": {"crops_written": 1, "crops_failed": 0}} and report.written == 1
    assert rows.report(["cam"]).written == 2


def test_detect_annotated_images_and_videos(tmp_path: Path) -> None:
    media = AnnotatedMedia(tmp_path / "annotated", policy="drop")
    for seq in range(4):
        media.write(_frame(seq, source="in/clip.mp4"))
    media.write(_frame(0, source="a/img0.png"))
    media.write(_frame(0, source="b/img0.png"))  # the same stem: a name of its own
    media.close()
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir()) == ["clip.mp4", "img0.jpg", "img0_2.jpg"]
    capture = cv2.VideoCapture(str(tmp_path / "annotated" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    capture.release()
    report = media.report([])
    assert report.written == 6 and report.lost == 0 and report.problems == []
    # drop: the flagged box is not drawn (its dashed magenta outline would be there under flag)
    image = cv2.imread(str(tmp_path / "annotated" / "img0.jpg"))
    flag = AnnotatedMedia(tmp_path / "flag", policy="flag")
    flag.write(_frame(0, source="img0.png"))
    assert not np.array_equal(image, cv2.imread(str(tmp_path / "flag" / "img0.jpg")))


def test_detect_annotated_video_counts_frames_the_file_lacks(tmp_path: Path, monkeypatch) -> None:
    """Frames handed to the writer that the released file does not hold are lost, as a stream's video counts them."""
    from pipeline.sinks import video_file

    monkeypatch.setattr(video_file, "_frames_in", lambda path, expected: expected - 1)  # the disk took the last one
    media = AnnotatedMedia(tmp_path / "annotated")
    for seq in range(4):
        media.write(_frame(seq, source="in/clip.mp4"))
    media.close()
    report = media.report([])
    assert report.written == 4 and report.lost == 1
    assert report.problems == ["video annotated/clip.mp4: 4 frames written, the file holds 3"]
