"""JSON files written whole: `write_json` (and `replace_text` under it).

The text goes to a temporary file beside the target (<name>.tmp) which is then renamed over it,
so a reader sees the old file or the new one, never half of one. The format is the caller's: the
bytes of each file stay what its readers and tests expect.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def replace_text(path: Path, text: str, tmp: Path | None = None) -> None:
    """Write `text` (UTF-8) to `tmp` (default <path>.tmp) and rename it over `path`; on failure no tmp is left."""
    tmp = path.with_name(path.name + ".tmp") if tmp is None else tmp
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json(path: Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False,
               separators: tuple[str, str] | None = None, newline: bool = True) -> None:
    """`data` as JSON (`json.dumps` with these options, then a newline unless `newline=False`), replaced whole."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, separators=separators)
    replace_text(path, text + "\n" if newline else text)
