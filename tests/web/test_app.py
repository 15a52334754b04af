"""The web view's HTTP side without a stream: the page, the gallery, answers, and bad requests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest
from starlette.testclient import TestClient

from pipeline.sinks.live_feed import decode
from pipeline.web.app import make_app
from pipeline.web.state import Gallery, LiveState


def _run_folder(out: Path, tracks: dict[int, bool]) -> Path:
    """A run's tracks/ gallery: two crops per track; `tracks`: id -> flagged."""
    (out / "tracks" / "cam").mkdir(parents=True)
    lines = []
    for track, flagged in tracks.items():
        for seq in (3, 18):
            name = f"cam/{seq:07d}_{track:03d}.jpg"
            cv2.imwrite(str(out / "tracks" / name), np.full((20, 10, 3), 40 * track % 255, np.uint8))
            lines.append({"file": name, "stream": "cam", "seq": seq, "track_id": track, "cls": 1, "label": "car",
                          "track_score": -1.5 if flagged else 2.0, "track_hallucination": flagged,
                          "logits": [0.1, 2.0], "box_features": [0.5, 0.25, 0.0, 1.0], "detector": "abc"})
    (out / "tracks" / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return out


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    gallery = Gallery(_run_folder(tmp_path, {1: True, 2: False}))
    return TestClient(make_app(gallery, LiveState(), title="run-1"))


def test_the_page_and_the_gallery(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "EventSource" in page.text and "run-1" in page.text
    flagged = client.get("/api/tracks").json()["tracks"]
    assert [t["key"] for t in flagged] == ["cam/1"] and flagged[0]["crops"] == ["cam/0000003_001.jpg",
                                                                               "cam/0000018_001.jpg"]
    assert [t["key"] for t in client.get("/api/tracks?which=kept").json()["tracks"]] == ["cam/2"]
    assert len(client.get("/api/tracks?which=all").json()["tracks"]) == 2
    crop = client.get("/crop/cam/0000003_001.jpg")
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"


def test_an_answer_goes_to_the_review_file_and_the_last_one_wins(client: TestClient, tmp_path: Path) -> None:
    assert client.post("/api/review", json={"track": "cam/2", "answer": "hallucination"}).status_code == 200
    assert client.post("/api/review", json={"track": "cam/1", "answer": "real"}).status_code == 200
    assert client.post("/api/review", json={"track": "cam/1", "answer": "hallucination"}).status_code == 200
    rows = [json.loads(line) for line in (tmp_path / "review.jsonl").read_text().splitlines()]
    assert [(r["track_id"], r["answer"], r["verdict"]) for r in rows] == [
        (2, "hallucination", "kept"), (1, "real", "flagged"), (1, "hallucination", "flagged")]
    assert rows[0]["crops"] == ["cam/0000003_002.jpg", "cam/0000018_002.jpg"] and rows[0]["detector"] == "abc"
    # a new page (another session) shows the answers given before
    again = Gallery(tmp_path)
    again.refresh()
    assert {t["key"]: t["answer"] for t in again.listing("all")} == {"cam/1": "hallucination",
                                                                    "cam/2": "hallucination"}


@pytest.mark.parametrize(("body", "status"), [
    ({"track": "cam/99", "answer": "real"}, 404),  # unknown track
    ({"track": "cam/1", "answer": "maybe"}, 400),
    ({"track": 1, "answer": "real"}, 400),
    ([1, 2], 400),
    (b"{not json", 400),
    (b"x" * 5000, 413),  # oversized
])
def test_bad_answers_get_4xx_and_change_nothing(client: TestClient, tmp_path: Path, body: object,
                                               status: int) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = client.post("/api/review", **kwargs)
    assert response.status_code == status and "error" in response.json()
    assert not (tmp_path / "review.jsonl").exists()


def test_an_oversized_chunked_body_is_cut_off(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/api/review", content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]))
    assert response.status_code == 413 and not (tmp_path / "review.jsonl").exists()


def test_crops_outside_the_gallery_are_refused(client: TestClient) -> None:
    for path in ("/crop/..%2F..%2Fetc%2Fpasswd", "/crop/cam/..%2F..%2Freview.jsonl", "/crop/cam/missing.jpg"):
        assert client.get(path).status_code == 404, path
    assert client.get("/api/tracks?which=everything").status_code == 400


def test_frames_and_counters_from_the_feed() -> None:
    live = LiveState()
    client = TestClient(make_app(Gallery("/nonexistent"), live))
    assert client.get("/frame/cam").status_code == 404
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    live.take(decode(msgpack.packb({"kind": "frame", "source": "cam", "seq": 7, "t": 1.0, "jpeg": jpeg})))
    for t, frames, boxes, flagged in ((10.0, 0, 0, 0), (11.0, 8, 40, 4), (12.0, 16, 80, 12)):
        live.take(decode(msgpack.packb({"kind": "stats", "t": t, "sources": {
            "cam": {"frames": frames, "boxes": boxes, "flagged": flagged, "kept": boxes - flagged}}})))
    frame = client.get("/frame/cam")
    assert frame.status_code == 200 and frame.content == jpeg and frame.headers["x-frame-seq"] == "7"
    state = client.get("/api/state").json()["sources"]["cam"]
    assert state["seq"] == 7 and state["stats"]["fps"] == 8.0 and state["flag_rate"] == [[11.0, 0.1], [12.0, 0.2]]


@pytest.mark.parametrize("data", [
    b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"kind": "frame", "source": "cam", "seq": 1, "t": 1.0}),
    msgpack.packb({"kind": "frame", "source": "cam", "seq": "1", "t": 1.0, "jpeg": b"\xff\xd8"}),
    msgpack.packb({"kind": "frame", "source": "x" * 100, "seq": 1, "t": 1.0, "jpeg": b"\xff\xd8"}),
    msgpack.packb({"kind": "frame", "source": "cam", "seq": 1, "t": 1.0, "jpeg": b"GIF89a"}),
    msgpack.packb({"kind": "stats", "t": float("nan"), "sources": {}}),
    msgpack.packb({"kind": "stats", "t": 1.0, "sources": [1]}),
    msgpack.packb({"kind": "shutdown", "t": 1.0}),
])
def test_hostile_feed_messages_are_counted_not_believed(data: bytes) -> None:
    live = LiveState()
    live.take(decode(data))
    assert live.bad_messages == 1 and live.snapshot()["sources"] == {}


def test_stats_keep_known_figures_of_the_right_type() -> None:
    message = decode(msgpack.packb({"kind": "stats", "t": 1.0, "sources": {
        "cam": {"frames": 3, "boxes": "many", "flagged": float("inf"), "secret": 1, "drift_alarm": True}}}))
    assert message is not None and message["sources"] == {"cam": {"frames": 3, "drift_alarm": True}}


def test_a_token_is_needed_when_one_is_set(tmp_path: Path) -> None:
    client = TestClient(make_app(Gallery(_run_folder(tmp_path, {1: True})), None, token="s3cret"))
    assert client.get("/").status_code == 401 and client.get("/api/tracks").status_code == 401
    assert client.post("/api/review", json={"track": "cam/1", "answer": "real"}).status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    assert client.get("/?token=s3cret").status_code == 200  # and the cookie it sets serves what follows
    assert client.get("/api/tracks").status_code == 200
    assert TestClient(client.app).get("/api/tracks", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert not (tmp_path / "review.jsonl").exists()


def test_gallery_lines_with_wrong_types_are_skipped(tmp_path: Path) -> None:
    out = _run_folder(tmp_path, {1: True})
    with open(out / "tracks" / "index.jsonl", "a") as handle:
        handle.write(json.dumps({"file": "cam/x.jpg", "stream": "cam", "track_id": 5, "seq": "late", "cls": 1}) + "\n")
        handle.write("not json\n")
    client = TestClient(make_app(Gallery(out), None))
    assert [t["key"] for t in client.get("/api/tracks?which=all").json()["tracks"]] == ["cam/1"]
