"""The wire protocol between stages, version 1: one module, validated on every receive.

A message is a ZeroMQ multipart message

    [topic, header, part 0, part 1, ...]

- `topic`: the stream (source) id for data messages (frame, detections, eos, ack), the
  sender's name for control messages (hello, credit, heartbeat, shutdown). UTF-8, <= 128 bytes.
- `header`: a msgpack map (never pickle: unpacking msgpack runs no code). Keys:
  `v` (protocol version), `type`, `seq`, `t` (per-stage timestamps), `parts` (one
  descriptor per payload part) and the per-type fields in `_REQUIRED` / `_OPTIONAL` below.
- payload parts: raw array bytes (C order; described by dtype and shape) or JPEG bytes.

`decode()` checks everything a peer could get wrong or forge: part count, header size,
version, type, every field's type and range, each part's dtype/shape against its byte
length. A bad message raises `ProtocolError(reason)`; stages count it, log it (rate-limited)
and drop it, and go on. Sizes are never trusted: arrays are built only after their byte
length matched the declared shape.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import msgpack
import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError

PROTOCOL_VERSION = 1

FRAME = "frame"  # source -> broker -> worker: one image
DETECTIONS = "detections"  # worker -> broker -> filter -> sinks: boxes (+ the image from the broker)
EOS = "eos"  # end of one stream, carries the number of frames it had
ACK = "ack"  # receipt of an EOS (the sender may exit)
HELLO = "hello"  # a peer announces itself (source, worker); from the broker to a worker: "reset"
CREDIT = "credit"  # "you may send me n more frames" (broker -> source, worker -> broker)
HEARTBEAT = "heartbeat"  # liveness, both ways between broker and workers
SHUTDOWN = "shutdown"  # exit after flushing
TYPES = (FRAME, DETECTIONS, EOS, ACK, HELLO, CREDIT, HEARTBEAT, SHUTDOWN)

# Stage timestamps (unix seconds) a frame collects on its way; the sink turns them into latencies.
STAMPS = ("capture", "send", "broker_in", "dispatch", "worker_in", "detect_start", "detect_end",
          "broker_out", "filter_in", "filter_out", "sink_in", "sink_out")

ENCODINGS = ("raw", "jpeg")
DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bool")
# ok: every frame the source held was read; incomplete: some were not (unreadable files, a truncated
# video; the EOS stats say which); error: the source stopped on an error; failed: its process died
EOS_STATUS = ("ok", "incomplete", "error", "interrupted", "failed")

MAX_TOPIC_BYTES = 128
MAX_HEADER_BYTES = 1 << 20
MAX_PARTS = 4096  # one JPEG part per crop; max_det is 300 by default
MAX_PART_BYTES = 512 << 20
MAX_NDIM = 4
MAX_BOXES = 100_000


class ProtocolError(Exception):
    """A message that does not follow the protocol; `reason` is a short, countable label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# -- header field checks ----------------------------------------------------------------------------

def _int(value: Any, name: str, lo: int = 0, hi: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError("bad-field", f"{name}={value!r}")
    return value


def _opt_int(value: Any, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError("bad-field", f"{name}={value!r}")
    return float(value)


def _opt_float(value: Any, name: str) -> float | None:
    return None if value is None else _float(value, name)


def _str(value: Any, name: str, max_len: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise ProtocolError("bad-field", f"{name}={value!r:.80}")
    return value


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 100_000:
        raise ProtocolError("bad-field", f"{name} is not a list")
    return [_str(v, name, 256) for v in value]


def _size(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ProtocolError("bad-field", f"{name}={value!r:.80}")
    return [_int(v, name, 0, 1 << 20) for v in value]


def _dict(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > 256 or not all(isinstance(k, str) for k in value):
        raise ProtocolError("bad-field", f"{name} is not a map of strings")
    return value


def _stamps(value: Any) -> dict[str, float]:
    stamps = _dict(value, "t")
    return {k: _float(v, f"t.{k}") for k, v in stamps.items()}


def _choice(options: Sequence[str]):  # noqa: ANN202 - returns a checker
    def check(value: Any, name: str) -> str:
        if value not in options:
            raise ProtocolError("bad-field", f"{name}={value!r:.80}")
        return value

    return check


def _shapes(value: Any, name: str) -> list[list[int]]:
    if not isinstance(value, list) or len(value) > MAX_BOXES:
        raise ProtocolError("bad-field", f"{name} is not a list")
    return [_size(v, name) for v in value]


# Per-type fields: name -> checker. Unknown keys are ignored (a newer minor sender may add some).
_FRAME_FIELDS = {"frame": _int, "origin": _str, "epoch": _int, "dropped": _int}
_REQUIRED: dict[str, dict[str, Any]] = {
    FRAME: {"seq": _int, **_FRAME_FIELDS},
    DETECTIONS: {"seq": _int, "class_names": _str_list, "image_size": _size, "crops": _choice(("none", "raw", "jpeg"))},
    EOS: {"status": _choice(EOS_STATUS)},
    ACK: {"of": _choice(TYPES), "seq": _int},
    HELLO: {"role": _choice(("source", "worker", "broker"))},
    CREDIT: {"n": _int},
    HEARTBEAT: {},
    SHUTDOWN: {},
}
_OPTIONAL: dict[str, dict[str, Any]] = {
    FRAME: {"fps": _opt_float, "image_size": _size, "attempts": _int, "more": _int},
    DETECTIONS: {**_FRAME_FIELDS, "fps": _opt_float, "crop_shapes": _shapes, "detector": _dict,
                 "error": _str, "attempts": _int, "policy": _choice(("flag", "drop")), "drift": _dict},
    EOS: {"total": _opt_int, "dropped": _int, "epoch": _int, "stats": _dict, "detail": _str},
    ACK: {},
    HELLO: {"mode": _choice(("live", "lossless")), "epoch": _int, "capacity": _int, "batch": _int, "pid": _int},
    CREDIT: {},
    HEARTBEAT: {},
    SHUTDOWN: {"reason": _str},
}


@dataclass
class Part:
    name: str
    encoding: Literal["raw", "jpeg"]
    dtype: str
    shape: tuple[int, ...]


def _part_spec(value: Any, index: int) -> Part:
    if not isinstance(value, dict):
        raise ProtocolError("bad-part", f"descriptor {index} is not a map")
    name = _str(value.get("name"), f"parts[{index}].name", 64)
    encoding = value.get("enc")
    if encoding not in ENCODINGS:
        raise ProtocolError("bad-part", f"parts[{index}].enc={encoding!r:.40}")
    dtype = value.get("dtype")
    if dtype not in DTYPES:
        raise ProtocolError("bad-part", f"parts[{index}].dtype={dtype!r:.40}")
    shape = value.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise ProtocolError("bad-part", f"parts[{index}].shape={shape!r:.40}")
    shape_t = tuple(_int(s, f"parts[{index}].shape", 0, MAX_PART_BYTES) for s in shape)
    return Part(name, encoding, dtype, shape_t)


def _buffer(part: Any) -> memoryview:
    """The bytes of a received part without copying (zmq.Frame, bytes or memoryview)."""
    buffer = getattr(part, "buffer", None)
    return memoryview(buffer if buffer is not None else part)


@dataclass
class Message:
    """A decoded, validated message; payload parts stay zero-copy until an array is asked for."""

    topic: str
    header: dict[str, Any]
    specs: list[Part]
    parts: list[Any]  # zmq.Frame / bytes / memoryview, as received

    @property
    def type(self) -> str:
        return self.header["type"]

    @property
    def seq(self) -> int:
        return int(self.header.get("seq", 0))

    @property
    def stamps(self) -> dict[str, float]:
        return self.header.setdefault("t", {})

    def index(self, name: str) -> int:
        for i, spec in enumerate(self.specs):
            if spec.name == name:
                return i
        raise ProtocolError("missing-part", name)

    def has(self, name: str) -> bool:
        return any(spec.name == name for spec in self.specs)

    def array(self, name: str) -> np.ndarray:
        i = self.index(name)
        return decode_part(self.specs[i], self.parts[i])

    def arrays(self, name: str) -> list[np.ndarray]:
        """Every part with this name, in order (JPEG crops are one part each)."""
        return [decode_part(spec, self.parts[i]) for i, spec in enumerate(self.specs) if spec.name == name]


def decode_part(spec: Part, part: Any) -> np.ndarray:
    buffer = _buffer(part)
    if spec.encoding == "jpeg":
        image = cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_COLOR) if len(buffer) else None
        if image is None:
            raise ProtocolError("bad-jpeg", spec.name)
        return image
    return np.frombuffer(buffer, dtype=spec.dtype).reshape(spec.shape)


def decode(frames: Sequence[Any]) -> Message:
    """Validate a received multipart message (after any ROUTER envelope was taken off)."""
    if len(frames) < 2:
        raise ProtocolError("too-few-parts", str(len(frames)))
    if len(frames) - 2 > MAX_PARTS:
        raise ProtocolError("too-many-parts", str(len(frames)))
    topic_bytes = bytes(_buffer(frames[0]))
    if len(topic_bytes) > MAX_TOPIC_BYTES:
        raise ProtocolError("bad-topic", "too long")
    try:
        topic = topic_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad-topic", "not UTF-8") from None
    header_bytes = _buffer(frames[1])
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ProtocolError("header-too-large", str(len(header_bytes)))
    try:
        # msgpack bounds every container by the buffer's length, which was checked above
        header = msgpack.unpackb(header_bytes, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types (ExtraData, ValueError, StackError...)
        raise ProtocolError("bad-header", type(exc).__name__) from None
    if not isinstance(header, dict):
        raise ProtocolError("bad-header", "not a map")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("wrong-version", f"{version!r:.20}")
    kind = header.get("type")
    if kind not in _REQUIRED:
        raise ProtocolError("bad-type", f"{kind!r:.40}")
    for name, check in _REQUIRED[kind].items():
        if name not in header:
            raise ProtocolError("missing-field", f"{kind}.{name}")
        header[name] = check(header[name], name)
    for name, check in _OPTIONAL[kind].items():
        if name in header:
            header[name] = check(header[name], name)
    header["t"] = _stamps(header.get("t", {}))
    raw_specs = header.get("parts", [])
    if not isinstance(raw_specs, list) or len(raw_specs) != len(frames) - 2:
        raise ProtocolError("part-count", f"header lists {len(raw_specs) if isinstance(raw_specs, list) else '?'}, "
                                          f"message has {len(frames) - 2}")
    specs = [_part_spec(s, i) for i, s in enumerate(raw_specs)]
    payload = list(frames[2:])
    for spec, part in zip(specs, payload):
        size = len(_buffer(part))
        if size > MAX_PART_BYTES:
            raise ProtocolError("part-too-large", spec.name)
        if spec.encoding == "raw":
            expected = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
            if expected != size:
                raise ProtocolError("part-size", f"{spec.name}: {spec.dtype}{list(spec.shape)} needs {expected} "
                                                 f"bytes, got {size}")
        elif spec.dtype != "uint8" or size == 0:
            raise ProtocolError("bad-part", f"{spec.name}: jpeg part must be non-empty uint8")
    return Message(topic, header, specs, payload)


# -- encoding ---------------------------------------------------------------------------------------

def now() -> float:
    return time.time()


def _pack(header: dict[str, Any]) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def raw_part(name: str, array: np.ndarray) -> tuple[dict[str, Any], Any]:
    array = np.ascontiguousarray(array)
    if array.dtype.name not in DTYPES:
        raise GhostboxError(f"protocol: dtype {array.dtype} of part '{name}' cannot go on the wire")
    # memoryview: sent zero-copy by pyzmq when large (copy=False), copied when small
    view = memoryview(array).cast("B") if array.nbytes else b""
    return {"name": name, "enc": "raw", "dtype": array.dtype.name, "shape": list(array.shape)}, view


def jpeg_part(name: str, image: np.ndarray, quality: int = 90) -> tuple[dict[str, Any], bytes]:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise GhostboxError(f"protocol: JPEG encoding of part '{name}' failed (shape {image.shape})")
    return {"name": name, "enc": "jpeg", "dtype": "uint8", "shape": list(image.shape)}, data.tobytes()


def image_part(name: str, image: np.ndarray, encoding: str, quality: int = 90) -> tuple[dict[str, Any], Any]:
    return jpeg_part(name, image, quality) if encoding == "jpeg" else raw_part(name, image)


def encode(kind: str, topic: str, parts: Sequence[tuple[dict[str, Any], Any]] = (), **fields: Any) -> list[Any]:
    """[topic, header, payload...] ready for `send_multipart(..., copy=False)`."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": kind, **fields}
    header.setdefault("t", {})
    header["parts"] = [spec for spec, _ in parts]
    return [topic.encode("utf-8"), _pack(header), *[payload for _, payload in parts]]


def reencode(message: Message, header: dict[str, Any] | None = None,
             extra: Sequence[tuple[dict[str, Any], Any]] = ()) -> list[Any]:
    """Forward a received message with an updated header (and more parts), payload untouched."""
    header = dict(message.header if header is None else header)
    specs = [{"name": s.name, "enc": s.encoding, "dtype": s.dtype, "shape": list(s.shape)} for s in message.specs]
    header["parts"] = specs + [spec for spec, _ in extra]
    return [message.topic.encode("utf-8"), _pack(header), *message.parts, *[payload for _, payload in extra]]


def control(kind: str, sender: str = "", **fields: Any) -> list[Any]:
    return encode(kind, sender, **fields)


# -- detections on the wire -------------------------------------------------------------------------

_BOX_ARRAYS = ("xyxy", "confidence", "class_id", "logits", "box_features", "level")


def detections_parts(dets: Detections, crops: str = "raw", quality: int = 90
                     ) -> tuple[dict[str, Any], list[tuple[dict[str, Any], Any]]]:
    """Header fields and payload parts of one frame's detections.

    Crops go as one raw part (all crops back to back, shapes in `crop_shapes`) on the same
    machine, or one JPEG part each on hops that leave it; `crops="none"` leaves them out.
    """
    parts = [raw_part(name, getattr(dets, name)) for name in _BOX_ARRAYS]
    for key, value in dets.data.items():
        arr = np.asarray(value)
        if arr.dtype.name in DTYPES and arr.ndim >= 1:
            parts.append(raw_part(f"data.{key}", arr))
    fields: dict[str, Any] = {"class_names": list(dets.class_names), "image_size": list(dets.image_size)}
    if dets.crops is None or crops == "none":
        fields["crops"] = "none"
    elif crops == "jpeg":
        if any(c.size == 0 for c in dets.crops):
            raise GhostboxError("protocol: an empty crop cannot be JPEG-encoded")
        fields["crops"] = "jpeg"
        fields["crop_shapes"] = [list(c.shape[:2]) for c in dets.crops]
        parts.extend(jpeg_part("crop", c, quality) for c in dets.crops)
    else:
        fields["crops"] = "raw"
        fields["crop_shapes"] = [list(c.shape[:2]) for c in dets.crops]
        flat = (np.concatenate([np.ascontiguousarray(c).reshape(-1) for c in dets.crops])
                if dets.crops else np.zeros(0, np.uint8))
        parts.append(raw_part("crops", flat.astype(np.uint8, copy=False)))
    return fields, parts


def detections_from(message: Message) -> Detections:
    """Rebuild the `Detections` of a detections message; any inconsistency is a ProtocolError."""
    header = message.header
    try:
        arrays = {name: message.array(name) for name in _BOX_ARRAYS}
        n = len(arrays["xyxy"])
        if n > MAX_BOXES:
            raise ProtocolError("bad-detections", f"{n} boxes")
        for name in ("xyxy", "confidence", "logits", "box_features"):
            if arrays[name].dtype.kind == "f" and not np.isfinite(arrays[name]).all():
                raise ProtocolError("bad-detections", f"{name} holds NaN or infinity")
        data = {spec.name[5:]: decode_part(spec, message.parts[i])
                for i, spec in enumerate(message.specs) if spec.name.startswith("data.")}
        crops = _crops(message, n)
        return Detections(
            **arrays, class_names=tuple(header["class_names"]), image_size=tuple(header["image_size"]),
            source=header.get("origin", message.topic), frame=int(header.get("frame", 0)), crops=crops, data=data,
        )
    except GhostboxError as exc:  # the Detections constructor's shape checks
        raise ProtocolError("bad-detections", str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise ProtocolError("bad-detections", str(exc)) from None


def _crops(message: Message, n: int) -> list[np.ndarray] | None:
    mode = message.header["crops"]
    if mode == "none":
        return None
    shapes = message.header.get("crop_shapes")
    if shapes is None or len(shapes) != n:
        raise ProtocolError("bad-detections", f"crop_shapes lists {len(shapes or [])} crops for {n} boxes")
    if mode == "jpeg":
        crops = message.arrays("crop")
        if len(crops) != n:
            raise ProtocolError("bad-detections", f"{len(crops)} JPEG crops for {n} boxes")
        return crops
    flat = message.array("crops")
    sizes = [h * w * 3 for h, w in shapes]
    if flat.ndim != 1 or flat.dtype != np.uint8 or sum(sizes) != flat.size:
        raise ProtocolError("bad-detections", "crops part does not match crop_shapes")
    crops, start = [], 0
    for (h, w), size in zip(shapes, sizes):
        crops.append(flat[start:start + size].reshape(h, w, 3))
        start += size
    return crops
