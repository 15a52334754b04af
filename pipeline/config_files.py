"""Read YAML config files into pydantic models, with errors that name file, field and value."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

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


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid over `base`, nested mappings merged key by key (a config file, then the flags given)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def section(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """The mapping under `name` (empty when absent); anything else there is an error naming it."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GhostboxError(f"{where}: field '{name}': expected a mapping (got {value!r})")
    return value


def only_sections(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """Refuse top-level keys other than `allowed`, naming the first one and its value."""
    for key, value in data.items():
        if key not in allowed:
            raise GhostboxError(f"{where}: field '{key}': not a section of this config; expected "
                                f"{', '.join(allowed)} (got {value!r})")


def first_error(exc: ValidationError) -> tuple[tuple[str | int, ...], str, str]:
    """The first problem of a validation error: (field path, message, ' (got VALUE)' or '')."""
    first = exc.errors()[0]
    message = first["msg"]
    if first["type"] == "value_error":  # our validators' own words, without pydantic's "Value error, "
        message = str(first.get("ctx", {}).get("error", message))
    value = first.get("input")
    shown = "" if isinstance(value, dict) or first["type"] == "missing" else f" (got {value!r})"
    return tuple(first["loc"]), message, shown


def validate(model: type[M], data: dict[str, Any], where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        loc, message, shown = first_error(exc)
        field = ".".join(str(p) for p in loc) or "(top level)"
        raise GhostboxError(f"{where}: field '{field}': {message}{shown}") from exc


def defaults_yaml(sections: dict[str, type[BaseModel] | BaseModel], notes: dict[str, str] | None = None,
                  exclude: tuple[str, ...] = ()) -> str:
    """Settings as commented YAML that `read_yaml` + `validate` read back: each field's description
    above it, required fields without a value commented out.

    `sections`: top-level key -> a settings model (its defaults are written) or instance (its
    values), or "" -> settings written at the top level. `notes`: dotted field path -> a comment
    that replaces the field's description (e.g. what the command fills in when it is left out);
    `exclude`: dotted field paths left out (set elsewhere).
    """
    lines: list[str] = []
    for name, settings in sections.items():
        if name:
            lines.append(f"{name}:")
        _emit(settings, "  " if name else "", (name,) if name else (), notes or {}, exclude, lines)
    return "\n".join(lines) + "\n"


def _emit(settings: type[BaseModel] | BaseModel, pad: str, path: tuple[str, ...], notes: dict[str, str],
          exclude: tuple[str, ...], lines: list[str]) -> None:
    cls = settings if isinstance(settings, type) else type(settings)
    for name, info in cls.model_fields.items():
        key = ".".join((*path, name))
        if key in exclude:
            continue
        comment = notes.get(key, info.description)
        if comment:
            lines.extend(f"{pad}# {line}" for line in textwrap.wrap(comment, max(40, 96 - len(pad))))
        if isinstance(settings, BaseModel):
            value = getattr(settings, name)
        elif info.is_required():
            lines.append(f"{pad}# {name}:" + ("" if key in notes else "  (required)"))
            continue
        else:
            value = info.get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _emit(value, pad + "  ", (*path, name), notes, exclude, lines)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            lines.append(f"{pad}{name}:")
            for item in value:
                lines.append(f"{pad}  -")
                _emit(item, pad + "    ", (*path, name), notes, exclude, lines)
        else:
            lines.append(f"{pad}{name}: {_flow(to_jsonable_python(value))}")


def _flow(value: Any) -> str:
    """One value in YAML flow style, on one line."""
    return yaml.safe_dump([value], default_flow_style=True, allow_unicode=True, width=10_000).strip()[1:-1]
