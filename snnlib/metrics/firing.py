"""Firing rates per spiking layer, collected by forward hooks on ``MemoryModule``s."""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..neurons import MemoryModule
from .hooks import ModuleHooks, modules_of


class FiringRateMonitor(ModuleHooks):
    """Context manager: mean spike output of every ``MemoryModule`` (or of ``modules``).

    ``rates()`` returns {layer name: spikes per neuron per time step, in [0, 1]}.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module] | None = None):
        super().__init__(modules or modules_of(model, MemoryModule))
        self._sum = defaultdict(float)
        self._count = defaultdict(int)

    @property
    def modules(self) -> dict[str, nn.Module]:
        return self.watched

    def record(self, name, module, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(out, torch.Tensor):
            self._sum[name] += float((out.detach() != 0).sum().item())
            self._count[name] += out.numel()

    def rates(self) -> dict[str, float]:
        return {n: self._sum[n] / self._count[n] for n in self.watched if self._count[n]}


def mean_firing_rate(rates: dict[str, float]) -> float | None:
    return sum(rates.values()) / len(rates) if rates else None
