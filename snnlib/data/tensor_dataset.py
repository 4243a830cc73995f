"""In-memory image datasets with batched fetch, and seeded subsets that keep batched fetch."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset, default_collate

from .batch_transforms import BatchTransform


class TensorImageDataset(Dataset):
    """Images held in memory: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N].

    ``ds[i]`` -> (x float32 [C, H', W'], y int); ``ds.__getitems__(idx)`` -> (x float32
    [B, C, H', W'], y int64 [B]). ``transform`` (a :class:`BatchTransform`) runs once per batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: BatchTransform | None = None,
                 classes: Sequence[str] | None = None, info: dict | None = None):
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [N={images.shape[0]}], got {tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.transform = transform or BatchTransform()
        self.classes = list(classes) if classes is not None else None
        self.info = dict(info or {})

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.transform(self.images[idx]), self.labels[idx]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        x, y = self.__getitems__([index])
        return x[0], int(y[0])

    def select(self, indices) -> "TensorImageDataset":
        """A new dataset holding only ``indices`` (same transform, classes and info)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return TensorImageDataset(self.images[idx], self.labels[idx], self.transform, self.classes, self.info)


class SubsetDataset(Dataset):
    """``base`` restricted to ``indices``; forwards ``__getitems__`` so batches stay batched."""

    def __init__(self, base, indices: Sequence[int]):
        self.base = base
        self.indices = [int(i) for i in indices]
        self.info = getattr(base, "info", {})
        self.classes = getattr(base, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[self.indices[index]]

    def __getitems__(self, indices):
        picked = [self.indices[int(i)] for i in indices]
        if hasattr(self.base, "__getitems__"):
            return self.base.__getitems__(picked)
        return default_collate([self.base[i] for i in picked])


def subset_indices(n: int, k: int, seed: int) -> list[int]:
    """``k`` distinct indices of ``range(n)``, drawn with ``seed``, in increasing order."""
    if not 0 < k <= n:
        raise ValueError(f"subset={k} must be between 1 and the dataset size {n}")
    g = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


def random_subset(dataset, k: int | None, seed: int = 0):
    """A seeded random subset of ``k`` samples of ``dataset`` (the dataset itself when ``k`` is None)."""
    if k is None:
        return dataset
    idx = subset_indices(len(dataset), int(k), seed)
    if hasattr(dataset, "select"):
        return dataset.select(idx)
    return SubsetDataset(dataset, idx)
