"""The interface every training method implements."""
from __future__ import annotations

import functools

import torch
from torch import nn

from ..metrics.firing import FiringRateMonitor
from ..neurons import reset_net
from .numerics import flushing_subnormals, on_cpu


class Method:
    """One training method around one model.

    Subclasses implement ``train_step`` and ``logits``. ``model`` may be wrapped in
    DistributedDataParallel; ``self.net`` is always the bare module.

    ``train_step(x, y, optimizer) -> dict`` does the whole update for one batch (zero_grad,
    backward passes, ``optimizer.step()`` as often as the method needs) and returns
    at least ``loss`` (float) and ``correct`` (int, training predictions); optional keys:
    ``solver`` (dict of solver statistics), ``rates`` (dict), ``extra_memory_bytes`` (int).

    ``flush_denormal`` (default True; the run config's key of that name sets it): on CPU,
    ``train_step`` and ``predict`` run with subnormal floats flushed to zero, and the previous
    state is restored after them (``numerics.flushing_subnormals``).
    """

    name = "base"
    #: keyword arguments for DistributedDataParallel
    ddp_kwargs: dict = {}
    flush_denormal: bool = True

    def __init_subclass__(cls, **kwargs):
        """Every ``train_step`` a subclass defines first checks its batch (``check_batch`` against the
        model's dtype and device) and resets the network's state if it raises."""
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("train_step")
        if step is not None and not getattr(step, "checks_batch", False):
            cls.train_step = _checked_train_step(step)

    def __init__(self, model: nn.Module, *, T: int):
        if not isinstance(T, int) or T <= 0:
            raise ValueError(f"T must be a positive integer number of time steps, got {T!r}")
        self.model = model
        self.net = getattr(model, "module", model)
        self.T = T

    def train_step(self, x: torch.Tensor, y: torch.Tensor, optimizer) -> dict:  # pragma: no cover
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Class scores [B, K] for a batch (called under no_grad in eval mode)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores [B, K] of a checked batch (``check_batch``); the network's state is reset
        afterwards, also when ``logits`` raises."""
        check_batch(x, model=self.net)
        try:
            with flushing_subnormals(self.flush_denormal and on_cpu(x)):
                return self.logits(x)
        finally:
            reset_net(self.net)

    def monitor(self):
        """Context manager collecting firing rates during evaluation; ``.rates()`` -> dict."""
        return FiringRateMonitor(self.net)

    def state_dict(self) -> dict:
        """State the method itself carries from one batch to the next (not the model's), for
        checkpoints; plain Python scalars/containers or tensors. Default: none."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned (a resumed run continues as if never stopped)."""
        if state:
            raise ValueError(f"method {self.name!r} keeps no state, got a checkpoint with {sorted(state)}")


def check_batch(x: torch.Tensor, y: torch.Tensor | None = None, model: nn.Module | None = None) -> None:
    """Clear errors for malformed batches, before any state changes.

    ``x``: floating-point inputs [B, ...] with finite values only (one ``isfinite`` pass), in the dtype
    and on the device of ``model``'s first parameter when ``model`` is given. ``y``: integer labels [B].
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() == 0:
        raise ValueError("inputs must have a batch dimension, got a 0-d tensor")
    if model is not None:
        p = next(model.parameters(), None)
        if p is not None and x.dtype != p.dtype:
            raise TypeError(f"inputs are {x.dtype} but the model's parameters are {p.dtype}: convert the batch "
                            f"(x.to({p.dtype})) or the model (model.to({x.dtype}))")
        if p is not None and x.device != p.device:
            raise ValueError(f"inputs are on {x.device} but the model is on {p.device}: move the batch (x.to(...))")
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"labels must be an integer tensor, got {getattr(y, 'dtype', type(y).__name__)}")
        if y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"batch size mismatch: inputs {tuple(x.shape)} vs labels {tuple(y.shape)}")
    if not bool(torch.isfinite(x).all()):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(f"inputs contain non-finite values ({n_nan} NaN, {n_inf} inf of {x.numel()}): "
                         "check the data and its normalisation")


def _checked_train_step(step):
    """``step`` preceded by ``check_batch(x, y, model=self.net)``, run with subnormals flushed on CPU
    when ``self.flush_denormal``; the network state is reset when it raises."""
    @functools.wraps(step)
    def train_step(self, x, y, *args, **kwargs):
        check_batch(x, y, model=self.net)
        try:
            with flushing_subnormals(self.flush_denormal and on_cpu(x)):
                return step(self, x, y, *args, **kwargs)
        except BaseException:
            reset_net(self.net)
            raise
    train_step.checks_batch = True
    return train_step
