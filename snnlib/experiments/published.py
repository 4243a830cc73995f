"""Published numbers, kept as data in ``configs/published/*.yaml`` (one file per paper family),
each with its source and reliability tag."""
from __future__ import annotations

import functools

from ..errors import suggest
from ..paths import ROOT
from .config import load_yaml


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    out: dict = {}
    for p in sorted((ROOT / "configs" / "published").glob("*.yaml")):
        for k, v in load_yaml(p).items():
            if k in out:
                raise KeyError(f"published number {k!r} is defined twice (again in {p.name})")
            out[k] = v
    return out


def published(key: str) -> dict:
    """One published number: ``{"value", "unit", "source", "tag", "note"}``. Keys look like
    ``ide.fmnist.f400.if.T5``; see configs/published/."""
    t = _table()
    if key not in t:
        raise KeyError(f"no published number {key!r}.{suggest(key, t)}")
    return t[key]
