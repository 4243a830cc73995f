"""Classification accuracy."""
from __future__ import annotations

import torch


def correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    """Number of samples whose argmax over the last axis equals the label. logits [B, K], y [B]."""
    return int((logits.argmax(-1) == y).sum().item())


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return correct(logits, y) / max(len(y), 1)
