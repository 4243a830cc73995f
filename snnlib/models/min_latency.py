"""The minimum-latency SNN of Yao et al. (ACML 2023): a 4-stage Sequencer2D-style backbone whose
token mixer is a spiking, window-recurrent mixer that runs in ONE time step.

Reconstructed from the authors' code (iverss1/ACML_SNN@31c9a7c); the paper text was not found.
See docs/papers/minimum_latency.md. Defaults = the released CIFAR-10 CNN:
stem Conv(3->48, k2, s2) 32x32 -> 16x16; depths [2, 2, 6, 2]; dims [48, 96, 192, 384];
PatchMerging between stages; mean over H, W; zero-initialised linear head.
The Fashion-MNIST variant (configs) uses one stage: stem Conv(1->32, k4, s4) 32 -> 8x8, 2 blocks.

Input [B, C, H, W] (static image, T = 1), output logits [B, num_classes].
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..layers.windows import WindowGrid
from . import register_model
from .min_latency_blocks import Block, PatchMerging, SpikeProbe, SpikingConvMixer, SpikingLSTMMixer, init_reference_

VARIANTS = ("cnn", "rnn")
SCHEDULES = ("alternate", "never", "always")


def window_plan(size: int, depth: int, grid: int, schedule: str) -> list[WindowGrid]:
    """The windows of each block of one stage at map side ``size``.

    'alternate' (the released code): even blocks non-overlapping, odd blocks overlapping where
    the windows fit (for 4 windows: 4 | size; the 2x2 stage 4 therefore never overlaps).
    'always': every block overlapping where it fits; 'never': no overlap.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown overlap schedule {schedule!r}; choose one of {SCHEDULES}")
    plan = []
    for i in range(depth):
        want = schedule == "always" or (schedule == "alternate" and i % 2 == 1)
        plan.append(WindowGrid(size, grid, overlap=want and WindowGrid.can_overlap(size, grid)))
    return plan


def _unused_cnn(dim: int) -> nn.Module:
    """Modules the released CNN builds in every block and never calls (backward_snn, a Conv1d, two LayerNorms)."""
    return nn.ModuleDict({"backward_conv1": nn.Conv2d(dim, dim, 3, padding=1),
                          "backward_conv2": nn.Conv2d(dim, dim, 3, padding=1),
                          "conv1d": nn.Conv1d(dim, 2 * dim, 3, padding=1),
                          "norm1": nn.LayerNorm(dim), "norm2": nn.LayerNorm(dim)})


@register_model("min_latency")
class MinLatencyNet(nn.Module):
    """Single-time-step SNN backbone (CNN or RNN spiking mixer). See the module docstring.

    Args:
        variant: 'cnn' (two shared 3x3 convs per block) or 'rnn' (BiLSTM synapse + carried membrane map).
        depths, dims: blocks and channels per stage (dims[i+1] feeds PatchMerging(dims[i] -> dims[i+1])).
        patch_size: stem kernel and stride. mlp_ratio: MLP hidden width / C.
        windows: windows per block, a square (1, 4, 16...; the reference uses 4).
        overlap_schedule: 'alternate' (reference), 'never' or 'always'; see ``window_plan``.
        projection: 'sin', 'avg' or 'none' (see ``snnlib.layers.projection``).
        recurrent: carry membranes between windows (False: each window starts from zero).
        encoding: spike encoding at every mixer (see ``min_latency_blocks.encode``).
        neuron: 'lif' (spikes) or 'relu' (the same-architecture ANN; it keeps a real-valued encoding,
            'expected' or 'identity', and replaces a spike encoding by 'identity': see ``input_mode``).
        overlap_merge: 'mean' (CIFAR-10 files) or 'or' (CIFAR-100 CNN file).
        rnn_order: 'released' or 'uniform' projection arguments of the RNN mixer.
        reference_unused: also build the modules the released code creates but never uses, so
            parameter counts match the reference's reported totals. They are frozen and never called.
    """

    def __init__(self, in_channels: int = 3, input_size=(32, 32), num_classes: int = 10, variant: str = "cnn",
                 depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), patch_size: int = 2, mlp_ratio: float = 3.0,
                 windows: int = 4, overlap_schedule: str = "alternate", projection: str = "sin",
                 recurrent: bool = True, encoding: str = "bernoulli", neuron: str = "lif",
                 overlap_merge: str = "mean", rnn_order: str = "released", reference_unused: bool = False):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
        depths, dims = list(depths), list(dims)
        if len(depths) != len(dims) or not depths:
            raise ValueError(f"depths {depths} and dims {dims} must be non-empty lists of the same length")
        H, W = tuple(input_size)
        if H != W:
            raise ValueError(f"the windows need a square input, got {H}x{W}")
        if H % patch_size:
            raise ValueError(f"input side {H} is not divisible by the stem patch size {patch_size}")
        grid = math.isqrt(int(windows))
        if grid * grid != windows:
            raise ValueError(f"windows must be a perfect square (1, 4, 16, ...), got {windows}")
        self.variant, self.num_classes = variant, num_classes
        self.stem = nn.Conv2d(in_channels, dims[0], patch_size, stride=patch_size)
        size = H // patch_size
        mix_kw = dict(projection=projection, recurrent=recurrent, encoding=encoding, neuron=neuron,
                      overlap_merge=overlap_merge)
        self.stages, self.merges, self.mem_merges = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        unused = nn.ModuleList()
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if size % grid:
                raise ValueError(f"stage {i + 1}: map side {size} is not divisible by {grid} windows per side")
            blocks = nn.ModuleList()
            for g in window_plan(size, depth, grid, overlap_schedule):
                if variant == "cnn":
                    mixer = SpikingConvMixer(dim, **mix_kw)
                else:
                    mixer = SpikingLSTMMixer(dim, order=rnn_order if grid == 2 else "uniform", **mix_kw)
                blocks.append(Block(dim, mixer, mlp_ratio, g))
            self.stages.append(blocks)
            last = i == len(dims) - 1
            if not last:
                if size % 2:
                    raise ValueError(f"stage {i + 1}: map side {size} cannot be halved by patch merging")
                self.merges.append(PatchMerging(dim, dims[i + 1]))
                if variant == "rnn":
                    self.mem_merges.append(PatchMerging(2 * dim, 2 * dims[i + 1]))
                size //= 2
            if reference_unused:
                for b in range(depth):
                    if variant == "cnn":
                        unused.append(_unused_cnn(dim))
                    elif last or b != depth - 1:   # the released RNN builds PatchMerging(2C) in every block
                        unused.append(PatchMerging(2 * dim, 4 * dim))
        if reference_unused:
            unused.append(nn.LayerNorm(dims[-1]))   # the final norm, created and never applied
        self.reference_unused = unused
        self.reference_unused.requires_grad_(False)
        self.head = nn.Linear(dims[-1], num_classes)
        init_reference_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"MinLatencyNet expects a static batch [B, C, H, W], got shape {tuple(x.shape)}")
        x = self.stem(x).permute(0, 2, 3, 1)
        M = None
        for i, blocks in enumerate(self.stages):
            for blk in blocks:
                x, M = blk(x, M)
            if i < len(self.merges):
                x = self.merges[i](x)
                if M is not None:
                    M = self.mem_merges[i](M)
        return self.head(x.mean(dim=(1, 2)))

    # ----------------------------------------------------------------- introspection
    def probes(self) -> dict[str, SpikeProbe]:
        """{name: probe} of every spike tensor (mixer inputs, hidden and output spikes)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, SpikeProbe)}

    def plan(self) -> list[dict]:
        """One row per block: stage, block, map side, windows, window side, overlap."""
        rows = []
        for i, blocks in enumerate(self.stages):
            for j, blk in enumerate(blocks):
                g = blk.grid
                rows.append({"stage": i + 1, "block": j, "size": g.size, "windows": g.n, "side": g.side,
                             "overlap": g.overlap})
        return rows


def parameter_counts(model: nn.Module) -> dict:
    """Parameters: ``total`` (every parameter, as the reference reports), ``unused`` (in
    ``reference_unused``) and ``used`` = total - unused."""
    total = sum(p.numel() for p in model.parameters())
    extra = getattr(model, "reference_unused", None)
    unused = sum(p.numel() for p in extra.parameters()) if extra is not None else 0
    return {"total": total, "used": total - unused, "unused": unused}


def layer_part(name: str) -> str:
    """The backbone part a layer name belongs to (for energy shares)."""
    if name.startswith("stem"):
        return "stem"
    if name.startswith("head"):
        return "head"
    if name.startswith("mem_merges"):
        return "membrane merging"
    if name.startswith("merges"):
        return "patch merging"
    if ".mlp." in name:
        return "MLP"
    for key, part in ((".mixer.conv1", "mixer conv1"), (".mixer.conv2", "mixer conv2"),
                      (".mixer.lstm.ih", "mixer LSTM input"), (".mixer.lstm.hh", "mixer LSTM recurrent"),
                      (".mixer.fc", "mixer fc")):
        if key in name:
            return part
    return "other"
