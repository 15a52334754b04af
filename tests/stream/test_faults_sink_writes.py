"""Faults at the sink: a full disk under each output, and messages that contradict each other.

Nothing may be lost or faked silently: JSONL keeps whole lines and counts the rows it lost, a
crop that was not written gets no index line, a video is checked after release, summary.json
is still written (a reserve keeps room for it) and says "incomplete" with one line per problem.

The full disk is a tiny tmpfs (`mount -t tmpfs`, root only: skipped otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.sinks.detections_file import DetectionsFile
from pipeline.sinks.jsonl import LineFile
from pipeline.sinks.output import FrameRecord
from pipeline.sinks.video_output import VideoOutput
from pipeline.stream import protocol as P
from pipeline.stream.config import GraphConfig, SinkConfig, resolve
from pipeline.stream.sink_stage import Delivered, SinkCore, SinkStage
from tests.helpers.stream_helpers import sealed

RNG = np.random.default_rng(0)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[[Path, int], Path]]:
    """mount(folder, kilobytes): a tmpfs of that size at `folder`, unmounted after the test."""
    mounted: list[Path] = []

    def mount(folder: Path, kilobytes: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {proc.stderr.strip() or proc.returncode}")
        mounted.append(folder)
        return folder

    try:
        yield mount
    finally:
        for folder in reversed(mounted):
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _noise(height: int = 120, width: int = 160) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)  # compresses badly: fills a disk fast


def _message(seq: int, source: str = "cam", image: np.ndarray | None = None, policy: str | None = None,
             shift: float = 0.0) -> list:
    image = np.full((60, 80, 3), 90, np.uint8) if image is None else image
    height, width = image.shape[:2]
    xyxy = np.array([[2, 2, width - 2, height - 2], [5 + shift, 5, 30 + shift, 40]], np.float32)
    dets = Detections(
        xyxy=xyxy, confidence=np.array([0.9, 0.6], np.float32), class_id=np.array([0, 1]),
        logits=np.zeros((2, 2), np.float32), box_features=np.zeros((2, 4), np.float32), level=np.zeros(2, np.int8),
        class_names=("car", "sign"), image_size=(width, height), source="cam.mp4", frame=seq,
        data={"score": np.array([-2.0, 1.0]), "threshold": np.zeros(2), "hallucination": np.array([True, False])},
    )
    fields, parts = P.detections_parts(dets, "none")
    parts.append(P.raw_part("image", image))
    header = {"policy": policy} if policy else {}
    return P.encode(P.DETECTIONS, source, parts, seq=seq, frame=seq, origin="cam.mp4", fps=10.0,
                    t={"capture": time.time()}, **header, **fields)


def _delivered(seq: int, **kwargs) -> Delivered:
    message = P.decode(_message(seq, **kwargs))
    return Delivered(message.topic, seq, P.detections_from(message), message.header, message)


def _lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert not raw or raw.endswith(b"\n"), f"{path} ends inside a line"
    return [json.loads(line) for line in raw.decode().splitlines()]  # every line parses


def _finish(core: SinkCore, frames: int, source: str = "cam") -> dict:
    core.eos_received(source, {"status": "ok", "total": frames}, frames)
    core.end_source(source, None, {"delivered": frames, "skipped": 0})
    return core.close("complete")


# -- a full disk --------------------------------------------------------------------------------------

def test_video_on_a_full_filesystem_is_an_error_and_the_run_incomplete(tmp_path, tiny_fs, monkeypatch) -> None:
    """mp4 hides the failure (every write() says True) until release: the check after it catches it."""
    out = tmp_path / "out"
    tiny_fs(out / "annotated", 192)
    core = SinkCore(SinkConfig(out=str(out), crops=False), ["cam"], "lossless")
    monkeypatch.setattr(VideoOutput, "MIN_FREE", 0)  # no early stop: feed the dead writer, as before this check
    frames = 40
    for seq in range(frames):
        core.write(_delivered(seq, image=_noise()))
    summary = _finish(core, frames)
    video = summary["writes"]["videos"]["annotated/cam.mp4"]
    # some writes fail visibly (then the writer is released at once), the last ones only at release
    assert video["written"] + video["missed"] == frames and video["verified"] < video["written"]
    assert summary["status"] == "incomplete"
    [line] = [p for p in summary["problems"] if p.startswith("video annotated/cam.mp4")]
    assert f"{video['written']} frames written, the file holds {video['verified']}" in line and "KB free" in line
    assert len(_lines(out / "detections.jsonl")) == frames  # the rows are elsewhere and complete
    assert json.loads((out / "summary.json").read_text())["status"] == "incomplete"


def test_video_stops_before_the_disk_is_full_and_stays_playable(tmp_path, tiny_fs) -> None:
    import cv2

    out = tmp_path / "out"
    tiny_fs(out / "annotated", 2048)
    core = SinkCore(SinkConfig(out=str(out), crops=False, jsonl=False), ["cam"], "lossless")
    assert VideoOutput.MIN_FREE == 1 << 20  # the default: stops with ~1.4 MB free here (~22 KB a frame)
    frames = 60
    for seq in range(frames):
        core.write(_delivered(seq, image=_noise(240, 320)))
    summary = _finish(core, frames)
    video = summary["writes"]["videos"]["annotated/cam.mp4"]
    assert 0 < video["written"] < frames and video["verified"] == video["written"]
    assert video["missed"] == frames - video["written"] and "KB free" in video["error"]
    assert summary["status"] == "incomplete"
    assert any(p.startswith(f"video annotated/cam.mp4: {video['written']} frames written, "
                            f"{frames - video['written']} more not written") for p in summary["problems"])
    capture = cv2.VideoCapture(str(out / "annotated" / "cam.mp4"))  # finalised while there was room
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == video["written"]
    capture.release()


def test_calibration_clip_on_a_full_filesystem(tmp_path, tiny_fs, monkeypatch) -> None:
    out = tmp_path / "out"
    tiny_fs(out / "calibration", 128)
    core = SinkCore(SinkConfig(out=str(out), video=False, crops=False, calibration_clip_frames=30), ["cam"],
                    "lossless")
    monkeypatch.setattr(VideoOutput, "MIN_FREE", 0)
    for seq in range(30):
        core.write(_delivered(seq, image=_noise()))
    summary = _finish(core, 30)
    clip = summary["writes"]["videos"]["calibration/cam.avi"]
    assert clip["written"] + clip["missed"] == 30 and (clip["missed"] or clip["verified"] < clip["written"])
    assert summary["status"] == "incomplete"
    assert any(p.startswith("video calibration/cam.avi") for p in summary["problems"])
    assert summary["outputs"]["calibration_clips"]["cam"]["error"]


def test_jsonl_on_a_full_filesystem_keeps_whole_lines_and_counts_the_rest(tmp_path, tiny_fs) -> None:
    out = tiny_fs(tmp_path / "out", 96)  # summary.json too: the 64 KB reserve leaves ~32 KB for rows
    core = SinkCore(SinkConfig(out=str(out), video=False, crops=False), ["cam", "other"], "lossless")
    core.rows.lines.flush_s = 0.0  # a write per row, so the disk fills mid-line
    frames = 150
    for seq in range(frames):
        core.write(_delivered(seq))
        core.write(_delivered(seq, source="other"))
    summary = core.close("complete")
    rows = _lines(out / "detections.jsonl")
    written = summary["writes"]["jsonl"]
    assert 0 < len(rows) < 2 * frames and written["written"] == len(rows)
    assert written["lost"] == 2 * frames - len(rows) and "No space left" in written["error"]
    per_source = summary["per_source"]
    assert per_source["cam"]["rows_lost"] + per_source["other"]["rows_lost"] == written["lost"]
    # summary.json was written on the full disk, thanks to the reserve, and names the loss
    saved = json.loads((out / "summary.json").read_text())
    assert saved["status"] == "incomplete"
    assert any(p.startswith(f"detections.jsonl: {written['lost']} rows not written") for p in saved["problems"])
    assert not (out / "summary.reserve").exists() and not (out / "summary.json.tmp").exists()
    assert core.summary_error is None


def test_summary_that_cannot_be_written_is_an_error(tmp_path, tiny_fs) -> None:
    out = tiny_fs(tmp_path / "out", 16)  # too small even for the reserve
    core = SinkCore(SinkConfig(out=str(out), video=False, crops=False), ["cam"], "lossless")
    assert not (out / "summary.reserve").exists()
    core.rows.lines.flush_s = 0.0
    for seq in range(100):
        core.write(_delivered(seq))
    core.close("complete")
    assert core.summary_error and "summary.json" in core.summary_error and "No space left" in core.summary_error
    assert not (out / "summary.json.tmp").exists()
    assert _lines(out / "detections.jsonl")  # whole lines, even here


def test_crops_on_a_full_filesystem_get_no_index_line(tmp_path, tiny_fs) -> None:
    out = tmp_path / "out"
    flagged = tiny_fs(out / "flagged", 160)
    core = SinkCore(SinkConfig(out=str(out), video=False), ["cam"], "lossless")
    frames = 12
    for seq in range(frames):
        core.write(_delivered(seq, image=_noise(200, 240)))  # one flagged box covering the noise: ~60 KB a crop
    summary = _finish(core, frames)
    crops = summary["writes"]["crops"]
    assert crops["written"] > 0 and crops["failed"] > 0 and crops["written"] + crops["failed"] == frames
    files = sorted(p.name for p in (flagged / "cam").iterdir())
    assert len(files) == crops["written"]  # no half-written jpg left behind
    index = _lines(flagged / "index.jsonl") if (flagged / "index.jsonl").exists() else []
    lost = summary["writes"]["flagged_index"]["lost"]
    assert len(index) + lost == crops["written"]
    assert all((flagged / row["file"]).is_file() for row in index)
    assert summary["status"] == "incomplete"
    assert any(p.startswith(f"flagged/cam: {crops['failed']} crops not written") for p in summary["problems"])


def test_detections_file_of_detect_keeps_whole_lines(tmp_path, tiny_fs) -> None:
    folder = tiny_fs(tmp_path / "out", 24)
    dets = _delivered(0).dets
    rows = DetectionsFile(folder, max_lines=1)
    for i in range(200):
        named = dets.with_meta(source="x" * (i % 37))  # rows of different lengths
        rows.write(FrameRecord.decoded(named.source, 0, named, np.zeros((2, 2, 3), np.uint8)))
    rows.close()
    report = rows.report([])
    lines = _lines(folder / "detections.jsonl")
    assert report.written == len(lines) > 0 and report.lost == 200 - len(lines) > 0
    assert report.error and "No space left" in report.error and str(folder) in report.error


def test_line_file_cuts_a_torn_tail_left_by_an_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "index.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2')
    lines = LineFile(path, append=True)
    lines.add('{"a":3}')
    lines.close()
    assert _lines(path) == [{"a": 1}, {"a": 3}]


# -- what peers say ---------------------------------------------------------------------------------

def test_eos_without_dropped_or_total_does_not_crash(tmp_path: Path) -> None:
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False, crops=False), ["cam", "gate"], "lossless")
    eos = P.decode(P.control(P.EOS, "cam", status="ok", total=2)).header  # schema-valid, no `dropped`
    assert core.eos_received("cam", eos, 0) == 2
    # schema-valid too, but a real end always has a total: not believed (the stream goes on), a conflict
    assert core.eos_received("gate", P.decode(P.control(P.EOS, "gate", status="ok")).header, 3) is None
    assert core.eos_received("gate", {"status": "ok", "total": 5, "dropped": 0}, 3) == 5  # the real one
    for seq in range(2):
        core.write(_delivered(seq))
    core.end_source("cam", None, {"delivered": 2})
    core.end_source("gate", None, {"delivered": 5})
    summary = core.close("complete")
    assert summary["per_source"]["cam"]["dropped"] == 0 and summary["per_source"]["cam"]["conflicts"] == 0
    gate = summary["per_source"]["gate"]
    assert gate["conflicts"] == 1 and "without a frame count, after 3 frames" in gate["conflict"]
    assert summary["status"] == "incomplete"


def test_policy_in_a_message_header_is_ignored(tmp_path: Path) -> None:
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False, crops=False), ["cam"], "lossless")  # no filter
    core.write(_delivered(0, policy="drop"))
    summary = _finish(core, 1)
    [row] = _lines(tmp_path / "detections.jsonl")
    assert len(row["boxes"]) == 2 and "dropped_boxes" not in row and summary["policy"] is None
    assert summary["status"] == "complete" and summary["problems"] == []


def test_eos_conflicts_make_the_run_incomplete(tmp_path: Path) -> None:
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False, crops=False), ["a", "b", "c", "d"], "lossless")
    assert core.eos_received("a", {"status": "ok", "total": 3}, 3) == 3
    assert core.eos_received("a", {"status": "ok", "total": 5}, 3) is None  # a second EOS, another total
    assert core.eos_received("a", {"status": "ok", "total": 3}, 3) is None  # the same again: nothing to say
    assert core.eos_received("b", {"status": "ok", "total": 2}, 4) is None  # fewer than already delivered
    core.eos_received("c", {"status": "ok", "total": 2}, 2)
    core.check_frame("c", 7, _delivered(7).dets, {})  # detections after the end
    core.check_frame("d", 1, _delivered(1).dets, {})
    core.check_frame("d", 1, _delivered(1).dets, {})  # a re-send with the same boxes: normal
    core.check_frame("d", 1, _delivered(1, shift=20.0).dets, {})  # the same frame, other boxes
    per_source = core.summary("running")["per_source"]
    assert per_source["a"]["conflicts"] == 1
    assert "second EOS says 5 frames, the first said 3" in per_source["a"]["conflict"]
    assert "EOS says 2 frames, 4 were already delivered" in per_source["b"]["conflict"]
    assert "frame 7 arrived after the EOS said 2 frames" in per_source["c"]["conflict"]
    assert per_source["d"]["conflicts"] == 1 and "different boxes" in per_source["d"]["conflict"]
    for sid in "abcd":
        core.end_source(sid, {"status": "ok", "total": 0}, {})
    summary = core.close("complete")
    assert summary["status"] == "incomplete"
    assert sum(p.startswith("source ") and "conflicting" in p for p in summary["problems"]) == 4


def test_source_problems_and_an_interrupted_run(tmp_path: Path) -> None:
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False, crops=False), ["clip", "gate", "cam"], "lossless")
    stats = {"expected": 300, "read": 157, "unreadable": 0, "unreadable_files": [],
             "truncated": [{"file": "x.avi", "read": 157, "expected": 300}], "resent": 2, "junk": "x"}
    core.eos_received("clip", {"status": "incomplete", "total": 157, "stats": stats}, 0)
    core.end_source("clip", None, {"delivered": 157})
    core.eos_received("cam", {"status": "ok", "total": 10}, 0)
    for seq in range(4):
        core.write(_delivered(seq))
    core.end_source("cam", None, {"delivered": 4}, finished=False)
    core.end_source("gate", {"status": "interrupted"}, {}, finished=False)
    summary = core.close("interrupted")
    assert summary["status"] == "interrupted"
    clip = summary["per_source"]["clip"]
    assert clip["expected"] == 300 and clip["read"] == 157 and clip["truncated"][0]["file"] == "x.avi"
    assert clip["resent"] == 2 and "junk" not in clip and clip["status"] == "incomplete"
    assert summary["problems"] == [
        "source clip: 157 of 300 frames read ('x.avi' ends early)",
        "source gate: end never received (0 frames delivered)",
        "source cam: 6 of 10 frames missing (the sink stopped before they arrived)",
    ]


def _stage_with_a_pusher(tmp_path: Path, sources: list[str]) -> tuple:
    """A sink stage on an ipc socket and a PUSH socket connected to it (no other stage running)."""
    import zmq

    from tests.helpers.stream_helpers import short_dir

    graph = resolve(GraphConfig.model_validate({
        "sources": [{"id": sid, "uri": f"{sid}.mp4"} for sid in sources], "detector": {"model": "tiny.pt"},
        "sinks": [{"name": "out", "out": str(tmp_path / "out"), "video": False}],
    }), short_dir())
    stage = SinkStage(graph, "out")
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.connect(graph.sink("out").endpoint.url)
    return graph, stage, ctx, push


def test_forged_messages_reach_the_stage_and_never_crash_it(tmp_path: Path) -> None:
    """The stage's own receive path: EOS without `dropped`, without `total`, twice; a header policy."""
    graph, stage, ctx, push = _stage_with_a_pusher(tmp_path, ["cam", "gate"])
    try:
        for seq in (1, 0, 1):  # out of order, and a re-send
            push.send_multipart(sealed(graph, _message(seq, policy="drop")))
        push.send_multipart(sealed(graph, P.control(P.EOS, "cam", status="ok", total=2)))
        push.send_multipart(sealed(graph, P.control(P.EOS, "cam", status="ok", total=9)))
        push.send_multipart(sealed(graph, _message(0, source="gate")))
        push.send_multipart(sealed(graph, P.control(P.EOS, "gate", status="ok")))  # no total: not believed
        # fewer than delivered: not believed either
        push.send_multipart(sealed(graph, P.control(P.EOS, "gate", status="ok", total=0)))
        push.send_multipart(sealed(graph, P.control(P.EOS, "gate", status="ok", total=1)))
        # without the seal key: a row for a frame never sent, and an end of stream cutting cam short
        push.send_multipart(_message(2))
        push.send_multipart(P.control(P.EOS, "cam", status="ok", total=1))
        time.sleep(0.2)
        guard = threading.Timer(30, stage.stop, ["test timeout"])  # a sink that waits for ever fails, never hangs
        guard.start()
        assert stage.run() == 0
        guard.cancel()
        assert stage.stopping is None
    finally:
        push.close()
        ctx.term()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["policy"] is None and summary["frames"] == 3
    cam, gate = summary["per_source"]["cam"], summary["per_source"]["gate"]
    assert cam["duplicates"] == 1 and cam["conflicts"] == 1 and "second EOS" in cam["conflict"]
    assert cam["forged"] == 2 and list(summary["forgers"].values()) == [2]
    assert any("2 forged message(s) refused, none written" in line and "ipc peer pid" in line
               for line in summary["problems"]), summary["problems"]
    assert gate["conflicts"] == 2 and gate["frames"] == 1 and "without a frame count" in gate["conflict"]
    assert summary["status"] == "incomplete"
    rows = _lines(tmp_path / "out" / "detections.jsonl")
    assert [(r["stream"], r["seq"]) for r in rows] == [("cam", 0), ("cam", 1), ("gate", 0)]
    assert all(len(r["boxes"]) == 2 for r in rows)
    assert not os.path.exists(tmp_path / "out" / "summary.reserve")


def test_sigterm_takes_what_is_queued_then_closes_interrupted(tmp_path: Path) -> None:
    graph, stage, ctx, push = _stage_with_a_pusher(tmp_path, ["cam"])
    try:
        for seq in range(3):
            push.send_multipart(sealed(graph, _message(seq)))
        push.send_multipart(sealed(graph, P.control(P.EOS, "cam", status="ok", total=5, dropped=0)))
        time.sleep(0.2)
        stage.stop("SIGTERM")  # before the loop even starts: only the drain takes the messages
        assert stage.run() == 0
    finally:
        push.close()
        ctx.term()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["frames"] == 3
    assert summary["problems"] == ["source cam: 2 of 5 frames missing (the sink stopped before they arrived)"]
    assert len(_lines(tmp_path / "out" / "detections.jsonl")) == 3
    progress = json.loads((Path(graph.run_dir) / "progress" / "sink_out.json").read_text())
    assert progress["done"] == 4  # three rows and the EOS


# -- end to end ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_with_a_full_video_disk_exits_1_and_names_the_video(tmp_path, tiny_fs) -> None:
    from tests.helpers.stream_helpers import (
        base_config,
        ended_run,
        short_dir,
        start_run,
        video,
        write_config,
    )

    run_dir = short_dir()
    out = tmp_path / "out"
    tiny_fs(out / "annotated", 256)
    config = base_config(out, [{"id": "clip", "uri": str(video(40))}], run_dir,
                         sinks=[{"name": "out", "out": str(out), "crops": False}])
    proc = start_run(write_config(tmp_path / "graph.yaml", config))
    with ended_run(proc, run_dir, settle=10) as leftovers:
        _, stderr = proc.communicate(timeout=120)
    assert not leftovers
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "incomplete", summary["problems"]
    assert any(p.startswith("video annotated/clip.mp4") for p in summary["problems"]), summary["problems"]
    assert len(_lines(out / "detections.jsonl")) == 40 and summary["frames"] == 40
    assert proc.returncode == 1, stderr[-3000:]


def test_a_result_of_another_epoch_on_a_lossless_stream_is_a_conflict(tmp_path: Path) -> None:
    """Issue 25, failure 1: rows forged with another epoch replaced the real ones, counted as mere duplicates."""
    core = SinkCore(SinkConfig(out=str(tmp_path), video=False, crops=False), ["cam"], "lossless")
    core.check_frame("cam", 0, _delivered(0).dets, {"epoch": 99})  # the forger's, first
    core.check_frame("cam", 0, _delivered(0).dets, {"epoch": 7})  # the source's own
    core.check_frame("cam", 1, _delivered(1).dets, {"epoch": 7})
    cam = core.summary("running")["per_source"]["cam"]
    assert cam["conflicts"] == 2 and "epoch 7, the stream's frames with epoch 99" in cam["conflict"]
    core.end_source("cam", {"status": "ok", "total": 0}, {})
    assert core.close("complete")["status"] == "incomplete"
    live = SinkCore(SinkConfig(out=str(tmp_path / "live"), video=False, crops=False), {"cam": True}, "live")
    live.check_frame("cam", 0, _delivered(0).dets, {"epoch": 1})
    live.check_frame("cam", 0, _delivered(0).dets, {"epoch": 2})  # a live camera restarted: a new epoch is normal
    assert live.summary("running")["per_source"]["cam"]["conflicts"] == 0

