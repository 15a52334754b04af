"""Faults in the input: unreadable files and videos cut short are detected and reported, never lost silently."""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from pipeline.errors import GhostboxError
from pipeline.sources.file_reader import FileReader
from pipeline.sources.frame_buffer import FrameBuffer
from pipeline.sources.media_files import MediaReport, count_frames, iter_frames
from pipeline.sources.synth_reader import SynthReader
from pipeline.stream import protocol as P
from pipeline.stream.source_stage import MAX_LISTED, Grabber, eos_fields

FRAMES = 60
EOS_KEYS = {"expected", "read", "unreadable", "unreadable_files", "truncated"}


# -- inputs -----------------------------------------------------------------------------------------

def write_video(path: Path, fourcc: str, frames: int = FRAMES) -> Path:
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (160, 128))
    assert writer.isOpened(), fourcc
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8))
    writer.release()
    return path


def cut(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def _boxes(data: bytes | bytearray, start: int = 0, end: int | None = None):  # noqa: ANN202
    end = len(data) if end is None else end
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        yield kind, start, size
        start += size


def faststart(path: Path) -> Path:
    """Move an MP4's index (moov) before its media data, as web video is laid out; a file cut short
    then still opens and announces all its frames."""
    data = path.read_bytes()
    top = {kind: (i, n) for kind, i, n in _boxes(data)}
    start, size = top[b"moov"]
    moov = bytearray(data[start:start + size])

    def shift(s: int, e: int) -> None:
        for kind, i, n in _boxes(moov, s, e):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift(i + 8, i + n)
            elif kind == b"stco":  # chunk offsets move by the size of the moved moov
                (count,) = struct.unpack(">I", moov[i + 12:i + 16])
                for j in range(i + 16, i + 16 + 4 * count, 4):
                    moov[j:j + 4] = struct.pack(">I", struct.unpack(">I", moov[j:j + 4])[0] + size)
            elif kind == b"co64":
                raise AssertionError("64-bit offsets not expected in a test clip")

    shift(8, size)
    rest = b"".join(data[i:i + n] for kind, i, n in _boxes(data) if kind not in (b"ftyp", b"moov"))
    i, n = top[b"ftyp"]
    path.write_bytes(data[i:i + n] + bytes(moov) + rest)
    return path


def blank_avi_frames(path: Path, frames: range) -> Path:
    """Zero the JPEG data of some frames of an MJPG AVI (the container stays intact)."""
    data = bytearray(path.read_bytes())
    i = data.index(b"movi") + 4
    index = 0
    while i + 8 <= len(data) and index < frames.stop:
        kind, size = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
        if kind.endswith(b"dc"):
            if index in frames:
                data[i + 8:i + 8 + size] = bytes(size)
            index += 1
        i += 8 + size + (size & 1)
    path.write_bytes(bytes(data))
    return path


def image_folder(root: Path, good: int = 4) -> Path:
    folder = root / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(good):
        cv2.imwrite(str(folder / f"img{i}.jpg"), rng.integers(0, 256, (112, 144, 3), dtype=np.uint8))
    (folder / "img_empty.jpg").write_bytes(b"")
    (folder / "img_garbage.png").write_bytes(b"\x89PNG not really")
    return folder


def read_all(spec: str | Path) -> tuple[list[int], MediaReport]:
    report = MediaReport()
    return [frame.index for frame in iter_frames([str(spec)], report)], report


# -- the media reader -------------------------------------------------------------------------------

def test_complete_inputs_report_complete(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", "MJPG")
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    report = MediaReport()
    frames = list(iter_frames([str(video), str(tmp_path / "a.jpg")], report))
    assert len(frames) == FRAMES + 1
    assert report.complete and report.problems() == []
    assert (report.expected, report.read) == (FRAMES + 1, FRAMES + 1)


def test_truncated_mjpg_avi_is_reported(tmp_path: Path) -> None:
    video = cut(write_video(tmp_path / "clip.avi", "MJPG"))
    assert count_frames([str(video)]) == FRAMES  # the header still announces them all
    indices, report = read_all(video)
    n = len(indices)
    assert 0 < n < FRAMES and indices == list(range(n))
    assert report.truncated == [{"file": str(video), "read": n, "expected": FRAMES}]
    assert report.unreadable == [] and not report.complete
    assert (report.expected, report.read) == (FRAMES, n)
    [line] = report.problems()
    assert line == f"'{video}': {n} of {FRAMES} frames read (the file ends early or a frame could not be decoded)"


def test_reading_resumes_after_corrupt_frames_in_the_middle(tmp_path: Path) -> None:
    video = blank_avi_frames(write_video(tmp_path / "clip.avi", "MJPG"), range(20, 23))
    indices, report = read_all(video)
    # the frames after the damage are read, and keep their position in the file
    assert indices == [*range(20), *range(23, FRAMES)]
    assert report.truncated == [{"file": str(video), "read": FRAMES - 3, "expected": FRAMES}]


def test_mp4_cut_short(tmp_path: Path) -> None:
    # OpenCV writes the index last: a plain MP4 cut short does not open at all
    plain = cut(write_video(tmp_path / "plain.mp4", "mp4v"))
    with pytest.raises(GhostboxError, match="plain.mp4.*cannot be opened"):
        count_frames([str(plain)])
    with pytest.raises(GhostboxError, match="plain.mp4.*cannot be opened"):
        read_all(plain)
    # index first (web layout): it opens, announces every frame and ends early
    fast = cut(faststart(write_video(tmp_path / "fast.mp4", "mp4v")))
    indices, report = read_all(fast)
    n = len(indices)
    assert 0 < n < FRAMES
    assert report.truncated == [{"file": str(fast), "read": n, "expected": FRAMES}]
    # inside a folder the unopenable one is skipped and named; the video count is then unknown
    indices, report = read_all(tmp_path)
    assert len(indices) == n and report.read == n
    assert report.unreadable == [str(plain)] and report.expected is None
    assert [t["file"] for t in report.truncated] == [str(fast)]
    assert report.problems()[0].startswith(f"'{plain}': cannot be opened")


def test_named_video_without_a_decodable_frame_is_an_error(tmp_path: Path) -> None:
    video = cut(write_video(tmp_path / "clip.avi", "MJPG"), 0.004)  # the header and no whole frame
    with pytest.raises(GhostboxError, match="clip.avi"):
        count_frames([str(video)])
    with pytest.raises(GhostboxError, match="clip.avi"):
        read_all(video)


def test_folder_with_corrupt_images(tmp_path: Path) -> None:
    folder = image_folder(tmp_path)
    assert count_frames([str(folder)]) == 6
    indices, report = read_all(folder)
    assert len(indices) == 4
    assert sorted(report.unreadable) == [str(folder / "img_empty.jpg"), str(folder / "img_garbage.png")]
    assert (report.expected, report.read, report.truncated) == (6, 4, [])
    problems = report.problems()
    assert len(problems) == 2 and all("not a readable image" in p and "skipped" in p for p in problems)
    assert f"'{folder / 'img_empty.jpg'}'" in " ".join(problems)


# -- ghostbox detect --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny() -> Path:
    from tests.helpers.stream_helpers import tiny_model

    return tiny_model()


def detect(tiny: Path, *args: object) -> int:
    from pipeline.cli.main import main

    return main(["detect", *map(str, args), "--model", str(tiny), "--imgsz", "160", "--device", "cpu"])


def test_detect_complete_exits_0(tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "clip.avi", "MJPG", 8)
    assert detect(tiny, video, "--out", tmp_path / "o", "--no-annotate") == 0
    assert "incomplete" not in capsys.readouterr().err


def test_detect_incomplete_input_exits_1_and_writes_what_was_read(tmp_path: Path, tiny: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder = image_folder(tmp_path)
    video = cut(write_video(folder / "clip.avi", "MJPG"))
    n = len(read_all(video)[0])
    out = tmp_path / "o"
    assert detect(tiny, folder, "--out", out) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"ghostbox detect: '{video}': {n} of {FRAMES} frames read (the file ends early or a frame could not be " \
           "decoded)" in err
    assert any(line.startswith(f"ghostbox detect: '{folder / 'img_empty.jpg'}': not a readable image") for line in err)
    [summary] = [line for line in err if "incomplete:" in line]
    assert "2 unreadable file(s) skipped" in summary and "1 video(s) cut short" in summary
    assert f"{n} of {FRAMES} frames" in summary and f"the {4 + n} of {FRAMES + 6} announced frames" in summary
    assert "error:" not in "\n".join(err)
    rows = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(rows) == 4 + n
    assert [r["frame"] for r in rows if r["source"] == str(video)] == list(range(n))
    capture = cv2.VideoCapture(str(out / "annotated" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == n  # the frames read were annotated too
    capture.release()


def test_detect_refuses_a_named_unopenable_video_before_starting(tmp_path: Path, tiny: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    plain = cut(write_video(tmp_path / "plain.mp4", "mp4v"))
    assert detect(tiny, plain, "--out", tmp_path / "o") == 2
    assert "plain.mp4" in capsys.readouterr().err
    assert not (tmp_path / "o" / "detections.jsonl").exists()


# -- streaming sources ------------------------------------------------------------------------------

def run_grabber(reader_fn, max_frames: int | None = None) -> Grabber:  # noqa: ANN001
    ctx = zmq.Context.instance()
    url = f"inproc://wake-test-{time.monotonic_ns()}"
    wake = ctx.socket(zmq.PAIR)
    wake.bind(url)
    try:
        grabber = Grabber(ctx, url, reader_fn, FrameBuffer(False, capacity=10_000), False, None, threading.Event(),
                          max_frames)
        grabber.run()  # in this thread: the buffer is large enough never to block
    finally:
        wake.close(linger=0)
    return grabber


def end_of(grabber: Grabber, status: str = "ok") -> tuple[str, str, dict]:
    """What SourceStage._end puts in the EOS."""
    return grabber.end_fields(status)


def test_file_source_eos_names_what_was_skipped_and_cut(tmp_path: Path) -> None:
    folder = image_folder(tmp_path)
    video = cut(write_video(folder / "clip.avi", "MJPG"))
    grabber = run_grabber(lambda: FileReader(str(folder)))
    n = len(grabber.buffer) - 4
    status, detail, stats = end_of(grabber)
    assert status == "incomplete"
    assert detail == f"'{folder / 'img_empty.jpg'}': not a readable image (corrupt or unsupported format); skipped " \
                     "(and 2 more file(s))"
    assert stats == {"expected": FRAMES + 6, "read": 4 + n, "unreadable": 2,
                     "unreadable_files": [str(folder / "img_empty.jpg"), str(folder / "img_garbage.png")],
                     "truncated": [{"file": str(video), "read": n, "expected": FRAMES}],
                     "rate_skipped": 0, "reconnects": 0}
    # it travels: the protocol accepts the EOS as the source sends it
    message = P.decode(P.control(P.EOS, "cam", total=4 + n, status=status, dropped=0, epoch=1, stats=stats,
                                 detail=detail))
    assert message.header["stats"] == stats and message.header["status"] == "incomplete"


def test_looping_file_source_counts_its_files_once(tmp_path: Path) -> None:
    folder = image_folder(tmp_path)
    grabber = run_grabber(lambda: FileReader(str(folder), loop=True), max_frames=11)
    assert len(grabber.buffer) == 11
    status, _, stats = end_of(grabber)
    assert status == "incomplete"  # the corrupt images were met, whatever cut the stream
    assert (stats["read"], stats["unreadable"], stats["expected"], stats["max_frames"]) == (4, 2, 6, 11)


def test_max_frames_cut_is_not_incomplete(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", "MJPG")
    grabber = run_grabber(lambda: FileReader(str(video)), max_frames=10)
    status, detail, stats = end_of(grabber)
    assert (status, detail) == ("ok", "")
    assert stats == {"expected": FRAMES, "read": 10, "unreadable": 0, "unreadable_files": [], "truncated": [],
                     "max_frames": 10, "rate_skipped": 0, "reconnects": 0}
    grabber = run_grabber(lambda: FileReader(str(video)))
    assert end_of(grabber) == ("ok", "", {"expected": FRAMES, "read": FRAMES, "unreadable": 0,
                                          "unreadable_files": [], "truncated": [], "rate_skipped": 0, "reconnects": 0})
    # readers without files add nothing
    grabber = run_grabber(lambda: SynthReader("synth:frames=3,width=64,height=64"))
    assert end_of(grabber) == ("ok", "", {"rate_skipped": 0, "reconnects": 0})


def test_eos_fields_rules() -> None:
    report = MediaReport(expected=30, read=3)
    for i in range(MAX_LISTED + 5):
        report.skip(f"/data/{i}.jpg", "not a readable image")
    report.truncated.append({"file": "/data/v.avi", "read": 3, "expected": 9})
    status, detail, stats = eos_fields("ok", None, report)
    assert status == "incomplete" and detail == f"'/data/0.jpg': not a readable image; skipped (and {MAX_LISTED + 5} " \
                                                "more file(s))"
    assert stats["unreadable"] == MAX_LISTED + 5 and len(stats["unreadable_files"]) == MAX_LISTED
    assert set(stats) == EOS_KEYS and stats["expected"] == 30
    # an error or an interruption keeps its status; the error names itself first
    assert eos_fields("error", "video 'x': boom", report)[:2] == ("error", "video 'x': boom")
    assert eos_fields("interrupted", None, report)[0] == "interrupted"
    # readers without files (synth, cameras) carry no report and no such keys
    assert eos_fields("ok", None, None) == ("ok", "", {})
    assert SynthReader("synth:frames=2").report is None
    assert eos_fields("ok", None, MediaReport(expected=None, read=7)) == (
        "ok", "", {"expected": None, "read": 7, "unreadable": 0, "unreadable_files": [], "truncated": []})
    # what the inputs announce up front wins over the report's count of the files opened so far
    assert eos_fields("interrupted", None, MediaReport(expected=5, read=5), expected=None)[2]["expected"] is None
    assert eos_fields("interrupted", None, MediaReport(expected=5, read=5), expected=90)[2]["expected"] == 90


def test_named_source_that_cannot_open_fails_the_reader(tmp_path: Path) -> None:
    plain = cut(write_video(tmp_path / "plain.mp4", "mp4v"))
    grabber = run_grabber(lambda: FileReader(str(plain)))
    status, detail, _ = end_of(grabber, "error")
    assert status == "error" and "plain.mp4" in detail and "cannot be opened" in detail


# -- ghostbox run, end to end -----------------------------------------------------------------------

@pytest.mark.slow
def test_run_with_incomplete_inputs_exits_1_and_says_so(tmp_path: Path) -> None:
    from tests.helpers.stream_helpers import (
        base_config,
        ended_run,
        records,
        short_dir,
        start_run,
        write_config,
    )

    run_dir = short_dir()
    out = tmp_path / "out"
    folder = image_folder(tmp_path)
    video = cut(write_video(tmp_path / "clip.avi", "MJPG"))
    n = len(read_all(video)[0])
    config = base_config(out, [{"id": "cut", "uri": str(video)}, {"id": "imgs", "uri": str(folder)}], run_dir)
    proc = start_run(write_config(tmp_path / "graph.yaml", config))
    with ended_run(proc, run_dir, settle=10) as leftovers:
        _, stderr = proc.communicate(timeout=180)
    assert not leftovers
    rows = records(out)
    assert len([r for r in rows if r["stream"] == "cut"]) == n and len([r for r in rows if r["stream"] == "imgs"]) == 4
    summary = json.loads((out / "summary.json").read_text())
    cut_stats, imgs_stats = summary["per_source"]["cut"], summary["per_source"]["imgs"]
    assert cut_stats["status"] == imgs_stats["status"] == "incomplete"
    assert cut_stats["truncated"] == [{"file": str(video), "read": n, "expected": FRAMES}]
    assert (cut_stats["read"], cut_stats["expected"]) == (n, FRAMES)
    assert imgs_stats["unreadable_files"] == [str(folder / "img_empty.jpg"), str(folder / "img_garbage.png")]
    assert (imgs_stats["read"], imgs_stats["expected"], imgs_stats["unreadable"]) == (4, 6, 2)
    assert summary["status"] == "incomplete"
    assert proc.returncode == 1, stderr[-3000:]
