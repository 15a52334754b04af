"""File names made from stream source ids: `safe_name`.

A source id comes from the graph file and may hold any character (a URL, a path); the files and
folders named after it (annotated/<id>.mp4, calibration/<id>.avi, flagged/<id>/) keep letters,
digits, '.', '_' and '-' only. One mapping for all of them, so a source's outputs share its name.
"""

from __future__ import annotations

import re


def safe_name(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", source) or "source"
