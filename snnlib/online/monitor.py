"""Spike rates of ``OnlineLIF`` layers in any execution mode (SAF neurons emit accumulations, not
spikes, so output hooks would not see the spikes: the monitor listens through ``OnlineLIF.observe``)."""
from __future__ import annotations

from collections import defaultdict

from torch import nn

from ..metrics.hooks import ModuleHooks, modules_of
from .neuron import OnlineLIF


class SpikeRateMonitor(ModuleHooks):
    """Context manager: ``rates()`` -> {layer name: spikes per neuron per step, in [0, 1]}.

    ``keep=True`` also keeps every step's spikes: ``spikes[name]`` is a list of [B, ...] tensors.
    """

    def __init__(self, model: nn.Module, keep: bool = False):
        super().__init__(modules_of(model, OnlineLIF))
        self.keep = keep
        self.spikes: dict[str, list] = defaultdict(list)
        self._sum = defaultdict(float)
        self._count = defaultdict(int)

    @property
    def neurons(self) -> dict[str, OnlineLIF]:
        return self.watched

    def attach(self, name, module):
        return module.observe(lambda mod, spikes: self.record(name, mod, (), spikes))

    def record(self, name, module, inputs, spikes):
        self._sum[name] += float(spikes.sum().item())
        self._count[name] += spikes.numel()
        if self.keep:
            self.spikes[name].append(spikes.clone())

    def rates(self) -> dict[str, float]:
        return {n: self._sum[n] / self._count[n] for n in self.watched if self._count[n]}
