"""Name -> constructor registries with clear errors for unknown names and bad arguments."""
from __future__ import annotations

import inspect

from .errors import ConfigError, suggest


class Registry:
    """A named collection of constructors (models, methods, datasets); ``check_kwargs`` checks keyword arguments."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, object] = {}

    def register(self, name: str):
        def deco(obj):
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj
        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self.names())

    def __getitem__(self, name: str):
        return self.get(name)

    def pop(self, name: str):
        """Unregister ``name`` and return what was registered under it."""
        self.get(name)
        return self._items.pop(name)

    def get(self, name: str):
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}.{suggest(name, self._items)} "
                              f"Known: {', '.join(self.names())}")
        return self._items[name]

    def accepted(self, name: str) -> set[str] | None:
        """Keyword names the constructor accepts (None when it takes **kwargs)."""
        sig = inspect.signature(self.get(name))
        if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        return {n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def check_kwargs(self, name: str, kwargs: dict, skip=()) -> None:
        ok = self.accepted(name)
        if ok is None:
            return
        for k in kwargs:
            if k not in ok and k not in skip:
                raise ConfigError(f"{self.kind} {name!r} has no argument {k!r}.{suggest(k, ok - set(skip))} "
                                  f"Valid: {', '.join(sorted(ok - set(skip)))}")
