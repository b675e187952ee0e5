"""One small registry per kind (timm style): ``register`` decorator, ``create``, ``list``."""
from __future__ import annotations

import difflib
from types import MappingProxyType
from typing import Any, Callable, Mapping


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable:
        def deco(fn: Callable) -> Callable:
            key = name or fn.__name__
            if key in self._fns:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            self._fns[key] = fn
            return fn
        return deco

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._fns:
            close = difflib.get_close_matches(name, list(self._fns), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown {self.kind} {name!r}{hint}; available: {self.list()}")
        return self._fns[name]

    def create(self, name: str, **cfg: Any) -> Any:
        return self.get(name)(**cfg)

    def list(self) -> list[str]:
        return sorted(self._fns)

    @property
    def members(self) -> Mapping[str, Callable[..., Any]]:
        """name -> registered callable, read-only."""
        return MappingProxyType(self._fns)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin or a test that registered a member for a while)."""
        self._fns.pop(name)

    def __contains__(self, name: str) -> bool:
        return name in self._fns
