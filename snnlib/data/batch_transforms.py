"""Per-batch image transforms on tensors: scale, pad, augment, normalise.

Randomness (crop offsets, flips) comes from the global torch RNG, so restoring a checkpointed
``torch.get_rng_state()`` reproduces the augmentation exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def pad_to_size(x: torch.Tensor, size) -> torch.Tensor:
    """Zero-pad ``x`` [B, C, H, W] symmetrically to ``size`` (int or (H, W)); extra pixel goes right/bottom."""
    th, tw = _pair(size)
    h, w = x.shape[-2:]
    if th < h or tw < w:
        raise ValueError(f"pad_to={size} is smaller than the images ({h}x{w})")
    top, left = (th - h) // 2, (tw - w) // 2
    return torch.nn.functional.pad(x, (left, tw - w - left, top, th - h - top))


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad ``x`` [B, C, H, W] by ``padding`` px and crop back to H x W at a random offset per image."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,))
    dx = torch.randint(0, 2 * padding + 1, (b,))
    rows = (dy[:, None] + torch.arange(h))[:, :, None]          # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]          # [B, 1, W]
    out = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror each image of ``x`` [B, C, H, W] left-right with probability 1/2."""
    flip = torch.rand(x.shape[0]) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


@dataclass
class BatchTransform:
    """uint8 images [B, C, H, W] -> float32 [B, C, H', W'].

    Steps: scale to [0, 1]; zero-pad to ``pad_to`` (H', W'); if ``augment``: random crop with
    ``crop_padding`` px of zero padding and, if ``hflip``, random horizontal flips; then
    ``(x - mean) / std`` per channel (skipped when ``mean`` is None).
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    pad_to: int | tuple[int, int] | None = None
    augment: bool = False
    crop_padding: int = 0
    hflip: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
        x = images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images.to(torch.float32)
        if self.pad_to is not None:
            x = pad_to_size(x, self.pad_to)
        if self.augment:
            if self.crop_padding > 0:
                x = random_crop(x, self.crop_padding)
            if self.hflip:
                x = random_hflip(x)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
            if mean.shape[1] != x.shape[1] or std.shape[1] != x.shape[1]:
                raise ValueError(f"mean/std have {mean.shape[1]}/{std.shape[1]} entries but images have "
                                 f"{x.shape[1]} channels")
            x = (x - mean) / std
        return x

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the output for inputs of ``size``."""
        return _pair(self.pad_to) if self.pad_to is not None else tuple(size)
