"""Resolve what the user passed as `--model`: a file on disk, an Ultralytics name, or a yaml.

Network access happens here only, and only for an Ultralytics model name that is not on
disk: it is downloaded into ghostbox's weights folder when the machine is online, and
offline (or with GHOSTBOX_OFFLINE=1) it fails at once with what to do instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import GhostboxError
from pipeline.ultralytics_env import import_ultralytics, weights_dir

# Names Ultralytics publishes as release assets: yolov8n.pt, yolo11s.pt, yolov10m.pt, yolo26n.pt ...
_NAME = re.compile(r"^(yolov?\d+[a-z0-9-]*)(\.pt)?$", re.IGNORECASE)
_KINDS = {".pt": "pt", ".onnx": "onnx", ".yaml": "yaml", ".yml": "yaml"}


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "pt" | "onnx" | "yaml"
    path: Path
    spec: str  # what the user passed, for messages


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _online(timeout_s: float = 3.0) -> bool:
    if os.environ.get("GHOSTBOX_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    try:
        with socket.create_connection(("github.com", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _download(name: str) -> Path:
    import_ultralytics()
    from ultralytics.utils import downloads  # heavy: only for a download

    target = weights_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = downloads.attempt_download_asset(str(target))
    except Exception as exc:  # noqa: BLE001 - any download failure becomes one line
        raise GhostboxError(f"model '{name}': download failed ({exc}); "
                            "place the file on disk and pass its path") from exc
    path = Path(got)
    if not path.is_file():
        raise GhostboxError(f"model '{name}': download did not produce a file at {path}")
    return path


def resolve_model(spec: str | os.PathLike[str]) -> ModelSource:
    text = str(spec)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix not in _KINDS:
            raise GhostboxError(f"model '{text}': unsupported file type '{suffix}' (expected .pt, .onnx or .yaml)")
        return ModelSource(_KINDS[suffix], path.resolve(), text)
    if path.exists():
        raise GhostboxError(f"model '{text}' is a directory, not a model file")
    if suffix in {".yaml", ".yml"}:
        # Ultralytics ships architecture yamls (yolov8n.yaml, yolo11n.yaml...) inside the package.
        import_ultralytics()
        from ultralytics.nn.tasks import yaml_model_load  # heavy: only for a yaml name not on disk

        try:
            yaml_model_load(text)
        except Exception as exc:  # noqa: BLE001
            raise GhostboxError(f"model '{text}': no such file and not an Ultralytics architecture yaml") from exc
        return ModelSource("yaml", Path(text), text)
    match = _NAME.match(path.name)
    if match is None or path.parent != Path("."):
        raise GhostboxError(f"model '{text}': file not found")
    name = match.group(1).lower() + ".pt"
    cached = weights_dir() / name
    if cached.is_file():
        return ModelSource("pt", cached, text)
    if not _online():
        raise GhostboxError(
            f"model '{text}' is not on disk and this machine is offline: download {name} from the "
            f"Ultralytics releases on a machine with internet, copy it here and pass its path "
            f"(or put it in {weights_dir()})"
        )
    return ModelSource("pt", _download(name), text)
