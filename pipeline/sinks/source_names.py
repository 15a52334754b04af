"""File names made from stream source ids: `safe_name`.

A source id comes from the graph file and may hold any character (a URL, a path); the files and
folders named after it (annotated/<id>.mp4, calibration/<id>.avi, flagged/<id>/) keep letters,
digits, '.', '_' and '-' only. One mapping for all of them, so a source's outputs share its name;
`ghostbox detect` names its annotated files the same way (with `empty="frame"`).
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(source: str, empty: str = "source") -> str:
    """`source` with every run of other characters replaced by one '_'; `empty` when nothing is left."""
    return _UNSAFE.sub("_", source) or empty
