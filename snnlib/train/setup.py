"""Seeds, determinism, devices, optimisers and learning-rate schedules."""
from __future__ import annotations

import math
import os
import random

import numpy as np
import torch

from ..experiments.config import OPTIMIZERS, SCHEDULES, ConfigError



def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(deterministic: bool = True, threads: int | None = None) -> None:
    """Deterministic algorithms on (CPU results repeat bit for bit with the same thread count).

    torch's ``fill_uninitialized_memory`` (on by default with deterministic algorithms) is turned
    off: it fills every new buffer (NaN for floats) to make reads of uninitialised memory
    repeatable, which correct code never does; the fill cost thousands of ``aten::fill_`` calls
    per implicit-backward step. ``determinism_state()`` records what is in force."""
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = bool(deterministic)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def determinism_state() -> dict:
    """The determinism settings in force (for run and benchmark records)."""
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "fill_uninitialized_memory": bool(torch.utils.deterministic.fill_uninitialized_memory),
            "threads": torch.get_num_threads()}


def numerics_state(method, device) -> dict:
    """How a run's steps treat floats (for run records): subnormals flushed to zero or not."""
    flushed = bool(method.flush_denormal) and torch.device(device).type == "cpu"
    return {"flush_denormal": flushed,
            "flush_denormal_scope": "the calling thread of each train_step/predict (torch.set_flush_denormal); "
                                    "other intra-op threads keep subnormals" if flushed else None}


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


def clip_before_step(optimizer: torch.optim.Optimizer, max_norm: float | None):
    """Clip the total gradient norm (2-norm over every parameter of ``optimizer``) to ``max_norm``
    before each ``optimizer.step()``, however often a method steps in one batch (OTTT_O and SAF-E
    step once per time step). Returns the hook handle (``.remove()``), or None when ``max_norm``
    is None. Under DDP the gradients are already all-reduced, so every rank clips alike."""
    if max_norm is None:
        return None
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not math.isfinite(max_norm) \
            or max_norm <= 0:
        raise ConfigError(f"grad_clip must be a positive finite gradient norm or None, got {max_norm!r}")
    max_norm = float(max_norm)

    def clip(opt, args, kwargs):
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, max_norm)

    return optimizer.register_step_pre_hook(clip)


#: a warm-up may take at most this fraction of a run's iterations (longer ones are shortened)
MAX_WARMUP_FRACTION = 0.1


def fit_schedule(sched: dict, total_iters: int) -> tuple[dict, str | None]:
    """The schedule a run of ``total_iters`` iterations actually uses, and a note when it differs.

    A linear warm-up written for a long run (e.g. the paper's 500 iterations) would keep a short
    run's learning rate near zero throughout; it is cut to ``MAX_WARMUP_FRACTION`` of the run."""
    warm = int(sched.get("warmup_iters") or 0)
    cap = int(MAX_WARMUP_FRACTION * total_iters)
    if warm <= cap:
        return sched, None
    fitted = {**sched, "warmup_iters": cap}
    return fitted, (f"warm-up shortened from {warm} to {cap} iterations "
                    f"({MAX_WARMUP_FRACTION:.0%} of this run's {total_iters})")


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
