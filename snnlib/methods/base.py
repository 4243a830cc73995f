"""The interface every training method implements."""
from __future__ import annotations

import torch
from torch import nn

from ..metrics.firing import FiringRateMonitor
from ..neurons import reset_net


class Method:
    """One training method around one model.

    Subclasses implement ``train_step`` and ``logits``. ``model`` may be wrapped in
    DistributedDataParallel; ``self.net`` is always the bare module.

    ``train_step(x, y, optimizer) -> dict`` does the whole update for one batch (zero_grad,
    backward passes, ``optimizer.step()`` as often as the method needs) and returns
    at least ``loss`` (float) and ``correct`` (int, training predictions); optional keys:
    ``solver`` (dict of solver statistics), ``rates`` (dict), ``extra_memory_bytes`` (int).
    """

    name = "base"
    #: keyword arguments for DistributedDataParallel
    ddp_kwargs: dict = {}

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
        out = self.logits(x)
        reset_net(self.net)
        return out

    def monitor(self):
        """Context manager collecting firing rates during evaluation; ``.rates()`` -> dict."""
        return FiringRateMonitor(self.net)


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """Clear errors for malformed batches (wrong dtypes, NaN inputs, mismatched sizes)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor, got {y.dtype}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"batch size mismatch: inputs {tuple(x.shape)} vs labels {tuple(y.shape)}")
    if torch.isnan(x).any():
        raise ValueError("inputs contain NaN")
