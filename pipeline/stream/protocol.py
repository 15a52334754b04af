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

Nor is what a part would grow to (`Limits`, from the graph's `limits` section): a part's
declared shape must fit `max_image_pixels` and `max_part_bytes` before anything is decoded,
and a JPEG part's own frame header (read without decoding) must say exactly that shape, so
a small JPEG that claims 10000x10000 pixels costs its compressed bytes, not 300 MB.
Detections' crops must fit in the frame they were cut from.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class Limits:
    """What one received part may make this process allocate (defaults: `config.LimitsConfig`)."""

    max_image_pixels: int = 50_000_000  # one image (frame or crop): height * width
    max_part_bytes: int = 256 << 20  # one part, as received and once decoded

    @classmethod
    def from_config(cls, config: Any) -> Limits:
        """From a `LimitsConfig` (read by field name, so this module needs no config import)."""
        return cls(max_image_pixels=int(config.max_image_pixels), max_part_bytes=int(config.max_message_bytes))


DEFAULT_LIMITS = Limits()


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


def _seal(value: Any, name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) > 64:
        raise ProtocolError("bad-field", f"{name}: not a seal")
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
    FRAME: {"fps": _opt_float, "image_size": _size, "attempts": _int, "more": _int, "seal": _seal},
    DETECTIONS: {**_FRAME_FIELDS, "fps": _opt_float, "crop_shapes": _shapes, "detector": _dict,
                 "error": _str, "attempts": _int, "policy": _choice(("flag", "drop")), "drift": _dict,
                 "seal": _seal, "sealed": _seal},
    EOS: {"total": _opt_int, "dropped": _int, "epoch": _int, "stats": _dict, "detail": _str, "seal": _seal},
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
    view = memoryview(buffer if buffer is not None else part)
    if view.ndim != 1 or view.format != "B":  # len() and indexing below count bytes
        try:
            view = view.cast("B")
        except TypeError:  # not contiguous
            raise ProtocolError("bad-part", "payload is not a contiguous buffer") from None
    return view


# -- JPEG frame header --------------------------------------------------------------------------------

# SOF0..SOF15 carry the frame size; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not SOFs
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# what may come before the SOF with a length of its own: APPn, COM, DQT, DHT, DAC, DRI.
# Anything else there (SOS, EOI, RSTn, unknown codes) libjpeg refuses too, so refusing it costs nothing.
_SKIPPABLE_MARKERS = frozenset(range(0xE0, 0xF0)) | {0xFE, 0xDB, 0xC4, 0xCC, 0xDD}
# cameras write about a dozen segments before the SOF, cv2 four; the bounds keep a hostile message of
# MAX_PARTS tiny JPEG parts from costing seconds of this loop
_MAX_JPEG_SEGMENTS = 64
_MAX_JPEG_FILL = 64  # 0xFF fill bytes before markers, in all: legal, but rare


def jpeg_header(data: Any) -> tuple[int, int, int]:
    """(height, width, components) from a JPEG's frame header (SOF), without decoding anything.

    Only the markers before the first SOF are walked, by their lengths; any malformation is a
    ProtocolError("bad-jpeg"). A decoder reads the same first SOF (a second one is an error to it).
    """
    view = _buffer(data)
    n = len(view)
    if n < 4 or view[0] != 0xFF or view[1] != 0xD8:
        raise ProtocolError("bad-jpeg", "no SOI marker")
    pos, fill = 2, 0
    for _ in range(_MAX_JPEG_SEGMENTS):
        if pos < n and view[pos] != 0xFF:
            raise ProtocolError("bad-jpeg", f"no marker at byte {pos}")
        fill -= 1  # the 0xFF that starts every marker is not fill
        while pos < n and view[pos] == 0xFF:
            pos += 1
            fill += 1
            if fill > _MAX_JPEG_FILL:
                raise ProtocolError("bad-jpeg", "too many fill bytes")
        if pos >= n:
            raise ProtocolError("bad-jpeg", "truncated before the frame header")
        code = view[pos]
        if code not in _SOF_MARKERS and code not in _SKIPPABLE_MARKERS:
            raise ProtocolError("bad-jpeg", f"marker 0x{code:02X} before the frame header")
        if pos + 3 > n:
            raise ProtocolError("bad-jpeg", "truncated before the frame header")
        length = (view[pos + 1] << 8) | view[pos + 2]  # includes its own 2 bytes
        segment = pos + 1  # where the length starts
        if length < 2:
            raise ProtocolError("bad-jpeg", f"marker 0x{code:02X}: length {length}")
        if segment + length > n:
            raise ProtocolError("bad-jpeg", f"marker 0x{code:02X}: length {length} runs past the data")
        if code in _SOF_MARKERS:
            if length < 8:
                raise ProtocolError("bad-jpeg", "short frame header")
            precision = view[segment + 2]
            height = (view[segment + 3] << 8) | view[segment + 4]
            width = (view[segment + 5] << 8) | view[segment + 6]
            components = view[segment + 7]
            if length != 8 + 3 * components:
                raise ProtocolError("bad-jpeg", f"frame header length {length} for {components} components")
            if precision != 8:  # anything else does not decode to uint8
                raise ProtocolError("bad-jpeg", f"{precision}-bit samples")
            if height == 0 or width == 0 or components == 0:  # height 0: given later by a DNL marker
                raise ProtocolError("bad-jpeg", f"frame header says {height}x{width}x{components}")
            return height, width, components
        pos = segment + length
    raise ProtocolError("bad-jpeg", "too many segments before the frame header")


def _check_jpeg(spec: Part, buffer: memoryview, limits: Limits) -> None:
    """The declared shape fits the limits and is exactly what the JPEG's own header says."""
    shape = spec.shape
    if spec.dtype != "uint8" or len(buffer) == 0:
        raise ProtocolError("bad-part", f"{spec.name}: jpeg part must be non-empty uint8")
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
        raise ProtocolError("jpeg-shape", f"{spec.name}: declared {list(shape)}")
    _check_image_size(spec, limits)
    height, width, components = jpeg_header(buffer)
    if (height, width) != shape[:2] or components != (shape[2] if len(shape) == 3 else 1):
        raise ProtocolError("jpeg-shape", f"{spec.name}: declared {list(shape)}, "
                                          f"JPEG header says {[height, width, components]}")


def _check_image_size(spec: Part, limits: Limits) -> None:
    """Pixels of an image-like part (2-3 dims of uint8) and decoded bytes of any part, from its shape."""
    if len(spec.shape) in (2, 3) and spec.dtype == "uint8" and spec.shape[0] * spec.shape[1] > limits.max_image_pixels:
        raise ProtocolError("image-too-large", f"{spec.name}: {list(spec.shape)}")
    # math.prod: exact (np.prod in int64 can wrap to a small number for four huge dims)
    if math.prod(spec.shape) * np.dtype(spec.dtype).itemsize > limits.max_part_bytes:
        raise ProtocolError("part-too-large", f"{spec.name}: {spec.dtype}{list(spec.shape)}")


@dataclass
class Message:
    """A decoded, validated message; payload parts stay zero-copy until an array is asked for."""

    topic: str
    header: dict[str, Any]
    specs: list[Part]
    parts: list[Any]  # zmq.Frame / bytes / memoryview, as received
    limits: Limits = DEFAULT_LIMITS  # what `decode` checked, and what decoding the parts may not exceed

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
        return decode_part(self.specs[i], self.parts[i], self.limits)

    def arrays(self, name: str) -> list[np.ndarray]:
        """Every part with this name, in order (JPEG crops are one part each)."""
        return [decode_part(spec, self.parts[i], self.limits) for i, spec in enumerate(self.specs)
                if spec.name == name]


def decode_part(spec: Part, part: Any, limits: Limits | None = None) -> np.ndarray:
    buffer = _buffer(part)
    if spec.encoding == "jpeg":
        # checked again here (a few bytes read) so that no caller can decode a JPEG unchecked
        _check_jpeg(spec, buffer, limits or DEFAULT_LIMITS)
        color = len(spec.shape) == 3 and spec.shape[2] == 3
        # the SOF read above is the one the decoder reads, so the image it allocates is the checked
        # shape; EXIF orientation is ignored, as it would swap height and width
        flags = (cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE) | cv2.IMREAD_IGNORE_ORIENTATION
        try:
            image = cv2.imdecode(np.frombuffer(buffer, np.uint8), flags)
        except cv2.error:
            image = None
        if image is None:
            raise ProtocolError("bad-jpeg", spec.name)
        if image.ndim == 2 and len(spec.shape) == 3:
            image = image[:, :, None]
        if image.shape != spec.shape or image.dtype != np.uint8:
            raise ProtocolError("jpeg-shape", f"{spec.name}: declared {list(spec.shape)}, decoded {image.shape}")
        return image
    try:
        return np.frombuffer(buffer, dtype=spec.dtype).reshape(spec.shape)
    except ValueError:  # only for a part `decode` did not check
        raise ProtocolError("part-size", spec.name) from None


def decode(frames: Sequence[Any], limits: Limits | None = None) -> Message:
    """Validate a received multipart message (after any ROUTER envelope was taken off).

    `limits` bound what any part may decode to (None: the defaults, equal to `LimitsConfig`'s).
    """
    limits = limits or DEFAULT_LIMITS
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
        buffer = _buffer(part)
        size = len(buffer)
        if size > MAX_PART_BYTES or size > limits.max_part_bytes:
            raise ProtocolError("part-too-large", spec.name)
        if spec.encoding == "raw":
            expected = math.prod(spec.shape) * np.dtype(spec.dtype).itemsize
            if expected != size:
                raise ProtocolError("part-size", f"{spec.name}: {spec.dtype}{list(spec.shape)} needs {expected} "
                                                 f"bytes, got {size}")
            _check_image_size(spec, limits)
        else:
            _check_jpeg(spec, buffer, limits)
    return Message(topic, header, specs, payload, limits)


# -- encoding ---------------------------------------------------------------------------------------

def _pack(header: dict[str, Any]) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def raw_part(name: str, array: np.ndarray) -> tuple[dict[str, Any], Any]:
    array = np.ascontiguousarray(array)
    if array.dtype.name not in DTYPES:
        raise GhostboxError(f"protocol: dtype {array.dtype} of part '{name}' cannot go on the wire")
    # memoryview: sent zero-copy by pyzmq when large (copy=False), copied when small
    view = array.data.cast("B") if array.nbytes else b""  # array.data: memoryview(array)
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
    width, height = message.header["image_size"]
    for h, w in shapes:  # a crop is cut from a box of the frame: it cannot be larger than the frame
        if h > height or w > width:
            raise ProtocolError("crop-shape", f"crop {h}x{w} in a {height}x{width} frame")
    sizes = [h * w * 3 for h, w in shapes]
    if mode == "jpeg":
        specs = [spec for spec in message.specs if spec.name == "crop"]
        if len(specs) != n:
            raise ProtocolError("bad-detections", f"{len(specs)} JPEG crops for {n} boxes")
        for spec, (h, w) in zip(specs, shapes):  # `decode` matched each part's shape to its JPEG header
            if spec.shape != (h, w, 3):
                raise ProtocolError("crop-shape", f"crop_shapes says {h}x{w}, its JPEG part {list(spec.shape)}")
        # all crops decoded together may not exceed what one raw crops part could carry
        if sum(sizes) > message.limits.max_part_bytes:
            raise ProtocolError("crops-too-large", f"{sum(sizes)} bytes of crops")
        return message.arrays("crop")
    flat = message.array("crops")
    if flat.ndim != 1 or flat.dtype != np.uint8 or sum(sizes) != flat.size:
        raise ProtocolError("bad-detections", "crops part does not match crop_shapes")
    crops, start = [], 0
    for (h, w), size in zip(shapes, sizes):
        crops.append(flat[start:start + size].reshape(h, w, 3))
        start += size
    return crops
