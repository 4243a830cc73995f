"""Training methods as plug-ins: one registry entry per method (bptt, ide, mpis, spide, ottt_a, ...).

A method wraps a model and knows how to take one training step on a batch and how to
predict; the trainer knows nothing about any paper. See ``base.Method``.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..registry import Registry

METHODS = Registry("method")
register_method = METHODS.register

def _import_families():
    """Import every module of this package, so that each registers its methods."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def build_method(name: str, model, *, T: int, **method_args):
    """Instantiate the method ``name`` around ``model`` (possibly DDP-wrapped)."""
    _import_families()
    METHODS.check_kwargs(name, method_args, skip=("model", "T"))
    return METHODS.get(name)(model, T=T, **method_args)


def method_names() -> list[str]:
    _import_families()
    return METHODS.names()
