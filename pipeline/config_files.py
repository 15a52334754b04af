"""Read YAML config files into pydantic models, with errors that name file, field and value."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import GhostboxError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GhostboxError(f"config '{path}': file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise GhostboxError(f"config '{path}': not valid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GhostboxError(f"config '{path}': expected a mapping at the top level, got {type(data).__name__}")
    return data


def validate(model: type[M], data: dict[str, Any], where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        value = first.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        raise GhostboxError(f"{where}: field '{field}': {first['msg']}{shown}") from exc
