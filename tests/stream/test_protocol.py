"""The wire protocol: round trips, and every malformed message becomes a ProtocolError (never a crash)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.stream import protocol as P


def _dets(n: int = 3, crops: bool = True) -> Detections:
    rng = np.random.default_rng(0)
    xyxy = np.array([[10, 10, 40, 30], [0, 0, 8, 8], [50, 20, 90, 70]][:n], np.float32)
    return Detections(
        xyxy=xyxy, confidence=rng.random(n).astype(np.float32), class_id=np.arange(n) % 2,
        logits=rng.normal(size=(n, 4)).astype(np.float32), box_features=rng.normal(size=(n, 16)).astype(np.float32),
        level=np.array([0, 1, 2][:n], np.int8), class_names=("a", "b", "c", "d"), image_size=(100, 80),
        crops=[rng.integers(0, 255, (int(b[3] - b[1]), int(b[2] - b[0]), 3), dtype=np.uint8) for b in xyxy]
        if crops else None,
        data={"score": rng.random(n)},
    )


def _frame_message(image: np.ndarray, encoding: str = "raw") -> list:
    return P.encode(P.FRAME, "cam0", [P.image_part("image", image, encoding)], seq=7, frame=3, origin="a.mp4",
                    epoch=11, dropped=0, fps=30.0, t={"capture": 1.5})


def test_frame_round_trip_raw_and_jpeg() -> None:
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    message = P.decode(_frame_message(image))
    assert (message.topic, message.type, message.seq) == ("cam0", P.FRAME, 7)
    assert message.header["origin"] == "a.mp4" and message.stamps == {"capture": 1.5}
    np.testing.assert_array_equal(message.array("image"), image)
    jpeg = P.decode(_frame_message(image, "jpeg"))
    assert jpeg.specs[0].encoding == "jpeg" and jpeg.array("image").shape == image.shape


@pytest.mark.parametrize("crops", ["raw", "jpeg", "none"])
def test_detections_round_trip(crops: str) -> None:
    dets = _dets()
    fields, parts = P.detections_parts(dets, crops)
    message = P.decode(P.encode(P.DETECTIONS, "cam0", parts, seq=1, **fields))
    back = P.detections_from(message)
    for name in ("xyxy", "confidence", "class_id", "logits", "box_features", "level"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dets, name))
    np.testing.assert_array_equal(back.data["score"], dets.data["score"])
    assert back.class_names == dets.class_names and back.image_size == dets.image_size
    if crops == "none":
        assert back.crops is None
    else:
        assert [c.shape for c in back.crops] == [c.shape for c in dets.crops]
        if crops == "raw":
            for a, b in zip(back.crops, dets.crops):
                np.testing.assert_array_equal(a, b)


def test_empty_detections_and_reencode_keep_payload() -> None:
    dets = _dets()[np.zeros(3, bool)]
    fields, parts = P.detections_parts(dets, "raw")
    message = P.decode(P.encode(P.DETECTIONS, "s", parts, seq=0, **fields))
    assert len(P.detections_from(message)) == 0
    extra = [P.raw_part("image", np.zeros((2, 2, 3), np.uint8))]
    forwarded = P.decode(P.reencode(message, {**message.header, "t": {"x": 1.0}}, extra))
    assert forwarded.has("image") and forwarded.stamps == {"x": 1.0}
    assert len(P.detections_from(forwarded)) == 0


def _header(**fields) -> bytes:
    return msgpack.packb({"v": 1, "type": "frame", "seq": 0, "frame": 0, "origin": "x", "epoch": 1, "dropped": 0,
                          "parts": [{"name": "image", "enc": "raw", "dtype": "uint8", "shape": [2, 2, 3]}],
                          **fields})


GOOD_IMAGE = bytes(12)
MALFORMED = {
    "too-few-parts": [b"cam"],
    "bad-topic": [b"\xff\xfe", _header(), GOOD_IMAGE],
    "bad-header": [b"cam", b"\xc1\xc1garbage", GOOD_IMAGE],
    "not-a-map": [b"cam", msgpack.packb([1, 2, 3]), GOOD_IMAGE],
    "wrong-version": [b"cam", _header(v=2), GOOD_IMAGE],
    "bad-type": [b"cam", _header(type="pickle"), GOOD_IMAGE],
    "missing-field": [b"cam", msgpack.packb({"v": 1, "type": "frame", "parts": []})],
    "negative-seq": [b"cam", _header(seq=-1), GOOD_IMAGE],
    "bool-seq": [b"cam", _header(seq=True), GOOD_IMAGE],
    "nan-stamp": [b"cam", _header(t={"capture": float("nan")}), GOOD_IMAGE],
    "part-count": [b"cam", _header(), GOOD_IMAGE, GOOD_IMAGE],
    "part-size": [b"cam", _header(), bytes(11)],
    "huge-shape": [b"cam", _header(parts=[{"name": "image", "enc": "raw", "dtype": "uint8",
                                           "shape": [100000, 100000, 3]}]), GOOD_IMAGE],
    "bad-dtype": [b"cam", _header(parts=[{"name": "image", "enc": "raw", "dtype": "object", "shape": [12]}]),
                  GOOD_IMAGE],
    "deep-shape": [b"cam", _header(parts=[{"name": "image", "enc": "raw", "dtype": "uint8",
                                           "shape": [1, 1, 1, 1, 12]}]), GOOD_IMAGE],
    "str-key": [b"cam", msgpack.packb({1: 2}), GOOD_IMAGE],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_messages_raise_protocol_error(case: str) -> None:
    with pytest.raises(P.ProtocolError):
        P.decode(MALFORMED[case])


def test_bad_jpeg_and_inconsistent_detections_are_protocol_errors() -> None:
    header = msgpack.packb({"v": 1, "type": "frame", "seq": 0, "frame": 0, "origin": "x", "epoch": 1, "dropped": 0,
                            "parts": [{"name": "image", "enc": "jpeg", "dtype": "uint8", "shape": []}]})
    with pytest.raises(P.ProtocolError):  # refused by its (missing) JPEG header, before any decoding
        P.decode([b"cam", header, b"not a jpeg"])
    dets = _dets()
    fields, parts = P.detections_parts(dets, "raw")
    fields["crop_shapes"] = fields["crop_shapes"][:2]  # fewer crops than boxes
    with pytest.raises(P.ProtocolError):
        P.detections_from(P.decode(P.encode(P.DETECTIONS, "s", parts, seq=0, **fields)))
    fields, parts = P.detections_parts(dets, "none")
    parts[1] = P.raw_part("confidence", np.zeros(5, np.float32))  # 5 confidences for 3 boxes
    with pytest.raises(P.ProtocolError):
        P.detections_from(P.decode(P.encode(P.DETECTIONS, "s", parts, seq=0, **fields)))


def test_random_bytes_never_escape_as_other_errors() -> None:
    rng = np.random.default_rng(3)
    fields, parts = P.detections_parts(_dets(), "jpeg")
    valid = P.encode(P.DETECTIONS, "s", parts, seq=0, **fields)
    valid = [bytes(memoryview(p).cast("B")) if not isinstance(p, bytes) else p for p in valid]
    for i in range(400):
        frames = [bytes(f) for f in valid]
        k = int(rng.integers(len(frames)))
        blob = bytearray(frames[k])
        for _ in range(int(rng.integers(1, 6))):
            if blob:
                blob[int(rng.integers(len(blob)))] = int(rng.integers(256))
        frames[k] = bytes(blob[: int(rng.integers(len(blob) + 1))]) if i % 3 == 0 else bytes(blob)
        try:
            message = P.decode(frames)
            if message.type == P.DETECTIONS:
                P.detections_from(message)
        except P.ProtocolError:
            pass
