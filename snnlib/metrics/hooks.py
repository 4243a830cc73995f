"""The one way snnlib watches a forward pass: a context manager that hooks selected modules on
entry and removes every hook on exit (also when the body raises).

Subclasses say what to record with ``record(name, module, inputs, output)``; a subclass whose
modules report through another channel than forward hooks overrides ``attach``.
"""
from __future__ import annotations

from typing import Callable

from torch import nn


def modules_of(model: nn.Module, types) -> dict[str, nn.Module]:
    """{qualified name: module} of every submodule of ``model`` (itself included) that is a ``types``."""
    return {name: m for name, m in model.named_modules() if isinstance(m, types)}


class ModuleHooks:
    """Context manager hooking every module of ``watched`` ({name: module}) while it is open."""

    def __init__(self, watched: dict[str, nn.Module]):
        self.watched = dict(watched)
        self._removers: list[Callable[[], None]] = []

    def record(self, name: str, module: nn.Module, inputs: tuple, output) -> None:
        """Called after each forward of a watched module (``inputs``: its positional arguments)."""
        raise NotImplementedError

    def attach(self, name: str, module: nn.Module) -> Callable[[], None]:
        """Start watching ``module``; returns the function that stops it. Default: a forward hook."""
        def hook(mod, inputs, output):
            self.record(name, mod, inputs, output)
        return module.register_forward_hook(hook).remove

    def __enter__(self):
        try:
            for name, module in self.watched.items():
                self._removers.append(self.attach(name, module))
        except BaseException:
            self._detach()
            raise
        return self

    def __exit__(self, *exc):
        self._detach()
        return False

    def _detach(self) -> None:
        for remove in self._removers:
            remove()
        self._removers.clear()
