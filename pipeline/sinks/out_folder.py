"""Whether an output folder can be written, asked before a command does any work."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.errors import GhostboxError


def check_writable_folder(path: str | Path, flag: str = "--out") -> None:
    """Refuse (GhostboxError, one line) an output folder this user cannot write to, before the work starts.

    The folder, or the nearest parent that exists (the writers make the rest), gets a nameless
    temporary file: that asks the filesystem itself, so a read-only mount is caught for root too
    (root ignores mode bits), as are a missing permission and a parent that is a regular file.
    Nothing is left behind.
    """
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise GhostboxError(f"{flag} '{path}': '{existing}' is a file, not a folder; choose another output folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise GhostboxError(f"{flag} '{path}': cannot write in '{existing}' ({exc.strerror or exc}); "
                            "choose a writable output folder") from None
