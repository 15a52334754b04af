"""Reading image pixels and image sizes for ground-truth records.

Sizes come from the JPEG/PNG header (a few hundred bytes) so that labels can be checked
against the image without decoding it; other formats fall back to a full decode.
The header size honours the EXIF orientation because ``cv2.imread`` rotates such images.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from pipeline.data.records import ImageRecord
from pipeline.errors import GhostboxError

# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_image(record: ImageRecord) -> np.ndarray:
    """Decode the record's image as a BGR uint8 array (H, W, 3)."""
    path = record.path
    if not path.is_file():
        raise GhostboxError(f"{path}: image file not found (file_name {record.file_name!r})")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise GhostboxError(f"{path}: cannot decode image (file_name {record.file_name!r})")
    return image


def read_image_size(path: Path) -> tuple[int, int]:
    """Return (width, height) of the image at ``path`` as ``cv2.imread`` would load it."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = None
            if head[:2] == b"\xff\xd8":
                size = _jpeg_size(f)
            elif head == _PNG_SIGNATURE:
                size = _png_size(f)
    except FileNotFoundError:
        raise GhostboxError(f"{path}: image file not found") from None
    except OSError as exc:
        raise GhostboxError(f"{path}: cannot read image ({exc.strerror})") from None
    if size is not None:
        return size
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise GhostboxError(f"{path}: cannot decode image")
    return int(image.shape[1]), int(image.shape[0])


def _png_size(f: BinaryIO) -> tuple[int, int] | None:
    chunk = f.read(16)
    if len(chunk) < 16 or chunk[4:8] != b"IHDR":
        return None
    width, height = struct.unpack(">II", chunk[8:16])
    return (width, height) if width > 0 and height > 0 else None


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    f.seek(2)
    orientation = 1
    while True:
        if f.read(1) != b"\xff":
            return None
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in _JPEG_STANDALONE:
            continue
        raw_length = f.read(2)
        if len(raw_length) < 2:
            return None
        length = struct.unpack(">H", raw_length)[0] - 2
        if code in _JPEG_SOF:
            data = f.read(5)
            if len(data) < 5:
                return None
            height, width = struct.unpack(">HH", data[1:5])
            if width == 0 or height == 0:
                return None
            # Orientations 5-8 rotate by 90 degrees: cv2.imread returns the swapped size.
            return (height, width) if orientation >= 5 else (width, height)
        if code == 0xDA:  # scan data before any frame header: give up, decode instead
            return None
        if code == 0xE1 and orientation == 1:
            orientation = _exif_orientation(f.read(length))
        else:
            f.seek(length, 1)


def _exif_orientation(segment: bytes) -> int:
    if not segment.startswith(b"Exif\x00\x00") or len(segment) < 14:
        return 1
    tiff = segment[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    try:
        (ifd_offset,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd_offset : ifd_offset + 2])
        for k in range(count):
            start = ifd_offset + 2 + 12 * k
            tag, kind = struct.unpack(order + "HH", tiff[start : start + 4])
            if tag == 0x0112 and kind == 3:  # Orientation, SHORT
                (value,) = struct.unpack(order + "H", tiff[start + 8 : start + 10])
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1
