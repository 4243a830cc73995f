"""Measurements shared by the notebooks: training memory against T, one batch of real data."""
from __future__ import annotations

import copy

import torch

from .config import resolve


def example_batch(cfg: dict, batch_size: int, seed: int = 0):
    """The first ``batch_size`` training samples of the config's dataset (deterministic)."""
    from ..data.loader import make_loader
    from ..train import build_data
    cfg = resolve(cfg)
    train, _ = build_data(cfg)
    x, y = next(iter(make_loader(train, batch_size, shuffle=True, seed=seed, drop_last=True)))
    return x, y


def memory_vs_T(cfg: dict, Ts, batch_size: int = 32, seed: int = 0, batch=None) -> list[dict]:
    """``step_memory`` of one training step of ``cfg``'s method for each T (float32, CPU).

    Returns rows ``{"T", "saved_peak_bytes", "state_bytes", "solver_bytes", "total_bytes", ...}``.
    The model is rebuilt with the same seed for every T, so only T changes.
    """
    from ..metrics.memory import step_memory
    from ..train import build
    base = resolve(cfg)
    x, y = batch if batch is not None else example_batch(base, batch_size, seed)
    rows = []
    for T in Ts:
        c = copy.deepcopy(base)
        c["T"] = int(T)
        if x.dim() == 5 and x.shape[1] != T:
            xb, yb = example_batch(c, batch_size, seed)
        else:
            xb, yb = x, y
        torch.manual_seed(seed)
        _, method = build(c, "cpu")
        m = step_memory(method, xb.to(torch.float32 if c["dtype"] == "float32" else torch.float64), yb)
        rows.append({"T": int(T), "method": c["method"], **m})
    return rows
