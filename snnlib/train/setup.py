"""Seeds, determinism, devices, optimisers and learning-rate schedules."""
from __future__ import annotations

import math
import os
import random

import numpy as np
import torch

from ..experiments.config import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(deterministic: bool = True, threads: int | None = None) -> None:
    """Deterministic algorithms on (CPU results repeat bit for bit with the same thread count)."""
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = bool(deterministic)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when it is there, else CPU."""
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if str(spec).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available on this machine")
    return torch.device(spec)


def make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    cfg = dict(cfg)
    name = cfg.pop("name")
    lr, wd = cfg["lr"], cfg["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], weight_decay=wd, nesterov=cfg["nesterov"])
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg["betas"]), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg["betas"]), weight_decay=wd)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def lr_at(it: int, total: int, iters_per_epoch: int, base_lr: float, sched: dict) -> float:
    """Learning rate of global iteration ``it`` (0-based): linear warm-up, then the schedule.

    'cosine': anneals to ``min_lr`` over all iterations; 'step': multiplies by ``gamma`` at
    each epoch in ``milestones``; 'constant'.
    """
    name = sched["name"]
    warm = int(sched.get("warmup_iters") or 0)
    if warm and it < warm:
        return base_lr * (it + 1) / warm
    if name == "constant":
        return base_lr
    if name == "cosine":
        span = max(total - warm, 1)
        p = min(max(it - warm, 0) / span, 1.0)
        lo = sched.get("min_lr", 0.0) or 0.0
        return lo + (base_lr - lo) * 0.5 * (1 + math.cos(math.pi * p))
    if name == "step":
        epoch = it // max(iters_per_epoch, 1)
        k = sum(1 for m in sched.get("milestones") or [] if epoch >= m)
        return base_lr * (sched.get("gamma", 0.1) ** k)
    raise ConfigError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def rng_state() -> dict:
    """Every RNG state a run depends on, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
