"""Free space on the filesystem an output is written to, and the notes that put a failure down to it.

A full disk (or a quota) is the usual reason a sink loses output, so every writer here asks the
filesystem rather than guessing: `free_bytes` for a writer that stops before the disk is full,
and two notes that a problem line ends with, so whoever reads it sees the cause.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

FULL_BELOW = 1 << 20  # a failure with less free space than this is put down to a full disk


def free_bytes(folder: str | Path) -> int | None:
    """Bytes an unprivileged writer may still use under `folder`; None when it cannot be asked."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def full_disk_note(folder: str | Path) -> str:
    """' (filesystem full: N KB free)' when `folder` has less than FULL_BELOW free; else ''.

    For failures that carry no errno (an OpenCV writer, cv2.imwrite): the free space is the clue.
    """
    free = free_bytes(folder)
    return f" (filesystem full: {free // 1024} KB free)" if free is not None and free < FULL_BELOW else ""


def free_space_note(folder: str | Path, exc: OSError | None = None) -> str:
    """' (N KB free)' when the error is a full disk or a quota (or none is given); else ''."""
    if exc is not None and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return ""
    free = free_bytes(folder)
    return "" if free is None else f" ({free // 1024} KB free)"
