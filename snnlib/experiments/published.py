"""Published numbers, kept as data in ``configs/published.yaml`` with source and reliability tag."""
from __future__ import annotations

import functools

from ..paths import ROOT
from .config import load_yaml


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    return load_yaml(ROOT / "configs" / "published.yaml")


def published(key: str) -> dict:
    """One published number: ``{"value", "unit", "source", "tag", "note"}``. Keys look like
    ``ide.fmnist.f400.if.T5``; see configs/published.yaml."""
    t = _table()
    if key not in t:
        from .config import suggest
        raise KeyError(f"no published number {key!r}.{suggest(key, t)}")
    return t[key]
