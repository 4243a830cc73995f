"""Surrogate gradients for the Heaviside spike function.

Every surrogate is an ``nn.Module`` holding its hyperparameters. Its forward is the
Heaviside step ``H(z) = 1[z >= 0]``; its backward is the derivative of a smooth
``primitive(z)`` (a sigmoid-like function that tends to ``H``). Tests check each
hand-written ``derivative`` against autograd of ``primitive``.

Shapes: any; the output has the input's shape and dtype.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def heaviside(z: torch.Tensor) -> torch.Tensor:
    """H(z) = 1 where z >= 0, else 0 (same dtype as z)."""
    return (z >= 0).to(z.dtype)


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, surrogate):
        ctx.save_for_backward(z)
        ctx.surrogate = surrogate
        return heaviside(z)

    @staticmethod
    def backward(ctx, grad_out):
        (z,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(z), None


class Surrogate(nn.Module):
    """Base class: Heaviside forward, ``derivative(z)`` backward.

    Subclasses implement ``primitive`` (the smooth function) and ``derivative``
    (its hand-written derivative, used in the backward pass).
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _SpikeFn.apply(z, self)

    def primitive(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())

    def hparams(self) -> dict:
        return {}


class Sigmoid(Surrogate):
    """primitive = sigmoid(alpha z); derivative = alpha s (1 - s). OTTT uses alpha = 4."""

    def __init__(self, alpha: float = 4.0):
        super().__init__()
        self.alpha = float(alpha)

    def hparams(self):
        return {"alpha": self.alpha}

    def primitive(self, z):
        return torch.sigmoid(self.alpha * z)

    def derivative(self, z):
        s = torch.sigmoid(self.alpha * z)
        return self.alpha * s * (1.0 - s)


class ATan(Surrogate):
    """primitive = atan(pi/2 alpha z)/pi + 1/2; derivative = alpha/2 / (1 + (pi/2 alpha z)^2)."""

    def __init__(self, alpha: float = 2.0):
        super().__init__()
        self.alpha = float(alpha)

    def hparams(self):
        return {"alpha": self.alpha}

    def primitive(self, z):
        return torch.atan(math.pi / 2 * self.alpha * z) / math.pi + 0.5

    def derivative(self, z):
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * z) ** 2)


class Rectangle(Surrogate):
    """primitive = clamp(z/width + 1/2, 0, 1); derivative = 1/width on |z| < width/2.

    With ``width = 1`` and the threshold at 0.5 this is the minimum-latency paper's
    rectangle on u in (0, 1).
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"Rectangle surrogate: width must be > 0, got {width}")
        self.width = float(width)

    def hparams(self):
        return {"width": self.width}

    def primitive(self, z):
        return torch.clamp(z / self.width + 0.5, 0.0, 1.0)

    def derivative(self, z):
        return (z.abs() < self.width / 2).to(z.dtype) / self.width


class Triangle(Surrogate):
    """primitive = piecewise quadratic; derivative = max(0, 1 - |z|/width)/width."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"Triangle surrogate: width must be > 0, got {width}")
        self.width = float(width)

    def hparams(self):
        return {"width": self.width}

    def primitive(self, z):
        w = self.width
        x = torch.clamp(z / w, -1.0, 1.0)
        # integral of (1 - |x|) from -1, normalised so it goes 0 -> 1
        return torch.where(x < 0, 0.5 * (1 + x) ** 2, 1 - 0.5 * (1 - x) ** 2)

    def derivative(self, z):
        return torch.clamp(1 - z.abs() / self.width, min=0.0) / self.width


SURROGATES = {"sigmoid": Sigmoid, "atan": ATan, "rectangle": Rectangle, "triangle": Triangle}


def get_surrogate(spec) -> Surrogate:
    """Build a surrogate from a name, a ``{"name": ..., **hparams}`` dict, or pass one through."""
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
    else:
        raise TypeError(f"surrogate must be a name, a dict or a Surrogate, got {type(spec).__name__}")
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
    return SURROGATES[name](**kwargs)
