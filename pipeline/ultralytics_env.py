"""Keep Ultralytics offline and inside a ghostbox-owned directory.

`import ultralytics` probes DNS to decide whether it is online, may pip-install missing
requirements at run time, and fetches Arial.ttf for plots. None of that may happen in
ghostbox: the environment below is set before Ultralytics is first imported (the
`pipeline` package calls `prepare()` on import), and fonts come from matplotlib.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

_prepared = False


def ghostbox_home() -> Path:
    """Where ghostbox keeps Ultralytics' settings, fonts, downloaded weights and caches."""
    if env := os.environ.get("GHOSTBOX_HOME"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ghostbox"


def ultralytics_dir() -> Path:
    return ghostbox_home() / "ultralytics"


def weights_dir() -> Path:
    return ghostbox_home() / "weights"


def _place_fonts(config_dir: Path) -> None:
    # Ultralytics looks for Arial in YOLO_CONFIG_DIR/Ultralytics before downloading it.
    config_dir = config_dir / "Ultralytics"
    config_dir.mkdir(parents=True, exist_ok=True)
    wanted = [config_dir / "Arial.ttf", config_dir / "Arial.Unicode.ttf"]
    if all(p.exists() for p in wanted):
        return
    try:
        import matplotlib  # heavy, and only for its font file: `import pipeline` stays light

        dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    except Exception:  # matplotlib missing: Ultralytics will only lack labels on its plots
        return
    for target in wanted:
        if not target.exists() and dejavu.exists():
            shutil.copyfile(dejavu, target)


def prepare() -> None:
    """Set Ultralytics' offline environment; idempotent and cheap (no Ultralytics import)."""
    global _prepared
    if _prepared:
        return
    config_dir = ultralytics_dir()
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        _place_fonts(config_dir)
    except OSError:
        # A read-only home must not break `import pipeline`; Ultralytics falls back to /tmp.
        pass
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("YOLO_VERBOSE", "false")
    _prepared = True
    if "ultralytics" in sys.modules:
        # Imported by the user before ghostbox: its online probe already ran; still stop
        # analytics and auto-installs from here on.
        _settle_imported()


def _settle_imported() -> None:
    # Ultralytics is already in sys.modules here: these imports cost nothing, but at module top
    # they would import it for every `import pipeline`
    from ultralytics import utils as yutils
    from ultralytics.utils import checks

    yutils.ONLINE = False
    checks.AUTOINSTALL = False
    yutils.AUTOINSTALL = False


def import_ultralytics() -> ModuleType:
    """Import Ultralytics with ghostbox's environment and quiet, offline settings."""
    prepare()
    import ultralytics  # heavy: imported on demand, after prepare() has set its environment
    from ultralytics.utils import SETTINGS

    wanted = {
        "sync": False,
        "weights_dir": str(weights_dir()),
        "runs_dir": str(ghostbox_home() / "runs"),
        "datasets_dir": str(ghostbox_home() / "datasets"),
    }
    if any(SETTINGS.get(k) != v for k, v in wanted.items()):
        try:
            SETTINGS.update(wanted)
        except Exception:  # unwritable settings file: the values above are only defaults
            pass
    return ultralytics
