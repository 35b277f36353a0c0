"""Named registries for the extension points (pruning methods, layer types, head extractors).

mmengine-style: every entry has a name, a second registration under a taken name is refused, and a
failed lookup names what is registered. Pure Python, so the core can own the method registry.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """``name -> entry`` for one extension point (``kind`` says which in error messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; ValueError when the name is taken (nothing silently wins)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name {name!r}: expected a non-empty string")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r}); "
                             f"registered: {', '.join(self._entries)}")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        """The entry named ``name``; KeyError listing the registered names when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}, expected one of: {', '.join(self._entries)}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order."""
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
