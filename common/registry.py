"""Named registries, and the plug-in groups through which domains and demos register themselves.

``common`` imports no domain package. A domain (vision, audio, recsys) or a demo announces itself
through a ``transferkit.*`` entry-point group in its distribution's metadata; :func:`load_plugins`
imports what a group lists, and importing a domain package registers its encoder loaders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

DOMAINS_GROUP = "transferkit.domains"
DEMOS_GROUP = "transferkit.demos"


class Registry(Generic[T]):
    """Lower-case names to objects; a second registration under one name raises.

    Example:
        >>> shapes = Registry("shape")
        >>> shapes.register("square", 4)
        4
        >>> shapes.get("circle")
        Traceback (most recent call last):
        ...
        ValueError: unknown shape 'circle'; choose one of square
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if not name or name != name.lower():
            raise ValueError(f"{self.kind} names are non-empty and lower-case, got {name!r}")
        if name in self._items:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._items[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(sorted(self._items)) or "(none registered)"
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {choices}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items


def plugins(group: str) -> dict[str, Callable]:
    """The objects an entry-point group names, loaded (which imports their packages); a plug-in
    whose own imports fail is logged and left out, so one broken domain does not take the others down."""
    from importlib.metadata import entry_points

    found = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            found[ep.name] = ep.load()
        except ImportError as err:
            log.warning("transferkit plug-in %s (%s) is unavailable: %s", ep.name, ep.value, err)
    return found


_loaded = False


def load_domains() -> None:
    """Import every installed domain package once, so that each registers what it provides."""
    global _loaded
    if not _loaded:
        _loaded = True
        plugins(DOMAINS_GROUP)
