"""The sink core without sockets: JSONL schema, policy "drop", flagged-crop archive, summary."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.detections import Detections
from pipeline.sinks.live_feed import LiveFeed, decode
from pipeline.stream import protocol as P
from pipeline.stream.config import GraphConfig, SinkConfig, TracksConfig
from pipeline.stream.sink_stage import Delivered, SinkCore


def _delivered(seq: int, policy: str | None) -> Delivered:
    image = np.full((60, 80, 3), 90, np.uint8)
    dets = Detections(
        xyxy=np.array([[5, 5, 30, 40], [40, 10, 70, 50]], np.float32), confidence=np.array([0.9, 0.6], np.float32),
        class_id=np.array([0, 1]), logits=np.zeros((2, 2), np.float32), box_features=np.zeros((2, 4), np.float32),
        level=np.zeros(2, np.int8), class_names=("car", "sign"), image_size=(80, 60), source="cam.mp4", frame=seq,
        crops=[image[5:40, 5:30], image[10:50, 40:70]],
        data={"score": np.array([1.0, -3.0]), "threshold": np.array([0.0, 0.0]),
              "hallucination": np.array([False, True])},
    )
    fields, parts = P.detections_parts(dets, "raw")
    parts.append(P.raw_part("image", image))
    stamps = {"capture": 100.0 + seq, "detect_start": 100.01 + seq, "detect_end": 100.02 + seq, "sink_in": 100.03 + seq}
    message = P.decode(P.encode(P.DETECTIONS, "cam", parts, seq=seq, frame=seq, origin="cam.mp4", fps=10.0,
                                t=stamps, policy=policy, **fields))
    return Delivered("cam", seq, P.detections_from(message), message.header, message)


def test_flag_policy_writes_every_box_and_archives_flagged_crops(tmp_path: Path) -> None:
    core = SinkCore(SinkConfig(out=str(tmp_path)), ["cam"], "lossless")
    for seq in range(3):
        core.write(_delivered(seq, "flag"))
    core.end_source("cam", {"status": "ok", "dropped": 0}, {"duplicates": 0})
    summary = core.close("complete")
    rows = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in rows] == [0, 1, 2] and rows[1]["frame"] == 1 and rows[0]["source"] == "cam.mp4"
    assert [b["hallucination"] for b in rows[0]["boxes"]] == [False, True]
    assert rows[0]["boxes"][1]["score"] == -3.0 and rows[0]["t"]["capture"] == 100.0
    assert summary["frames"] == 3 and summary["boxes"] == 6 and summary["flagged"] == 3 and summary["kept"] == 3
    assert summary["per_source"]["cam"]["status"] == "ok"
    assert set(summary["stages_ms"]) >= {"detect", "reorder+write"}
    index = [json.loads(line) for line in (tmp_path / "flagged" / "index.jsonl").read_text().splitlines()]
    assert len(index) == 3 and index[0]["label"] == "sign" and index[0]["score"] == -3.0
    crop = cv2.imread(str(tmp_path / "flagged" / index[0]["file"]))
    assert crop.shape == (40, 30, 3)
    capture = cv2.VideoCapture(str(tmp_path / "annotated" / "cam.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["frames"] == 3


def test_drop_policy_leaves_flagged_boxes_out_but_archives_them(tmp_path: Path) -> None:
    # the policy comes from the graph's filter file, never from a message
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False), ["cam"], "lossless", policy="drop")
    core.write(_delivered(0, "drop"))
    core.close("complete")
    [row] = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert len(row["boxes"]) == 1 and row["dropped_boxes"] == 1 and not row["boxes"][0]["hallucination"]
    assert len((tmp_path / "flagged" / "index.jsonl").read_text().splitlines()) == 1


def _moving(seq: int, margins: tuple[float, float]) -> Delivered:
    """Two boxes moving right 2 px a frame; the filter's score minus threshold is `margins`."""
    delivered = _delivered(seq, "drop")
    shift = np.array([2 * seq, 0, 2 * seq, 0], np.float32)
    dets = delivered.dets
    moved = Detections(dets.xyxy + shift, dets.confidence, dets.class_id, dets.logits, dets.box_features, dets.level,
                       class_names=dets.class_names, image_size=dets.image_size, source=dets.source, frame=seq,
                       crops=dets.crops, data={"score": np.array(margins), "threshold": np.zeros(2),
                                               "hallucination": np.array(margins) < 0})
    return Delivered(delivered.source, seq, moved, delivered.header, delivered.message)


def test_tracked_sources_act_on_the_track_verdict(tmp_path: Path) -> None:
    """A real object dipping below its threshold for a frame is neither dropped nor flagged; a
    hallucination clearing it for a frame stays flagged (policy drop: left out of the rows)."""
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False), ["cam"], "lossless", policy="drop",
                    tracks={"cam": TracksConfig()})
    margins = [(2.0, -3.0), (2.5, -2.5), (-0.4, 0.5), (2.0, -3.0), (1.5, 0.3), (2.2, -2.0)]
    for seq, pair in enumerate(margins):
        core.write(_moving(seq, pair))
    summary = core.close("complete")
    rows = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert [len(r["boxes"]) for r in rows] == [1] * 6  # the first box kept in every frame, the second never
    assert len({r["boxes"][0]["track_id"] for r in rows}) == 1 and rows[0]["boxes"][0]["track_id"] >= 0
    assert rows[2]["boxes"][0]["hallucination"] and not rows[2]["boxes"][0]["track_hallucination"]
    assert [r["dropped_boxes"] for r in rows] == [1] * 6
    assert summary["flagged"] == 6 and summary["per_source"]["cam"]["tracks"]["tracks"] == 2
    assert summary["per_source"]["cam"]["tracks"]["hallucinations"] == 1
    # a flagged track's crops: the first, then one per crop_gap frames (up to crops_per_track), not one a frame
    [crop] = [json.loads(line) for line in (tmp_path / "flagged" / "index.jsonl").read_text().splitlines()]
    assert crop["seq"] == 0 and crop["track_id"] >= 0 and crop["track_id"] != rows[0]["boxes"][0]["track_id"]


def test_a_long_flagged_track_keeps_a_few_crops_spread_over_its_life(tmp_path: Path) -> None:
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False), ["cam"], "lossless", policy="flag",
                    tracks={"cam": TracksConfig(crops_per_track=3, crop_gap=10)})
    for seq in range(60):
        core.write(_moving(seq, (2.0, -3.0)))
    core.close("complete")
    index = [json.loads(line) for line in (tmp_path / "flagged" / "index.jsonl").read_text().splitlines()]
    assert [c["seq"] for c in index] == [0, 10, 20] and len({c["track_id"] for c in index}) == 1


def test_graph_tracks_settings_and_which_sources_are_tracked() -> None:
    graph = GraphConfig(sources=[{"id": "v", "uri": "clip.mp4"}, {"id": "photos", "uri": "folder"},
                                 {"id": "cam", "uri": "rtsp://10.0.0.2/s"}, {"id": "s", "uri": "synth:frames=3"}])
    # by default: sequences (video, cameras, streams, synth), not folders of unrelated photos
    assert [graph.tracks.on_for(s) for s in graph.sources] == [True, False, True, True]
    off = GraphConfig(sources=graph.sources, tracks={"enabled": False})
    assert not any(off.tracks.on_for(s) for s in off.sources)
    with pytest.raises(ValidationError, match="unknown ByteTrack setting"):
        TracksConfig(bytetrack={"track_bufer": 10})


def test_a_frame_the_broker_dropped_is_counted_once(tmp_path: Path) -> None:
    """Live: a stale frame the broker dropped leaves a gap the sink skips; the account says it once
    (in `dropped`), so delivered + dropped + skipped + late is the source's total."""
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False, crops=False), {"cam": True}, "live")
    for seq in (0, 1, 3):
        core.write(_delivered(seq, "flag"))
    core.end_source("cam", {"status": "ok", "dropped": 1, "total": 4, "stats": {"broker_dropped": 1}},
                    {"delivered": 3, "skipped": 1, "late": 0, "duplicates": 0})
    cam = core.close("interrupted")["per_source"]["cam"]
    assert (cam["frames"], cam["dropped"], cam["skipped"], cam["late"]) == (3, 1, 0, 0)


def test_tracked_sources_fill_the_gallery_with_head_arrays_and_feed_the_web_view(tmp_path: Path) -> None:
    """Every track that lasted settle_boxes boxes gets a few crops in tracks/ (flagged or kept), each
    line with the logits and box features `calibrate --reviewed` needs; the feed gets annotated
    frames at most `fps` a second and counters, and a feed nobody takes never stops the writes."""
    sent: list[bytes] = []
    feed = LiveFeed(lambda data: sent.append(data) or len(sent) <= 2, fps=1e9)  # every frame
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False), ["cam"], "lossless", policy="flag",
                    tracks={"cam": TracksConfig(crops_per_track=2, crop_gap=5, settle_boxes=3)}, feed=feed)
    for seq in range(20):
        core.write(_moving(seq, (2.0, -3.0)))
    core.end_source("cam", {"status": "ok", "dropped": 0}, {"duplicates": 0})
    core.feed_stats()
    summary = core.close("complete")
    gallery = [json.loads(line) for line in (tmp_path / "tracks" / "index.jsonl").read_text().splitlines()]
    by_track: dict[int, list[dict]] = {}
    for row in gallery:
        by_track.setdefault(row["track_id"], []).append(row)
    assert len(by_track) == 2 and all([r["seq"] for r in rows] == [2, 7] for rows in by_track.values())
    assert {r["track_hallucination"] for r in gallery} == {True, False}
    assert all(len(r["logits"]) == 2 and len(r["box_features"]) == 4 for r in gallery)
    assert all((tmp_path / "tracks" / r["file"]).is_file() for r in gallery)
    assert summary["writes"]["track_crops"] == {"written": 4, "failed": 0} and summary["status"] == "complete"
    messages = [decode(data) for data in sent]
    frames = [m for m in messages if m and m["kind"] == "frame"]
    stats = [m for m in messages if m and m["kind"] == "stats"]
    assert len(frames) == 20 and cv2.imdecode(np.frombuffer(frames[0]["jpeg"], np.uint8), 1).shape == (60, 80, 3)
    assert stats[-1]["sources"]["cam"]["frames"] == 20 and stats[-1]["sources"]["cam"]["tracks"] == 2
    assert feed.dropped == len(sent) - 2 and feed.sent == 2


def test_the_feed_sends_at_most_fps_frames_a_second_per_source() -> None:
    sent: list[bytes] = []
    feed = LiveFeed(lambda data: sent.append(data) or True, fps=4.0)
    image = np.zeros((40, 50, 3), np.uint8)
    for k in range(100):  # 10 s of frames at 10 frames/s, two sources
        for source in ("a", "b"):
            if feed.frame_due(source, now=k * 0.1):
                feed.frame(source, k, image, now=k * 0.1)
    per_source = {s: sum(1 for d in sent if decode(d)["source"] == s) for s in ("a", "b")}
    assert per_source == {"a": 34, "b": 34}  # every third frame (0.3 s >= 0.25 s apart)
