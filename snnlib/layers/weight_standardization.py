"""Scaled weight standardisation (sWS), OTTT's replacement for BatchNorm.

For every output unit the weight row is centred and scaled by its fan-in:

    W_hat = gain * (W - mean(W)) / sqrt(var(W) * fan_in + eps)

with mean and (unbiased) variance over the fan-in axes and a learnable ``gain`` (one per
output unit, initialised to 1). A standardised layer therefore keeps its pre-activation
variance near the input variance whatever the raw weights do; nothing is kept across
batches, so it has no train/eval difference and no state that would depend on T.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def standardize(weight: torch.Tensor, gain: torch.Tensor | None, eps: float) -> torch.Tensor:
    """sWS of a weight [out, *fan_in_dims]; ``gain`` broadcastable to it (or None)."""
    dims = tuple(range(1, weight.dim()))
    fan_in = math.prod(weight.shape[1:])
    mean = weight.mean(dim=dims, keepdim=True)
    var = weight.var(dim=dims, keepdim=True)          # unbiased, as in the reference code
    w = (weight - mean) / torch.sqrt(var * fan_in + eps)
    return w if gain is None else w * gain


class ScaledWSConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose effective weight is the sWS of ``weight`` (see module doc).

    Shapes as ``nn.Conv2d``: [B, C_in, H, W] -> [B, C_out, H', W']. ``gain`` [C_out, 1, 1, 1].
    """

    def __init__(self, *args, gain: bool = True, eps: float = 1e-4, **kwargs):
        super().__init__(*args, **kwargs)
        if eps <= 0:
            raise ValueError(f"ScaledWSConv2d: eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1)) if gain else None

    def effective_weight(self) -> torch.Tensor:
        return standardize(self.weight, self.gain, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledWSLinear(nn.Linear):
    """``nn.Linear`` whose effective weight is the sWS of ``weight``. ``gain`` [out, 1]."""

    def __init__(self, *args, gain: bool = True, eps: float = 1e-4, **kwargs):
        super().__init__(*args, **kwargs)
        if eps <= 0:
            raise ValueError(f"ScaledWSLinear: eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.gain = nn.Parameter(torch.ones(self.out_features, 1)) if gain else None

    def effective_weight(self) -> torch.Tensor:
        return standardize(self.weight, self.gain, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a Conv2d/Linear actually applies (the standardised one for sWS layers)."""
    fn = getattr(module, "effective_weight", None)
    return fn() if fn is not None else module.weight
