"""Dropout whose mask is drawn once per batch and shared by every time step."""
from __future__ import annotations

import torch

from ..neurons import MemoryModule


class SharedDropout(MemoryModule):
    """Variational dropout over time (IDE, SPIDE, OTTT's DVS models).

    The first call after ``reset()`` draws a Bernoulli(1 - p) mask scaled by 1/(1 - p);
    every later call reuses it, so all T steps (and any rate map evaluated on the same batch)
    see the same dropped units. Identity in eval mode. Works in single-step ('s', input
    [B, ...]) and multi-step ('m', input [T, B, ...], one mask over T) modes.
    """

    def __init__(self, p: float = 0.2, step_mode: str = "s"):
        super().__init__(step_mode)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.register_memory("mask", None)

    def make_mask(self, like: torch.Tensor) -> torch.Tensor:
        if self.mask is None or self.mask.shape != like.shape:
            # drawn in row-major order whatever like's memory layout, then stored in like's layout
            p = torch.full(like.shape, 1.0 - self.p, dtype=like.dtype, device=like.device)
            self.mask = torch.empty_like(like).copy_(torch.bernoulli(p).div_(1.0 - self.p))
        return self.mask

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * self.make_mask(x)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x_seq
        return x_seq * self.make_mask(x_seq[0])

    def extra_repr(self) -> str:
        return f"p={self.p}, step_mode={self.step_mode}"
