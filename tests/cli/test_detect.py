"""`ghostbox detect` writes the documented JSONL schema and annotated images/videos."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pipeline.detect.detector import Detector


@pytest.fixture(scope="module")
def media(tmp_path_factory, frames):
    root = tmp_path_factory.mktemp("media")
    for i, frame in enumerate(frames):
        cv2.imwrite(str(root / f"img{i}.png"), frame)
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(6):
        writer.write(frames[i % 2])
    writer.release()
    return root


def run_detect(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "detect", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_images_and_video(media, checkpoints, tmp_path):
    out = tmp_path / "out"
    proc = run_detect(media / "img0.png", media / "clip.mp4", "--model", checkpoints["yolov8"], "--out", out,
                      "--imgsz", 320, "--conf", 0.05, "--batch", 4)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(records) == 1 + 6
    assert [r["frame"] for r in records] == [0, 0, 1, 2, 3, 4, 5]
    assert records[0]["source"].endswith("img0.png") and records[1]["source"].endswith("clip.mp4")
    for record in records:
        assert set(record) == {"source", "frame", "width", "height", "boxes"}
        assert (record["width"], record["height"]) == (320, 240)
        for box in record["boxes"]:
            assert set(box) == {"xyxy", "conf", "cls", "label"}
            x1, y1, x2, y2 = box["xyxy"]
            assert 0 <= x1 <= x2 <= 320 and 0 <= y1 <= y2 <= 240
            assert box["conf"] >= 0.05 and box["label"] in ("pedestrian", "car", "traffic light", "traffic sign")
    assert sum(len(r["boxes"]) for r in records) > 0
    # the JSONL equals the API's detections
    [api] = Detector(model=str(checkpoints["yolov8"]), imgsz=320, conf=0.05, device="cpu").detect(
        [cv2.imread(str(media / "img0.png"))])
    assert len(api) == len(records[0]["boxes"])
    annotated = out / "annotated"
    image = cv2.imread(str(annotated / "img0.jpg"))
    assert image is not None and image.shape == (240, 320, 3)
    assert not np.array_equal(image, cv2.imread(str(media / "img0.png")))  # boxes were drawn
    capture = cv2.VideoCapture(str(annotated / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    capture.release()


def test_folder_glob_and_no_annotate(media, checkpoints, tmp_path):
    out = tmp_path / "o2"
    proc = run_detect(str(media / "img*.png"), "--model", checkpoints["yolo11"], "--out", out, "--no-annotate")
    assert proc.returncode == 0, proc.stderr
    assert len((out / "detections.jsonl").read_text().splitlines()) == 3
    assert not (out / "annotated").exists()
    proc = run_detect(media, "--model", checkpoints["yolo11"], "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert len((out / "detections.jsonl").read_text().splitlines()) == 3 + 6


def test_config_file_sets_detector(media, checkpoints, tmp_path):
    config = tmp_path / "detect.yaml"
    config.write_text(f"detector:\n  model: {checkpoints['yolov8']}\n  conf: 0.9999\n  imgsz: 320\n")
    out = tmp_path / "o3"
    proc = run_detect(media / "img0.png", "--config", config, "--out", out)
    assert proc.returncode == 0, proc.stderr
    strict = json.loads((out / "detections.jsonl").read_text())
    proc = run_detect(media / "img0.png", "--config", config, "--conf", "0.01", "--out", out)  # flags win
    loose = json.loads((out / "detections.jsonl").read_text())
    assert len(loose["boxes"]) > len(strict["boxes"])


# -- an unwritable --out is refused up front (issue 25, item 7) ----------------------------------------

def test_out_under_a_regular_file_is_refused_in_one_line(media, tmp_path):
    from tests.helpers.stream_helpers import tiny_model

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    proc = run_detect(media / "img0.png", "--model", tiny_model(), "--imgsz", 160, "--out", blocker / "out")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"ghostbox detect: error: --out '{blocker / 'out'}': '{blocker}' is a file, "
                                        "not a folder; choose another output folder"]


def test_out_on_a_read_only_filesystem_is_refused_before_any_work(media, tmp_path):
    """A read-only tmpfs in a private mount namespace (gone with the process): root's writes fail there too."""
    from tests.helpers.stream_helpers import REPO, env, tiny_model

    readonly = tmp_path / "ro"
    readonly.mkdir()
    detect = [sys.executable, "-m", "pipeline", "detect", str(media / "img0.png"), "--model", str(tiny_model()),
              "--imgsz", "160", "--out", str(readonly / "out")]
    script = f'mount -t tmpfs -o ro,size=1m tmpfs "{readonly}" || exit 99; exec "$@"'
    try:
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *detect], capture_output=True, text=True,
                              timeout=300, env=env(), cwd=REPO)
    except FileNotFoundError:
        pytest.skip("no unshare(1)")
    if proc.returncode == 99 or "unshare:" in proc.stderr:
        pytest.skip(f"cannot mount a read-only tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line == (f"ghostbox detect: error: --out '{readonly / 'out'}': cannot write in '{readonly}' "
                    "(Read-only file system); choose a writable output folder")
    assert list(readonly.iterdir()) == []  # the real folder under the mount: nothing was written


def test_writable_folder_check(tmp_path):
    import os

    from pipeline.errors import GhostboxError
    from pipeline.sinks.out_folder import check_writable_folder

    check_writable_folder(tmp_path / "new" / "deeper")  # made later by the writers: not made by the check
    check_writable_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "out"):
        with pytest.raises(GhostboxError, match=f"--out '{out}': '{tmp_path / 'file'}' is a file"):
            check_writable_folder(out)
    if os.geteuid() != 0:  # root writes through mode bits: the read-only mount test covers it
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        try:
            with pytest.raises(GhostboxError, match="cannot write in .*Permission denied"):
                check_writable_folder(locked / "out", "--out")
        finally:
            locked.chmod(0o755)


# -- an annotated image or video that could not be written fails the run (nothing lost silently) -----------

def test_annotated_output_not_written_exits_1_and_names_it(media, tmp_path):
    from tests.helpers.stream_helpers import tiny_model

    out = tmp_path / "out"
    (out / "annotated" / "img0.jpg").mkdir(parents=True)  # a folder where each file goes: neither can be written
    (out / "annotated" / "clip.mp4").mkdir()
    proc = run_detect(media / "img0.png", media / "clip.mp4", "--model", tiny_model(), "--imgsz", 160, "--out", out)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.splitlines()
    assert any(line.startswith("ghostbox detect: annotated: 1 images not written (") and "img0.jpg" in line
               for line in err), proc.stderr
    assert any(line.startswith("ghostbox detect: video annotated/clip.mp4: 0 frames written, 6 more not written (")
               for line in err), proc.stderr
    [summary] = [line for line in err if "incomplete output:" in line]
    assert f"7 of 7 items not written to {out / 'annotated'}" in summary
    assert "Traceback" not in proc.stderr
    assert len((out / "detections.jsonl").read_text().splitlines()) == 1 + 6  # the rows are all there
