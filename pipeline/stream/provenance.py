"""Provenance seals: a row is written only for a frame its source sent, with the boxes the filter passed on.

Three stages share one secret, the seal key (never the broker or the workers, whose machines
are the ones most often shared or rented):
- a source seals each frame's identity (stream, epoch, seq, frame index, origin) and its end of
  stream (stream, epoch, status, total);
- the filter takes a result only with its frame's seal, and seals what it sends on: the frame's
  seal, the header fields a row is made of and every box part (not the pixels: image and crops);
- a sink writes a result only with the filter's seal, and believes an end of stream only with
  its source's.

So a peer holding the CURVE client key or the graph token (it can connect anywhere) cannot write
a row for a frame that was never sent, replace a real one before it arrives, or end a stream
early: what it sends is refused, counted with its address (the peer) and makes the run
`incomplete`. A worker still decides what boxes a frame gets: results are as trusted as workers.

The key is HMAC-SHA256's (32 random bytes, hex in a 0600 file). `ghostbox run` makes a new one
per run in its run folder; stages started alone (`ghostbox stage`) read `security.seal`, by
default `KEYS/seal.key`, which `ghostbox keys` writes with every key set.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgpack

from pipeline.errors import GhostboxError

SEAL_FILE = "seal.key"
SEAL_BYTES = 16  # of HMAC-SHA256's 32: a forger's chance per message is 2^-128
KEY_BYTES = 32
PIXEL_PARTS = ("image", "crop", "crops")  # not sealed: hashing pixels costs a millisecond a frame
# what a sink's row says besides the box arrays, all of it under the filter's seal
ROW_FIELDS = ("seq", "epoch", "frame", "origin", "class_names", "image_size", "crops", "crop_shapes", "error",
              "policy", "dropped")


def make_seal_key(path: str | Path, exist_ok: bool = False) -> Path:
    """A new key file, mode 600 from its first byte, appearing whole (written aside, then linked in place);
    with `exist_ok` one already there is kept, so stages starting together all read the first one made."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() and exist_ok:
        return path
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(KEY_BYTES) + "\n")
        os.link(aside, path)  # fails when the name exists: never half a file, never a second key under it
    except FileExistsError:
        if not exist_ok:
            raise GhostboxError(f"keys: '{path}' already exists (pass --force to replace it)") from None
    finally:
        aside.unlink(missing_ok=True)
    return path


def load_seal_key(path: str | Path) -> bytes:
    from pipeline.stream.security import check_private  # the one rule for secret files

    path = Path(path)
    check_private(path, "seal key file")
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise GhostboxError(
            f"security: seal key '{path}' not found: sources, the filter and sinks need the same one (`ghostbox keys "
            f"--out {path.parent} --seal` makes it; copy it with `scp -p` to every machine running one of them)"
        ) from None
    except OSError as exc:
        raise GhostboxError(f"security: seal key '{path}': {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise GhostboxError(f"security: seal key '{path}' is not hex (make a new one with `ghostbox keys "
                            f"--seal`)") from None
    if len(key) < 16:
        raise GhostboxError(f"security: seal key '{path}' holds {len(key)} bytes; at least 16 are needed")
    return key


def _pack(values: Iterable[Any]) -> bytes:
    return msgpack.packb(list(values), use_bin_type=True)


class Seal:
    """Makes and checks the seals of one graph's messages (see the module's docstring)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: str | Path) -> Seal:
        return cls(load_seal_key(path))

    def _mac(self, kind: bytes, *chunks: bytes | memoryview) -> bytes:
        mac = hmac.new(self._key, kind, hashlib.sha256)
        for chunk in chunks:
            mac.update(len(chunk).to_bytes(8, "little"))  # lengths first: no two inputs share a byte string
            mac.update(chunk)
        return mac.digest()[:SEAL_BYTES]

    def frame(self, stream: str, header: dict[str, Any]) -> bytes:
        return self._mac(b"frame", _pack([stream, header.get("epoch"), header.get("seq"), header.get("frame"),
                                          header.get("origin")]))

    def eos(self, stream: str, header: dict[str, Any]) -> bytes:
        status = header.get("status")
        # a failed source's end is sent by the supervisor, which knows neither its epoch nor its count (the
        # broker fills them in); a failed stream never makes a run complete, so that is all it needs to bind
        fields = [stream, status] if status == "failed" else [stream, status, header.get("epoch"), header.get("total")]
        return self._mac(b"eos", _pack(fields))

    def result(self, stream: str, header: dict[str, Any], specs: Sequence[dict[str, Any]],
               parts: Sequence[Any]) -> bytes:
        """Over the frame's seal, the row's header fields and every non-pixel part (its descriptor and bytes)."""
        chunks: list[bytes | memoryview] = [bytes(header.get("seal") or b""),
                                            _pack([stream, *(header.get(k) for k in ROW_FIELDS)])]
        for spec, part in zip(specs, parts):
            if spec["name"] in PIXEL_PARTS:
                continue
            chunks.append(_pack([spec["name"], spec["enc"], spec["dtype"], list(spec["shape"])]))
            chunks.append(memoryview(getattr(part, "buffer", part)).cast("B"))
        return self._mac(b"result", *chunks)

    @staticmethod
    def same(expected: bytes, given: Any) -> bool:
        return isinstance(given, bytes) and hmac.compare_digest(expected, given)


def part_specs(message: Any) -> list[dict[str, Any]]:
    """A decoded message's part descriptors as the wire has them (what `Seal.result` covers)."""
    return [{"name": s.name, "enc": s.encoding, "dtype": s.dtype, "shape": list(s.shape)} for s in message.specs]


def peer_name(frame: Any) -> str:
    """Who sent a received zmq frame: its address, and its CURVE key or pid where the transport says."""
    get = getattr(frame, "get", None)
    if get is None:
        return "unknown peer"
    try:
        address = str(get("Peer-Address"))
    except Exception:  # noqa: BLE001 - pyzmq raises ZMQError or another type by version when a property is absent
        address = ""
    try:
        user = str(get("User-Id"))
    except Exception:  # noqa: BLE001 - absent without ZAP (ipc, no security)
        user = ""
    if address.startswith("localhost:") and address.count(":") == 3:  # ipc: localhost:uid:gid:pid
        _, uid, _, pid = address.split(":")
        address = f"ipc peer pid {pid} (uid {uid})"
    who = address or "unknown peer"
    if user == "ghostbox":
        who += " (graph token)"
    elif user:
        who += f" (CURVE key {user[:12]}...)"
    return who
