"""Projection functions P(a, b) of the minimum-latency SNN: how a carried membrane enters the next window.

A neuron of window k charges ``u_k = leak * P(a, b) + I_k`` where ``a`` and ``b`` are membranes
carried from the previous window (or from the previous block). With threshold 0.5 and leak 0.4
it fires when ``I_k > 0.5 - 0.4 P``, so P acts as a data-dependent threshold [derived].

- ``sin``:  P(a, b) = 2 sin(pi/4 * a * cos(pi/4 * b)), bounded to [-2, 2]; the released
  CIFAR-10 CNN and the RNN use it [ref-code].
- ``avg``:  P(a, b) = (a + b) / 2; the released CIFAR-100 CNN uses it [ref-code].
- ``none``: P(a, b) = b, the second (own) state passed on unchanged: the "no projection" ablation.

All are elementwise, P(0, 0) = 0, any shapes that broadcast.
"""
from __future__ import annotations

import math

import torch

QUARTER_PI = math.pi / 4


def p_sin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2 sin(pi/4 * a * cos(pi/4 * b)), in [-2, 2]."""
    return 2.0 * torch.sin(QUARTER_PI * a * torch.cos(QUARTER_PI * b))


def p_avg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a + b) / 2."""
    return 0.5 * (a + b)


def p_none(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """b (the state passed without projection)."""
    return b


PROJECTIONS = {"sin": p_sin, "avg": p_avg, "none": p_none}


def get_projection(name: str):
    """The projection function called ``name`` (one of 'sin', 'avg', 'none')."""
    if name not in PROJECTIONS:
        raise ValueError(f"unknown projection {name!r}; choose one of {sorted(PROJECTIONS)}")
    return PROJECTIONS[name]
