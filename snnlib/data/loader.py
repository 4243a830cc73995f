"""Deterministic, resumable batching, and the time-axis convention.

The order of epoch ``e`` is a permutation drawn from ``seed + e``, so a run resumed at
batch ``k`` of epoch ``e`` sees exactly the batches an uninterrupted run would. Every loader
has its own generator, also seeded from ``seed`` and ``e``: creating its iterator takes no
draw from the global RNG, so a resumed run's global RNG stream (dropout, stochastic encoders)
continues exactly where the checkpoint left it.
Under DistributedDataParallel each rank takes a contiguous slice of every global batch.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler


class ResumableBatchSampler(Sampler):
    """Yields index lists of one epoch, starting at batch ``start``; rank slice of each batch."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                 start: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 max_batches: int | None = None):
        if batch_size % world_size:
            raise ValueError(f"global batch size {batch_size} is not divisible by world size {world_size}")
        self.n, self.bs, self.shuffle, self.seed, self.epoch = n, batch_size, shuffle, seed, epoch
        self.start, self.drop_last, self.rank, self.world = start, drop_last, rank, world_size
        self.max_batches = max_batches

    def num_batches(self) -> int:
        nb = self.n // self.bs if self.drop_last else -(-self.n // self.bs)
        return nb if self.max_batches is None else min(nb, self.max_batches)

    def __len__(self) -> int:
        return max(self.num_batches() - self.start, 0)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(int(self.seed) * 100003 + int(self.epoch))
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        for b in range(self.start, self.num_batches()):
            idx = order[b * self.bs:(b + 1) * self.bs]
            per = len(idx) // self.world
            if self.world > 1:
                idx = idx[self.rank * per:(self.rank + 1) * per]
            yield idx.tolist()


def loader_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s loader generator (the worker base seed is drawn from it)."""
    return (int(seed) * 100003 + int(epoch)) * 2 + 1


def _identity(batch):
    return batch


def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, start: int = 0,
                drop_last: bool = False, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                max_batches: int | None = None) -> DataLoader:
    """A DataLoader over ``dataset`` with ``ResumableBatchSampler``. Datasets with ``__getitems__``
    return whole batches; others are collated by PyTorch's default collate.

    The loader draws only from its own generator (``loader_seed(seed, epoch)``), never from the
    global RNG. With ``num_workers > 0`` each worker seeds its RNG from that generator, so random
    augmentation in workers repeats per epoch, but a run resumed mid-epoch hands batches to
    workers in another order: exact mid-epoch resume needs ``num_workers=0`` (the default)."""
    sampler = ResumableBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                    start=start, drop_last=drop_last, rank=rank, world_size=world_size,
                                    max_batches=max_batches)
    collate = _identity if getattr(dataset, "__getitems__", None) else None
    kwargs = {"collate_fn": collate} if collate else {}
    gen = torch.Generator().manual_seed(loader_seed(seed, epoch))
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, generator=gen, **kwargs)


def time_sequence(x: torch.Tensor, T: int) -> torch.Tensor:
    """Time-first input [T, B, ...] for a spiking network.

    Event batches arrive as [B, T, C, H, W] and are transposed (their T must equal ``T``);
    static batches [B, ...] are repeated over T (direct encoding: the analog image is the
    input current of the first layer at every step).
    """
    if T <= 0:
        raise ValueError(f"T must be a positive number of time steps, got {T}")
    if x.dim() == 5:
        if x.shape[1] != T:
            raise ValueError(f"event batch has {x.shape[1]} frames but T = {T}; rebuild the dataset with T={T}")
        return x.transpose(0, 1)
    return x.unsqueeze(0).expand(T, *x.shape)
