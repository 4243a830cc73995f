"""Firing-rate estimators over the time axis (dim 0 of a [T, B, ...] spike train)."""
from __future__ import annotations

import torch


def rate_normaliser(T: int, leak: float = 1.0) -> float:
    """c_T = sum_{t<T} leak^t = (1 - leak^T)/(1 - leak); equals T when leak = 1."""
    if T <= 0:
        raise ValueError(f"T must be a positive number of time steps, got {T}")
    if leak == 1.0:
        return float(T)
    return (1.0 - leak**T) / (1.0 - leak)


def mean_rate(spikes: torch.Tensor) -> torch.Tensor:
    """Plain average over time: (1/T) sum_t s_t. Input [T, B, ...], output [B, ...]."""
    return spikes.mean(dim=0)


def weighted_rate(spikes: torch.Tensor, leak: float = 1.0) -> torch.Tensor:
    """IDE's lambda-weighted rate a_T = sum_t leak^(T-1-t) s_t / c_T. Input [T, B, ...]."""
    T = spikes.shape[0]
    w = leak ** torch.arange(T - 1, -1, -1, dtype=spikes.dtype, device=spikes.device)
    w = w.view(T, *([1] * (spikes.dim() - 1)))
    return (w * spikes).sum(0) / rate_normaliser(T, leak)


class RateAccumulator:
    """Online version of ``weighted_rate``: ``acc <- leak * acc + s`` each step; ``rate()``
    returns acc / c_t. Keeps one state-sized tensor, so memory does not grow with T."""

    def __init__(self, leak: float = 1.0):
        self.leak = float(leak)
        self.acc = None
        self.t = 0

    def update(self, s: torch.Tensor) -> None:
        self.acc = s.clone() if self.acc is None else self.leak * self.acc + s
        self.t += 1

    def rate(self) -> torch.Tensor:
        if self.acc is None:
            raise RuntimeError("RateAccumulator.rate() called before any update()")
        return self.acc / rate_normaliser(self.t, self.leak)
