"""Square windows ("receptive fields") over a channels-last feature map, and their exact merge.

A ``WindowGrid`` cuts a map [B, H, W, C] (H = W = ``size``) into ``grid x grid`` square windows
in raster order (top-left, top-right, ..., bottom-right):

- non-overlapping: side ``size / grid``, tiling the map;
- overlapping: side ``3/2 * size / grid`` (for grid 2: the minimum-latency code's 3H/4 corner
  windows), placed at evenly spaced integer offsets from the first to the last corner.

``split`` stacks the windows on a new leading axis, [n, B, s, s, C]; ``merge`` puts them back,
averaging every position by the number of windows covering it. So ``merge(split(x)) == x``
(bit-exact without overlap; exact up to rounding with it), and merged spikes become averages of
spikes where windows overlap.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class WindowGrid:
    """``grid x grid`` windows over a ``size x size`` map. See the module docstring."""

    size: int
    grid: int = 2
    overlap: bool = False

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"window grid: map size must be a positive integer, got {self.size!r}")
        if not isinstance(self.grid, int) or self.grid <= 0:
            raise ValueError(f"window grid: windows per side must be a positive integer, got {self.grid!r}")
        reason = self.why_invalid(self.size, self.grid, self.overlap)
        if reason:
            raise ValueError(f"window grid size={self.size}, grid={self.grid}, overlap={self.overlap}: {reason}")

    @staticmethod
    def why_invalid(size: int, grid: int, overlap: bool) -> str | None:
        """None when the windows fit exactly, else the reason they do not."""
        if size % grid:
            return f"the map side {size} is not divisible by {grid} windows per side"
        if not overlap:
            return None
        if grid == 1:
            return "one window covers the whole map, so there is nothing to overlap"
        w = size // grid
        if w % 2:
            return f"the overlapping side 3/2 x {w} is not an integer (the map side must be divisible by {2 * grid})"
        side = 3 * w // 2
        if (size - side) % (grid - 1):
            return f"overlapping windows of side {side} cannot be placed at integer offsets on a {size}-wide map"
        return None

    @classmethod
    def can_overlap(cls, size: int, grid: int) -> bool:
        return cls.why_invalid(size, grid, True) is None

    @property
    def n(self) -> int:
        """Number of windows."""
        return self.grid * self.grid

    @property
    def side(self) -> int:
        """Window side in pixels."""
        w = self.size // self.grid
        return 3 * w // 2 if self.overlap else w

    @cached_property
    def offsets(self) -> list[tuple[int, int]]:
        """Top-left corner (row, col) of each window, raster order."""
        if self.grid == 1:
            pos = [0]
        else:
            step = (self.size - self.side) // (self.grid - 1)
            pos = [i * step for i in range(self.grid)]
        return [(r, c) for r in pos for c in pos]

    def coverage(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """Number of windows covering each position, [size, size, 1]."""
        cnt = torch.zeros(self.size, self.size, 1, device=device, dtype=dtype)
        s = self.side
        for r, c in self.offsets:
            cnt[r:r + s, c:c + s] += 1
        return cnt

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.size or x.shape[2] != self.size:
            raise ValueError(f"expected a channels-last map [B, {self.size}, {self.size}, C], got {tuple(x.shape)}")

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W, C] -> windows [n, B, s, s, C] in raster order."""
        self._check(x)
        s = self.side
        return torch.stack([x[:, r:r + s, c:c + s] for r, c in self.offsets])

    def merge(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows [n, B, s, s, C] -> map [B, H, W, C]; overlaps are averaged."""
        n, s = self.n, self.side
        if windows.dim() != 5 or windows.shape[0] != n or windows.shape[2] != s or windows.shape[3] != s:
            raise ValueError(f"expected windows [{n}, B, {s}, {s}, C], got {tuple(windows.shape)}")
        if not self.overlap:   # a tiling: reassemble rows of windows, no arithmetic
            g = self.grid
            rows = [torch.cat(list(windows[i * g:(i + 1) * g]), dim=2) for i in range(g)]
            return torch.cat(rows, dim=1)
        B, C = windows.shape[1], windows.shape[4]
        out = windows.new_zeros(B, self.size, self.size, C)
        for k, (r, c) in enumerate(self.offsets):
            out[:, r:r + s, c:c + s] += windows[k]
        return out / self.coverage(windows.device, windows.dtype)
