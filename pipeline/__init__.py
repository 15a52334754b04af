"""ghostbox: keep object detectors from seeing things that are not there."""

from __future__ import annotations

from pipeline import ultralytics_env as _ultralytics_env

# Before anything imports Ultralytics: offline, no auto-install, ghostbox-owned config dir.
_ultralytics_env.prepare()

__version__ = "0.1.0"
