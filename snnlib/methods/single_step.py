"""Single-time-step training (the minimum-latency SNN): one forward pass per sample, plain backprop.

The network (``min_latency``) does its intra-step recurrence over windows itself, so the method
is ordinary supervised training at T = 1. ``T > 1`` averages the logits of T independent passes
(fresh stochastic encodings each): the same backbone run for T steps, as a rate-coded baseline.

A finished run reloaded, evaluated under several seeds and its energy counted:
``snnlib.studies.measure`` (``load_trained``, ``evaluate_seeds``, ``energy_of_run``).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..metrics.accuracy import correct
from ..metrics.firing import FiringRateMonitor
from ..neurons import reset_net
from . import register_method
from .base import Method


@register_method("single_step")
class SingleStep(Method):
    """Cross-entropy (optionally label-smoothed) on the logits of one pass; gradient-norm clipping.

    Args:
        T: passes averaged per sample (1 = the paper's setting).
        label_smoothing: in [0, 1) (the reference uses 0.1).
        grad_clip: max global gradient norm, or None (the reference uses 20).
    """

    name = "single_step"

    def __init__(self, model, *, T: int = 1, label_smoothing: float = 0.0, grad_clip: float | None = None):
        super().__init__(model, T=T)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be a positive norm or None, got {grad_clip}")
        self.label_smoothing, self.grad_clip = float(label_smoothing), grad_clip

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"single_step expects static images [B, C, H, W], got shape {tuple(x.shape)}")
        out = self.model(x)
        for _ in range(self.T - 1):
            out = out + self.model(x)
        return out / self.T

    def train_step(self, x, y, optimizer):
        optimizer.zero_grad(set_to_none=True)
        out = self.logits(x)
        loss = F.cross_entropy(out, y, label_smoothing=self.label_smoothing)
        loss.backward()
        stats = {}
        if self.grad_clip is not None:
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
        optimizer.step()
        reset_net(self.net)
        return {"loss": loss.item(), "correct": correct(out.detach(), y), **stats}

    def monitor(self):
        """Firing rates of the model's spike probes (encoded inputs, hidden and output spikes)."""
        probes = self.net.probes() if hasattr(self.net, "probes") else None
        return FiringRateMonitor(self.net, modules=probes or None)

