"""Scorer registry: lowercase method name -> Scorer class.

    @register
    class Energy(Scorer):
        name = "energy"

    create("energy", temperature=2.0)   # a new, unfitted scorer
    names()                             # ['abet', 'bam', 'energy', ...]

Dependencies point one way: the score modules import this one (to register, and fusion to
build its members by name); this module never imports them. The built-ins are registered
because the package `pipeline.filter`, which Python runs before any of its modules, imports
`pipeline.filter.scores`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pipeline.errors import GhostboxError
from pipeline.filter.scorer import Scorer

_SCORERS: dict[str, type[Scorer]] = {}
S = TypeVar("S", bound=type[Scorer])


def register(cls: S) -> S:
    """Class decorator: make a Scorer subclass available under `cls.name`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"{cls.__name__}: a registered scorer needs a lowercase `name`, got {name!r}")
    if name in _SCORERS and _SCORERS[name] is not cls:
        raise ValueError(f"scorer name {name!r} already registered by {_SCORERS[name].__name__}")
    _SCORERS[name] = cls
    return cls


def names() -> list[str]:
    return sorted(_SCORERS)


def scorer_class(name: str) -> type[Scorer]:
    try:
        return _SCORERS[name]
    except KeyError:
        raise GhostboxError(f"unknown OOD method {name!r}; known: {', '.join(sorted(_SCORERS))}") from None


def create(name: str, **params: Any) -> Scorer:
    """A new, unfitted scorer; unknown names or parameters raise GhostboxError."""
    cls = scorer_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise GhostboxError(f"{name}: bad parameters {sorted(params)} ({exc})") from exc
