"""A small seeded synthetic image-classification dataset, for tests and smoke runs.

Each class has a fixed random template (bright strokes on a dark background); a sample is its
class template shifted by up to two pixels, scaled in intensity and noised. It is learnable in
a few iterations and needs no files, so tests of the trainer never depend on downloads.
Labelled everywhere as synthetic.
"""
from __future__ import annotations

import torch

from .batch_transforms import BatchTransform
from .tensor_dataset import TensorImageDataset

SIZE = (28, 28)
NUM_CLASSES = 10
NUM_TRAIN, NUM_TEST = 2048, 512


def make_synthetic(split: str, n: int | None = None, *, seed: int = 0, size=SIZE,
                   num_classes: int = NUM_CLASSES) -> TensorImageDataset:
    """``n`` samples (default 2048 train / 512 test) as a ``TensorImageDataset`` of uint8 [N, 1, H, W]."""
    n = n or (NUM_TRAIN if split == "train" else NUM_TEST)
    H, W = size
    g = torch.Generator().manual_seed(1000 + seed)               # templates: same for both splits
    templates = (torch.rand(num_classes, 1, H, W, generator=g) > 0.8).float()
    gs = torch.Generator().manual_seed(seed * 7919 + (1 if split == "train" else 2))
    labels = torch.randint(0, num_classes, (n,), generator=gs)
    shifts = torch.randint(-2, 3, (n, 2), generator=gs)
    imgs = torch.empty(n, 1, H, W)
    for i in range(n):
        imgs[i] = torch.roll(templates[labels[i]], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
    imgs = imgs * (0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=gs)) + 0.15 * torch.rand(n, 1, H, W, generator=gs)
    images = (imgs.clamp(0, 1) * 255).round().to(torch.uint8)
    info = {"name": "synthetic", "description": "SYNTHETIC class templates with shifts and noise (tests only)"}
    return TensorImageDataset(images, labels, BatchTransform(), classes=[str(c) for c in range(num_classes)],
                              info=info)
