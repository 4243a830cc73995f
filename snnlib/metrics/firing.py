"""Firing rates per spiking layer, collected by forward hooks on ``MemoryModule``s."""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..neurons import MemoryModule


class FiringRateMonitor:
    """Context manager: mean spike output of every ``MemoryModule`` (or of ``modules``).

    ``rates()`` returns {layer name: spikes per neuron per time step, in [0, 1]}.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module] | None = None):
        self.modules = modules or {n: m for n, m in model.named_modules() if isinstance(m, MemoryModule)}
        self._sum = defaultdict(float)
        self._count = defaultdict(int)
        self._handles = []

    def _hook(self, name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor):
                self._sum[name] += float((out.detach() != 0).sum().item())
                self._count[name] += out.numel()
        return hook

    def __enter__(self):
        for n, m in self.modules.items():
            self._handles.append(m.register_forward_hook(self._hook(n)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def rates(self) -> dict[str, float]:
        return {n: self._sum[n] / self._count[n] for n in self.modules if self._count[n]}


def mean_firing_rate(rates: dict[str, float]) -> float | None:
    return sum(rates.values()) / len(rates) if rates else None
