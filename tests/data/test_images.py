"""Image sizes from file headers agree with what cv2.imread returns."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data import read_image_size
from pipeline.errors import GhostboxError


def exif_segment(orientation: int, byte_order: str) -> bytes:
    fmt = "<" if byte_order == "II" else ">"
    tiff = (byte_order.encode() + struct.pack(fmt + "HI", 42, 8) + struct.pack(fmt + "H", 1)
            + struct.pack(fmt + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(fmt + "I", 0))
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def jpeg_with_orientation(path: Path, width: int, height: int, orientation: int,
                          byte_order: str = "II") -> None:
    data = cv2.imencode(".jpg", np.zeros((height, width, 3), np.uint8))[1].tobytes()
    app0_end = 4 + struct.unpack(">H", data[4:6])[0]  # keep JFIF's APP0 first
    path.write_bytes(data[:app0_end] + exif_segment(orientation, byte_order) + data[app0_end:])


@pytest.mark.parametrize(("orientation", "byte_order"), [(1, "II"), (6, "II"), (8, "MM"),
                                                         (3, "MM")])
def test_jpeg_header_size_follows_exif_orientation(tmp_path: Path, orientation: int,
                                                   byte_order: str) -> None:
    path = tmp_path / "rotated.jpg"
    jpeg_with_orientation(path, 40, 24, orientation, byte_order)
    decoded = cv2.imread(str(path))
    assert read_image_size(path) == (decoded.shape[1], decoded.shape[0])
    assert read_image_size(path) == ((24, 40) if orientation >= 5 else (40, 24))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_plain_formats(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"a{suffix}"
    cv2.imwrite(str(path), np.zeros((13, 37, 3), np.uint8))
    assert read_image_size(path) == (37, 13)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(GhostboxError, match="nope.jpg: image file not found"):
        read_image_size(tmp_path / "nope.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0\x00")
    with pytest.raises(GhostboxError, match="broken.jpg: cannot decode image"):
        read_image_size(broken)
