"""Spike rates of ``OnlineLIF`` layers in any execution mode (SAF neurons emit accumulations, not
spikes, so output hooks would not see the spikes)."""
from __future__ import annotations

from collections import defaultdict

from torch import nn

from .neuron import OnlineLIF


class SpikeRateMonitor:
    """Context manager: ``rates()`` -> {layer name: spikes per neuron per step, in [0, 1]}.

    ``keep=True`` also keeps every step's spikes: ``spikes[name]`` is a list of [B, ...] tensors.
    """

    def __init__(self, model: nn.Module, keep: bool = False):
        self.neurons = {n: m for n, m in model.named_modules() if isinstance(m, OnlineLIF)}
        self.keep = keep
        self.spikes: dict[str, list] = defaultdict(list)
        self._sum = defaultdict(float)
        self._count = defaultdict(int)
        self._removers = []

    def __enter__(self):
        for name, m in self.neurons.items():
            def fn(module, s, name=name):
                self._sum[name] += float(s.sum().item())
                self._count[name] += s.numel()
                if self.keep:
                    self.spikes[name].append(s.clone())
            self._removers.append(m.observe(fn))
        return self

    def __exit__(self, *exc):
        for r in self._removers:
            r()
        self._removers.clear()
        return False

    def rates(self) -> dict[str, float]:
        return {n: self._sum[n] / self._count[n] for n in self.neurons if self._count[n]}
