"""Atomic writes: a file is either absent or complete, never half written. Reads name the file
when it cannot be parsed (:class:`CorruptFile`)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch


class CorruptFile(ValueError):
    """A results file (JSON record, checkpoint) that exists but cannot be read; the message names it."""


def _replace_atomically(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jsonable(obj):
    """Convert tensors, numpy values and non-finite floats into JSON-safe values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.item() if obj.numel() == 1 else obj.tolist())
    if hasattr(obj, "item") and hasattr(obj, "dtype"):   # numpy scalar
        return jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if isinstance(obj, os.PathLike):
        return str(obj)
    return obj


def write_json(path, data) -> None:
    text = json.dumps(jsonable(data), indent=1, sort_keys=False)
    _replace_atomically(Path(path), lambda f: f.write(text.encode()))


def read_json(path):
    """The JSON value in ``path``; :class:`CorruptFile` naming the file when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise CorruptFile(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): "
                          "it is truncated or corrupted; delete it and the step that wrote it runs again") from None
    except UnicodeDecodeError as err:
        raise CorruptFile(f"{path} is not a UTF-8 JSON file ({err.reason} at byte {err.start}); delete it and "
                          "the step that wrote it runs again") from None


def write_text(path, text: str) -> None:
    _replace_atomically(Path(path), lambda f: f.write(text.encode()))


def save_torch(path, obj) -> None:
    """``torch.save`` atomically. Load back with ``load_torch`` (``weights_only=True``)."""
    _replace_atomically(Path(path), lambda f: torch.save(obj, f))


def load_torch(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; :class:`CorruptFile` naming ``path`` when the file exists
    but is truncated, corrupted or holds more than tensors and plain containers."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... by failure
        why = next((ln.strip() for ln in str(err).splitlines() if "Unsupported global" in ln), type(err).__name__)
        raise CorruptFile(f"{path} cannot be read as a checkpoint ({why}): it is truncated, "
                          "corrupted or not a snnlib checkpoint. Delete it, or start the run over "
                          "(--no-resume, resume=False)") from None
