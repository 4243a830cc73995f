"""Models built from config by name. Each paper family registers its models here.

``build_model({"name": ..., **kwargs}, info)`` fills ``in_channels``, ``num_classes`` and
``input_size`` from the dataset info when the constructor takes them and the config does not.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..registry import Registry

MODELS = Registry("model")
register_model = MODELS.register

AUTO_KEYS = ("in_channels", "num_classes", "input_size")


def build_model(spec: dict, info: dict | None = None):
    """Build a model from ``{"name": ..., **kwargs}``; ``info`` is ``snnlib.data.dataset_info(...)``."""
    _import_families()
    spec = dict(spec)
    name = spec.pop("name")
    ctor = MODELS.get(name)
    accepted = MODELS.accepted(name)
    auto = {}
    if info is not None:
        size = info.get("size")
        values = {"in_channels": info.get("channels"), "num_classes": info.get("num_classes"),
                  "input_size": tuple(size) if size is not None else None}
        for k in AUTO_KEYS:
            if k not in spec and values[k] is not None and (accepted is None or k in accepted):
                auto[k] = values[k]
    MODELS.check_kwargs(name, spec)
    return ctor(**spec, **auto)


def _import_families():
    """Import every module of this package, so that each family registers its models."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def model_names() -> list[str]:
    _import_families()
    return MODELS.names()
