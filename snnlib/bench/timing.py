"""Timing and memory helpers: a matmul GFLOP/s probe, timed steps (wall and CPU seconds), RSS."""
from __future__ import annotations

import os
import statistics
import time

import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def gflops_probe(n: int = 512, repeats: int = 15, device="cpu") -> float:
    """Median GFLOP/s of an n x n float32 matmul: tells which CPU state a run saw."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts) / 1e9


def timed(fn, steps: int, device="cpu") -> list[tuple[float, float]]:
    """Run ``fn()`` ``steps`` times; ``(wall seconds, process CPU seconds)`` of each call."""
    out = []
    for _ in range(steps):
        _sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        out.append((time.perf_counter() - w0, time.process_time() - c0))
    return out


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
