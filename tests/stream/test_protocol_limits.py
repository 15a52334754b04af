"""Peers are not trusted with memory: declared shapes, JPEG headers and crops are checked before decoding."""

from __future__ import annotations

import struct
import tracemalloc
from types import SimpleNamespace

import cv2
import msgpack
import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.stream import protocol as P
from pipeline.stream.config import LimitsConfig

BOMB_SIDE = 10_000  # 10000x10000x3 decodes to 300 MB


def _jpeg(shape: tuple[int, ...] = (16, 24, 3), seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def _sof(data: bytes) -> int:
    """Offset of the SOF0 marker cv2 writes (after APP0 and DQT; no fill bytes)."""
    return data.index(b"\xff\xc0")


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def _bomb(side: int = BOMB_SIDE) -> bytes:
    """A ~1 kB real JPEG whose frame header claims side x side pixels (never allocated here)."""
    data = _jpeg()
    sof = _sof(data)
    return _patch(data, sof + 5, struct.pack(">HH", side, side))  # after marker, length, precision


def _frame(data: bytes, shape: list[int]) -> list:
    header = msgpack.packb({"v": 1, "type": "frame", "seq": 0, "frame": 0, "origin": "x", "epoch": 1, "dropped": 0,
                            "parts": [{"name": "image", "enc": "jpeg", "dtype": "uint8", "shape": shape}]})
    return [b"cam", header, data]


def _reason(frames: list, limits: P.Limits | None = None, detections: bool = False) -> str:
    with pytest.raises(P.ProtocolError) as info:
        message = P.decode(frames, limits)
        if detections:
            P.detections_from(message)
        else:
            message.array("image")
    return info.value.reason


def _dets(crops: list[np.ndarray], image_size: tuple[int, int] = (100, 80)) -> Detections:
    n = len(crops)
    return Detections(
        xyxy=np.tile(np.array([[0, 0, 8, 8]], np.float32), (n, 1)), confidence=np.full(n, 0.5, np.float32),
        class_id=np.zeros(n, np.int64), logits=np.zeros((n, 2), np.float32), box_features=np.zeros((n, 4), np.float32),
        level=np.zeros(n, np.int8), class_names=("a", "b"), image_size=image_size, crops=crops,
    )


def _crop_message(jpegs: list[bytes], crop_shapes: list[list[int]], image_size: list[int],
                  part_shapes: list[list[int]] | None = None) -> list:
    """A detections message with hand-made JPEG crop parts (the encoder would never send these)."""
    fields, parts = P.detections_parts(_dets([np.zeros((1, 1, 3), np.uint8)] * len(jpegs)), "none")
    parts = parts + [({"name": "crop", "enc": "jpeg", "dtype": "uint8", "shape": shape}, data)
                     for data, shape in zip(jpegs, part_shapes or [[h, w, 3] for h, w in crop_shapes])]
    fields.update(crops="jpeg", crop_shapes=crop_shapes, image_size=image_size)
    return P.encode(P.DETECTIONS, "cam", parts, seq=0, **fields)


# -- limits ------------------------------------------------------------------------------------------

def test_limits_defaults_equal_the_config_and_read_it_by_name() -> None:
    config = LimitsConfig()
    assert P.Limits() == P.Limits.from_config(config)
    assert (P.Limits().max_image_pixels, P.Limits().max_part_bytes) == (config.max_image_pixels,
                                                                         config.max_message_bytes)
    assert P.Limits.from_config(SimpleNamespace(max_image_pixels=7, max_message_bytes=9)) == P.Limits(7, 9)


def test_raw_parts_are_held_to_the_limits() -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    frames = P.encode(P.FRAME, "cam", [P.raw_part("image", image)], seq=0, frame=0, origin="x", epoch=1, dropped=0)
    assert P.decode(frames, P.Limits(max_image_pixels=600)).array("image").shape == (20, 30, 3)
    assert _reason(frames, P.Limits(max_image_pixels=599)) == "image-too-large"
    assert _reason(frames, P.Limits(max_part_bytes=1000)) == "part-too-large"
    # four huge dims of a 0-byte part: the product in int64 wraps to 0, which once let it through
    header = msgpack.packb({"v": 1, "type": "frame", "seq": 0, "frame": 0, "origin": "x", "epoch": 1, "dropped": 0,
                            "parts": [{"name": "image", "enc": "raw", "dtype": "uint8", "shape": [1 << 29] * 4}]})
    assert _reason([b"cam", header, b""]) == "part-size"


# -- the JPEG frame header ---------------------------------------------------------------------------

def test_jpeg_header_reads_size_and_channels_without_decoding() -> None:
    assert P.jpeg_header(_jpeg((16, 24, 3))) == (16, 24, 3)
    assert P.jpeg_header(_jpeg((9, 5))) == (9, 5, 1)
    assert P.jpeg_header(_bomb()) == (BOMB_SIDE, BOMB_SIDE, 3)
    data = _jpeg()
    filled = data[:2] + b"\xff\xff\xff" + data[2:]  # fill bytes before a marker are legal
    assert P.jpeg_header(filled) == (16, 24, 3)
    commented = data[:2] + b"\xff\xfe\x00\x04ab" * 50 + data[2:]  # 50 COM segments, then APP0, DQT, SOF
    assert P.jpeg_header(commented) == (16, 24, 3)
    assert P.jpeg_header(np.frombuffer(data, np.uint8)) == (16, 24, 3)


def _bad_headers() -> dict[str, bytes]:
    data = _jpeg()
    sof = _sof(data)
    com = b"\xff\xfe\x00\x04ab"
    return {
        "empty": b"",
        "no-soi": b"\x89PNG\r\n\x1a\n" + data,
        "soi-only": b"\xff\xd8",
        "soi-garbage": b"\xff\xd8garbage-garbage",
        "eoi-first": b"\xff\xd8\xff\xd9" + data[2:],
        "sos-before-sof": b"\xff\xd8\xff\xda\x00\x08" + bytes(6) + data[2:],
        "rst-before-sof": b"\xff\xd8\xff\xd0" + data[2:],
        "unknown-marker": b"\xff\xd8\xff\x01" + data[2:],
        "length-past-end": data[:sof + 2] + b"\xff\xff" + data[sof + 4:],
        "length-below-2": b"\xff\xd8\xff\xfe\x00\x01" + data[2:],
        "app-length-past-end": b"\xff\xd8\xff\xe1\xff\xf0" + data[2:],
        "sof-length-mismatch": _patch(data, sof + 2, b"\x00\x0e"),
        "sof-12-bit": _patch(data, sof + 4, b"\x0c"),
        "sof-height-0": _patch(data, sof + 5, b"\x00\x00"),
        "sof-no-components": _patch(data, sof + 2, b"\x00\x08")[:sof + 9] + b"\x00" + data[sof + 10:],
        "too-much-fill": data[:2] + b"\xff" * 500 + data[2:],
        "endless-segments": data[:2] + com * 2000 + data[2:],
        "no-sof": data[:sof],
    }


@pytest.mark.parametrize("case", sorted(_bad_headers()))
def test_malformed_jpeg_headers_are_protocol_errors(case: str) -> None:
    data = _bad_headers()[case]
    with pytest.raises(P.ProtocolError) as info:
        P.jpeg_header(data)
    assert info.value.reason == "bad-jpeg"
    assert _reason(_frame(data, [16, 24, 3])) in ("bad-jpeg", "bad-part")  # bad-part: the empty one


def test_every_truncation_and_random_bytes_raise_only_protocol_errors() -> None:
    data = _jpeg()
    end = _sof(data) + 2 + 17  # through the 3-component frame header
    for cut in range(end):
        with pytest.raises(P.ProtocolError):
            P.jpeg_header(data[:cut])
    assert P.jpeg_header(data[:end]) == (16, 24, 3)
    rng = np.random.default_rng(5)
    for i in range(2000):
        blob = bytearray(data[:end] if i % 2 else b"\xff\xd8" + rng.bytes(int(rng.integers(0, 64))))
        for _ in range(int(rng.integers(1, 4))):
            blob[int(rng.integers(len(blob)))] = int(rng.integers(256))
        try:
            P.jpeg_header(bytes(blob))
        except P.ProtocolError:
            pass


# -- the bomb -----------------------------------------------------------------------------------------

def test_jpeg_bomb_is_refused_before_decoding() -> None:
    bomb = _bomb()
    assert len(bomb) < 2000
    # honest about its size: over the pixel limit, from the shape alone
    assert _reason(_frame(bomb, [BOMB_SIDE, BOMB_SIDE, 3])) == "image-too-large"
    # lying about its size: the header says otherwise
    assert _reason(_frame(bomb, [16, 24, 3])) == "jpeg-shape"
    assert _reason(_frame(_jpeg(), [16, 24])) == "jpeg-shape"  # channels count too
    assert _reason(_frame(_jpeg(), [24, 16, 3])) == "jpeg-shape"
    assert _reason(_frame(_jpeg(), [])) == "jpeg-shape"
    # a decoder is never handed more than the limits allowed, even by a direct caller
    spec = P.Part("image", "jpeg", "uint8", (BOMB_SIDE, BOMB_SIDE, 3))
    with pytest.raises(P.ProtocolError, match="image-too-large"):
        P.decode_part(spec, bomb)


def test_six_bomb_crops_allocate_almost_nothing() -> None:
    bombs = [_bomb()] * 6
    side = [BOMB_SIDE, BOMB_SIDE]
    cases = {  # (crop_shapes, image_size, limits) -> the check that stops it
        "image-too-large": (side, side, None),
        "jpeg-shape": ([16, 24], [100, 80], None),  # declared small, header big
        "crop-shape": (side, [100, 80], P.Limits(10**9, 400 << 20)),  # crops larger than their frame
        "crops-too-large": (side, side, P.Limits(10**9, 400 << 20)),  # each allowed, six together not
    }
    tracemalloc.start()
    try:
        for reason, (crop, image_size, limits) in cases.items():
            message = _crop_message(bombs, [crop] * 6, image_size)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            assert _reason(message, limits, detections=True) == reason
            peak = tracemalloc.get_traced_memory()[1] - base
            # measured: 9-12 kB per case; cv2.imdecode of one such bomb: 300 MB traced, ~590 MB max RSS
            assert peak < 1 << 20, (reason, peak)
    finally:
        tracemalloc.stop()


# -- crops --------------------------------------------------------------------------------------------

def test_crops_must_fit_their_frame_and_their_jpeg_parts() -> None:
    jpeg = _jpeg((16, 24, 3))
    ok = _crop_message([jpeg], [[16, 24]], [24, 16])  # image_size is (width, height)
    assert P.detections_from(P.decode(ok)).crops[0].shape == (16, 24, 3)
    assert _reason(_crop_message([jpeg], [[16, 24]], [23, 16]), detections=True) == "crop-shape"
    assert _reason(_crop_message([jpeg], [[16, 24]], [24, 15]), detections=True) == "crop-shape"
    # crop_shapes and the (header-checked) part disagree
    assert _reason(_crop_message([jpeg], [[8, 8]], [100, 80], [[16, 24, 3]]), detections=True) == "crop-shape"
    gray = _jpeg((16, 24))
    assert _reason(_crop_message([gray], [[16, 24]], [100, 80], [[16, 24]]), detections=True) == "crop-shape"
    # raw crops too
    fields, parts = P.detections_parts(_dets([np.zeros((20, 30, 3), np.uint8)], image_size=(100, 80)), "raw")
    back = P.detections_from(P.decode(P.encode(P.DETECTIONS, "s", parts, seq=0, **fields)))
    assert back.crops[0].shape == (20, 30, 3)
    fields["image_size"] = [29, 80]
    assert _reason(P.encode(P.DETECTIONS, "s", parts, seq=0, **fields), detections=True) == "crop-shape"


def test_normal_jpeg_crops_decode_exactly_as_before() -> None:
    rng = np.random.default_rng(2)
    crops = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (1, 1), (64, 48)]]
    fields, parts = P.detections_parts(_dets(crops), "jpeg", quality=80)
    back = P.detections_from(P.decode(P.encode(P.DETECTIONS, "s", parts, seq=0, **fields)))
    for got, (_, data) in zip(back.crops, parts[-3:]):
        np.testing.assert_array_equal(got, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    assert [c.shape for c in back.crops] == [c.shape for c in crops]
    gray = np.arange(60, dtype=np.uint8).reshape(6, 10)
    frames = P.encode(P.FRAME, "cam", [P.jpeg_part("image", gray)], seq=0, frame=0, origin="x", epoch=1, dropped=0)
    assert P.decode(frames).array("image").shape == (6, 10)  # as declared, no longer made BGR


def test_exif_orientation_does_not_change_the_decoded_shape() -> None:
    data = _jpeg((16, 32, 3))
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + bytes(4)
    payload = b"Exif\x00\x00" + tiff  # orientation 6: "rotate 90", which would swap height and width
    rotated = data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    assert P.decode(_frame(rotated, [16, 32, 3])).array("image").shape == (16, 32, 3)


def test_a_header_the_decoder_refuses_is_a_protocol_error() -> None:
    data = _jpeg()
    unsupported = _patch(data, _sof(data) + 1, b"\xc5")  # SOF5 (differential): no decoder for it
    message = P.decode(_frame(unsupported, [16, 24, 3]))  # the header itself is well-formed
    assert _reason(_frame(unsupported, [16, 24, 3])) == "bad-jpeg"
    with pytest.raises(P.ProtocolError):
        message.array("image")
