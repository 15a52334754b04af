"""JSON reading with errors that name the file and the position of the fault.

``iter_json_array`` decodes a top-level list one element at a time, so a BDD label file
costs its text plus one frame's objects, instead of the several-fold larger tree of
Python dicts that ``json.load`` builds (gigabytes for det_train.json).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import GhostboxError

_WHITESPACE = re.compile(r"[ \t\n\r]*")


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise GhostboxError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise GhostboxError(f"{path}: is a folder, expected a JSON file") from None
    except UnicodeDecodeError as exc:
        raise GhostboxError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise GhostboxError(f"{path}: cannot read ({exc.strerror})") from None


def read_json(path: Path) -> Any:
    """Parse a whole JSON file."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _decode_error(path, exc) from None


def first_json_char(path: Path) -> str:
    """The first non-blank character of a JSON file ('[' for BDD, '{' for COCO)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    except OSError as exc:
        raise GhostboxError(f"{path}: cannot read ({exc.strerror})") from None
    return head[:1].decode("ascii", errors="replace")


def iter_json_array(path: Path) -> Iterator[Any]:
    """Yield the elements of the top-level JSON list in ``path`` one by one."""
    text = read_text(path)
    decoder = json.JSONDecoder()
    pos = _skip_blank(text, 0)
    if text[pos : pos + 1] != "[":
        found = text[pos : pos + 1] or "end of file"
        raise GhostboxError(f"{path}: expected a JSON list at {_where(text, pos)}, found {found!r}")
    pos = _skip_blank(text, pos + 1)
    if text[pos : pos + 1] == "]":
        pos += 1
    else:
        while True:
            try:
                element, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise _decode_error(path, exc) from None
            yield element
            pos = _skip_blank(text, pos)
            separator = text[pos : pos + 1]
            if separator == ",":
                pos = _skip_blank(text, pos + 1)
            elif separator == "]":
                pos += 1
                break
            else:
                raise GhostboxError(
                    f"{path}: invalid JSON at {_where(text, pos)}: expecting ',' or ']'")
    pos = _skip_blank(text, pos)
    if pos != len(text):
        raise GhostboxError(f"{path}: invalid JSON at {_where(text, pos)}: extra data")


def _skip_blank(text: str, pos: int) -> int:
    """The index of the first character at or after ``pos`` that is not JSON whitespace."""
    match = _WHITESPACE.match(text, pos)
    return match.end() if match is not None else pos  # the pattern matches the empty string: never None


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return f"line {line} column {column}"


def _decode_error(path: Path, exc: json.JSONDecodeError) -> GhostboxError:
    return GhostboxError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
