"""Memoised measurements: compute once per (name, params, code version), store as JSON (the code
version is left out where the results folder keeps records across versions: the full scale).

Notebooks wrap every costly measurement (gradient checks, memory sweeps, timings) in
``memo`` so that a re-run or a resumed ``make reproduce`` reuses finished results.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..paths import results_dir
from .config import canonical_json
from .io import read_json, write_json
from .provenance import code_version, key_code_version


def memo_path(name: str, params: dict | None = None) -> Path:
    key = hashlib.sha256(canonical_json({"name": name, "params": params or {}, "code": key_code_version()}).encode())
    return results_dir() / "cache" / f"{name}-{key.hexdigest()[:12]}.json"


def memo(name: str, params: dict | None, fn, *, recompute: bool = False):
    """Return ``fn()`` (a JSON-able value), cached under ``results/cache``."""
    path = memo_path(name, params)
    if path.exists() and not recompute:
        return read_json(path)["value"]
    value = fn()
    write_json(path, {"name": name, "params": params, "code_version": code_version(), "value": value})
    return read_json(path)["value"]
