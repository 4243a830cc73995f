"""BPTT with surrogate gradients: the baseline every paper compares against."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..data.loader import time_sequence
from ..metrics.accuracy import correct
from ..neurons import reset_net
from . import register_method
from .base import Method

LOSSES = ("ce_mean", "per_step")


def per_step_loss(out: torch.Tensor, y: torch.Tensor, mse_weight: float = 0.0) -> torch.Tensor:
    """OTTT's loss averaged over steps: ((1 - g) CE(o_t, y) + g MSE(o_t, onehot(y))) / T. out [T, B, K]."""
    T, B, K = out.shape
    flat = out.reshape(T * B, K)
    yy = y.repeat(T)
    loss = (1 - mse_weight) * F.cross_entropy(flat, yy)
    if mse_weight:
        loss = loss + mse_weight * F.mse_loss(flat, F.one_hot(yy, K).to(flat.dtype))
    return loss


@register_method("bptt")
class BPTT(Method):
    """Backpropagation through time over the unrolled T steps.

    Args:
        loss: 'ce_mean' (cross-entropy of the time-averaged output) or 'per_step'
            (per-step CE mixed with MSE by ``mse_weight``, OTTT's loss).
    """

    name = "bptt"

    def __init__(self, model, *, T: int, loss: str = "ce_mean", mse_weight: float = 0.0):
        super().__init__(model, T=T)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
        self.loss, self.mse_weight = loss, float(mse_weight)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(time_sequence(x, self.T))

    def logits(self, x):
        return self.outputs(x).mean(0)

    def train_step(self, x, y, optimizer):
        optimizer.zero_grad(set_to_none=True)
        out = self.outputs(x)
        if self.loss == "ce_mean":
            loss = F.cross_entropy(out.mean(0), y)
        else:
            loss = per_step_loss(out, y, self.mse_weight)
        loss.backward()
        optimizer.step()
        reset_net(self.net)
        return {"loss": loss.item(), "correct": correct(out.detach().mean(0), y)}
