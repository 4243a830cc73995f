"""Time-chunked execution of a multi-step network: a chunk of steps through every layer before the next.

A multi-step network runs each layer on the whole sequence folded into the batch, [T*B, ...]; at
large T every activation is larger than the CPU's last-level cache, and each layer streams it from
memory. Run in chunks of ``c`` steps, each layer sees [c*B, ...] and the chunk's working set stays in
cache; the neurons carry their state (``MemoryModule`` memories) from one chunk to the next, and
autograd carries the gradient back through it (the fused LIF takes ``v0`` and returns its gradient).

Exact up to rounding: every step computes what it computes in one whole-sequence call (per-sample
layers, the same step functions). The neurons' arithmetic is bit for bit that of the reference
``lif_step`` loop fed the same chunks; the layers may round differently on a [c*B] batch than on
[T*B] (about 1e-12 relative in float64), and gradients agree within 1e-10 (tests). Not for a module that mixes samples of a batch
across time: BatchNorm in training mode normalises over the T*B batch, so a network with it runs
the whole sequence at once (``chunk_size`` returns T).

``chunk='auto'`` (the default of the models using it): on the first call with a given step shape
the first step runs alone and measures the bytes of the largest layer output per step (remembered
on the module for that shape); ``c`` is the largest number of steps whose largest activation fits
in the last-level cache, evened out over the (remaining) steps (``chunk_size``).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

DEFAULT_CACHE_BYTES = 32 * 2**20     # when the OS does not say (the L3 of this project's CPU)


@lru_cache(maxsize=1)
def last_level_cache_bytes() -> int:
    """Size of CPU 0's largest cache (Linux sysfs), else ``DEFAULT_CACHE_BYTES``."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        if text and text[-1].upper() in units and text[:-1].isdigit():
            best = max(best, int(text[:-1]) * units[text[-1].upper()])
        elif text.isdigit():
            best = max(best, int(text))
    return best or DEFAULT_CACHE_BYTES


def chunk_size(T: int, step_bytes: int, cache_bytes: int | None = None) -> int:
    """Steps per chunk for ``T`` steps whose largest activation takes ``step_bytes`` per step: the
    fewest chunks with at most ``cache_bytes // step_bytes`` steps each (at least 1), of equal length
    up to the last (e.g. T = 15 at 5 steps in cache -> 5; T = 16 -> 4)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    cache = last_level_cache_bytes() if cache_bytes is None else cache_bytes
    fit = max(1, cache // max(1, step_bytes))
    if fit >= T:
        return T
    return math.ceil(T / math.ceil(T / fit))


def mixes_batch(module: nn.Module) -> bool:
    """True if a submodule computes across the (T*B) batch: BatchNorm in training mode."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in module.modules())


def _largest_output_bytes(module: nn.Module, fn, x_step: torch.Tensor):
    """``fn(x_step)`` and the bytes of the largest tensor any submodule of ``module`` returned."""
    largest = [x_step.numel() * x_step.element_size()]

    def hook(_m, _inp, out):
        if isinstance(out, torch.Tensor):
            largest[0] = max(largest[0], out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        y = fn(x_step)
    finally:
        for h in handles:
            h.remove()
    return y, largest[0]


def chunked_forward(module: nn.Module, fn, x_seq: torch.Tensor, chunk="auto") -> torch.Tensor:
    """``fn(x_seq)`` [T, B, ...] -> [T, B, ...] computed in time chunks (``fn`` runs ``module``'s layers).

    ``chunk``: 'auto' (sized to the cache, see the module docstring), an int (steps per chunk; the
    last chunk may be shorter), or None (the whole sequence in one call). A ``module`` that
    ``mixes_batch`` always runs whole ('auto'), or raises (an explicit int).
    """
    T = x_seq.shape[0]
    if chunk is None or T == 1:
        return fn(x_seq)
    if mixes_batch(module):
        if chunk == "auto":
            return fn(x_seq)
        raise ValueError(f"{type(module).__name__} has BatchNorm in training mode, which normalises over all "
                         "T*B samples: it cannot run in time chunks (use chunk=None or eval mode)")
    if chunk == "auto":
        key = (tuple(x_seq.shape[1:]), x_seq.dtype)
        known = module.__dict__.setdefault("_chunk_step_bytes", {})
        if key in known:
            outs, start, size = [], 0, chunk_size(T, known[key])
        else:
            first, known[key] = _largest_output_bytes(module, fn, x_seq[:1])
            outs, start, size = [first], 1, chunk_size(T - 1, known[key])
    elif isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 1:
        outs, start, size = [], 0, chunk
    else:
        raise ValueError(f"chunk must be 'auto', None or an int >= 1, got {chunk!r}")
    if start == 0 and size >= T:
        return fn(x_seq)
    outs += [fn(x_seq[t:t + size]) for t in range(start, T, size)]
    return torch.cat(outs)
