"""Feed-forward SNNs used as BPTT baselines: an FC net and a small conv net.

All take a time-first input [T, B, ...] and return per-step logits [T, B, num_classes].
Stateless layers run on folded batches; neurons run in multi-step mode. ``chunk`` ('auto' by
default): the sequence goes through the network in time chunks sized to the CPU cache, a chunk
through every layer before the next (``neurons.chunked``; exact; a network with BatchNorm in
training mode runs whole). None runs all T steps through each layer at once ([T*B, ...]).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..neurons import LIFNode, SeqToBatch, chunked_forward
from . import register_model


def make_neuron(spec: dict | None = None, step_mode: str = "m") -> LIFNode:
    """A ``LIFNode`` from a dict of its arguments (leak, v_th, reset, u_rest, surrogate, ...)."""
    spec = dict(spec or {})
    return LIFNode(step_mode=step_mode, **spec)


@register_model("fc_snn")
class FCSNN(nn.Module):
    """Flatten -> [Linear -> LIF] x len(hidden) -> Linear. Input [T, B, C, H, W] or [T, B, D]."""

    def __init__(self, in_channels: int = 1, input_size=(28, 28), num_classes: int = 10,
                 hidden=(400,), neuron: dict | None = None, chunk="auto"):
        super().__init__()
        self.chunk = chunk
        d = in_channels * math.prod(input_size)
        layers = []
        for h in hidden:
            layers += [SeqToBatch(nn.Linear(d, h)), make_neuron(neuron)]
            d = h
        self.features = nn.Sequential(*layers)
        self.head = SeqToBatch(nn.Linear(d, num_classes))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return chunked_forward(self, self._steps, x_seq.flatten(2), self.chunk)

    def _steps(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_seq))


@register_model("conv_snn")
class ConvSNN(nn.Module):
    """[Conv3x3 -> BN -> LIF -> Pool2] x len(channels) -> Flatten -> Linear.

    The Fashion-MNIST shape of the benchmarks: channels (32, 64), 28x28 -> 7x7x64 -> 10.
    ``bn=False`` drops BatchNorm (the frameworks benchmark); ``pool`` is 'avg' or 'max'.
    ``channels_last`` stores the conv weights channels-last, so activations stay NHWC on CPU
    (faster convolutions and pooling; same values up to rounding).
    """

    def __init__(self, in_channels: int = 1, input_size=(28, 28), num_classes: int = 10,
                 channels=(32, 64), bn: bool = True, pool: str = "avg", neuron: dict | None = None,
                 first_layer_gain: float = 1.0, channels_last: bool = True, chunk="auto"):
        super().__init__()
        self.chunk = chunk
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        Pool = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        layers, c = [], in_channels
        h, w = input_size
        for i, co in enumerate(channels):
            conv = nn.Conv2d(c, co, 3, padding=1, bias=not bn)
            if i == 0 and first_layer_gain != 1.0:
                with torch.no_grad():
                    conv.weight.mul_(first_layer_gain)
            body = [conv] + ([nn.BatchNorm2d(co)] if bn else [])
            layers += [SeqToBatch(*body), make_neuron(neuron), SeqToBatch(Pool(2))]
            c, h, w = co, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.head = SeqToBatch(nn.Flatten(), nn.Linear(c * h * w, num_classes))
        if channels_last:
            self.features.to(memory_format=torch.channels_last)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() != 5:
            raise ValueError(f"ConvSNN expects [T, B, C, H, W], got shape {tuple(x_seq.shape)}")
        return chunked_forward(self, self._steps, x_seq, self.chunk)

    def _steps(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_seq))
