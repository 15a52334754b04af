"""Command-line flags whose default and help come from a settings model: one home for every default.

A settings model (pydantic, a `Field(description=...)` on every field) holds each default. A flag
made here has no default of its own (None: not given); its help is the field's description and
default. `SettingsFlags.build()` lays the flags that were given over a config file's section and
validates the result, so the model fills in what neither says. A bad value is named by its flag
when it came from the command line, else by file, field and value.

Defaults of a model whose module is slow to import (torch) are read only when help is printed:
give the model as "module:Name" and the parser `formatter_class=SettingsHelpFormatter`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

from pydantic import BaseModel, ValidationError

from pipeline.config_files import first_error, merged
from pipeline.errors import GhostboxError

M = TypeVar("M", bound=BaseModel)
_FROM_MODEL = "\0"  # the help of a lazy flag without its own: the field's description, when printed
ModelRef = type | str | Callable[..., Any]  # a pydantic model, dataclass or function, or "module:Name" (lazy)


def _resolve(model: ModelRef) -> type | Callable[..., Any]:
    if isinstance(model, str):
        module, _, name = model.partition(":")
        return getattr(importlib.import_module(module), name)
    return model


def field_default(model: ModelRef, field: str) -> tuple[Any, str | None, bool]:
    """(default, description, required) of a pydantic model's or a dataclass's field, or a function's parameter."""
    cls = _resolve(model)
    if not isinstance(cls, type):
        parameter = inspect.signature(cls).parameters[field]
        required = parameter.default is inspect.Parameter.empty
        return (None if required else parameter.default), None, required
    if issubclass(cls, BaseModel):
        info = cls.model_fields[field]
        if info.is_required():
            return None, info.description, True
        return info.get_default(call_default_factory=True), info.description, False
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__}: not a pydantic model, dataclass or function")
    spec = {f.name: f for f in dataclasses.fields(cls)}[field]
    if spec.default is not dataclasses.MISSING:
        return spec.default, None, False
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory(), None, False
    return None, None, True


def _shown(value: Any) -> str:
    """A default as one would type it on the command line."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _default_note(default: Any) -> str:
    if default is None or default is False or default == {} or default == []:
        return ""
    return f" (default {_shown(default)})"


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse type/choices/action for a field's annotation (Optional and Literal understood)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return {"action": "store_true"}
    if typing.get_origin(annotation) is Literal:
        return {"choices": list(typing.get_args(annotation))}
    if annotation in (int, float):
        return {"type": annotation}
    return {}


def add_setting(parser: Any, *option_strings: str, model: ModelRef, field: str | tuple[str, ...],
                help: str | None = None, **kwargs: Any) -> argparse.Action:
    """A flag for `model.field` with no argparse default (None: not given) and the model's default in its help.

    The help is `help`, else the field's description; type, choices or store_true follow the field's
    annotation unless given. `model` may also be a function (its parameter's default). With a lazy
    model ("module:Name") give the type or action; `SettingsHelpFormatter` shows the description
    (unless `help`) and the default, of several fields joined by "x" when `field` is a tuple
    (then give `dest`).
    """
    lazy = isinstance(model, str)
    text = help or (_FROM_MODEL if lazy else None)
    if not lazy:
        if not isinstance(field, str):
            raise TypeError(f"{option_strings[0]}: several fields need a lazy model (\"module:Name\")")
        default, description, _ = field_default(model, field)
        text = (help or description or "") + _default_note(default)
        if isinstance(model, type) and issubclass(model, BaseModel):
            for key, value in _flag_kwargs(model.model_fields[field].annotation).items():
                kwargs.setdefault(key, value)
    kwargs.setdefault("dest", field)
    if kwargs.get("action") is None and "choices" not in kwargs:
        kwargs.setdefault("metavar", option_strings[0].lstrip("-").replace("-", "_").upper())
    action = parser.add_argument(*option_strings, default=None, help=(text or "").replace("%", "%%"), **kwargs)
    if lazy:
        action.lazy_default = (model, field)
    return action


@dataclass(frozen=True)
class _Flag:
    option: str  # as errors name it: "--max-iou"
    dest: str
    path: tuple[str, ...]  # where the value goes in the settings mapping


class SettingsFlags:
    """The flags of one command that set fields of one settings mapping (nested models by path)."""

    def __init__(self, dest: str) -> None:
        self.dest = dest  # the namespace attribute this object is stored under
        self._flags: list[_Flag] = []

    def attach(self, parser: argparse.ArgumentParser) -> None:
        parser.set_defaults(**{self.dest: self})

    def add(self, parser: Any, *option_strings: str, model: ModelRef, field: str,
            path: tuple[str, ...] | None = None, **kwargs: Any) -> argparse.Action:
        """`add_setting`, the value going to `path` (default: the field's name) of the settings."""
        kwargs.setdefault("dest", field if path is None else "_".join(path))
        action = add_setting(parser, *option_strings, model=model, field=field, **kwargs)
        self._flags.append(_Flag(option_strings[0], action.dest, path or (field,)))
        return action

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """The flags given on the command line, as a (nested) mapping of settings."""
        data: dict[str, Any] = {}
        for flag in self._flags:
            value = getattr(args, flag.dest, None)
            if value is not None:
                _put(data, flag.path, value)
        return data

    def build(self, model: type[M], args: argparse.Namespace, file_data: dict[str, Any] | None = None,
              config: str | None = None, section: str | None = None,
              extra: dict[str, Any] | None = None) -> M:
        """`model` from the config file's section, the given flags over it, and `extra` over both."""
        data = merged(file_data or {}, self.given(args))
        if extra:
            data = merged(data, extra)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            loc, message, value = first_error(exc)
            flag = next((f for f in self._flags if f.path == tuple(str(p) for p in loc[:len(f.path)])), None)
            if flag is not None and (config is None or getattr(args, flag.dest, None) is not None):
                raise GhostboxError(f"{flag.option}: {message}{value}") from exc
            where = f"config '{config}'" if config else "command line"
            field = ".".join(str(p) for p in ((section,) if section else ()) + loc) or "(top level)"
            raise GhostboxError(f"{where}: field '{field}': {message}{value}") from exc


class SettingsHelpFormatter(argparse.HelpFormatter):
    """Help that shows the defaults of flags whose model is imported only now (see the module doc)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        lazy = getattr(action, "lazy_default", None)
        if lazy is not None and text is not None:
            model, fields = lazy
            if isinstance(fields, tuple):  # one flag for several fields, e.g. --size WxH
                text += f" (default {'x'.join(str(field_default(model, f)[0]) for f in fields)})"
            else:
                default, description, _ = field_default(model, fields)
                if text == _FROM_MODEL:
                    text = (description or "").replace("%", "%%")
                text += _default_note(default).replace("%", "%%")
        return text


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value

