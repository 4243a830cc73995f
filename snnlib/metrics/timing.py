"""The one timing protocol of the library (benchmark and studies), made for a shared CPU.

Variants run in the same process on the same batch, alternated within every round; the order is
reversed on odd rounds (A B C, C B A, A B C, ...) so that a slow drift of the machine hits all of
them alike. Each round keeps, per variant, the median wall and CPU seconds of ``reps`` timed
calls; ratios between two variants are taken round by round (``round_ratios``) and summarised by
their median and range (``ratio_summary``). A matmul probe (GFLOP/s) before and after tells which
state the machine was in. Timings are recorded, never asserted.
"""
from __future__ import annotations

import os
import statistics
import time

import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def gflops_probe(n: int = 512, repeats: int = 15, device="cpu") -> float:
    """Median GFLOP/s of an n x n float32 matmul: which state the machine is in now."""
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


def round_order(names, r: int) -> list:
    """The order of round ``r`` (0-based): ``names`` on even rounds, reversed on odd ones."""
    names = list(names)
    return names if r % 2 == 0 else names[::-1]


def alternate(fns: dict, *, rounds: int, reps: int, warmup: int = 0, device="cpu") -> dict:
    """Time every zero-argument callable of ``fns`` ({name: fn}) in alternated rounds.

    Returns ``{"rounds": [{name: {"wall_s", "cpu_s", "wall_all"}}], "gflops_before", "gflops_after",
    "threads", "device"}``: per round and name the median wall / CPU seconds of ``reps`` calls and
    every wall time (names keep the order of ``fns`` inside each round's dict).
    """
    if rounds < 1 or reps < 1 or warmup < 0:
        raise ValueError(f"rounds and reps must be >= 1 and warmup >= 0, got {rounds}, {reps}, {warmup}")
    before = gflops_probe(device=device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per_round = []
    for r in range(rounds):
        got = {}
        for name in round_order(fns, r):
            m = timed(fns[name], reps, device)
            got[name] = {"wall_s": statistics.median(w for w, _ in m), "cpu_s": statistics.median(c for _, c in m),
                         "wall_all": [w for w, _ in m]}
        per_round.append({name: got[name] for name in fns})
    return {"rounds": per_round, "gflops_before": before, "gflops_after": gflops_probe(device=device),
            "threads": torch.get_num_threads(), "device": str(device)}


def round_ratios(result: dict, num: str, den: str, key: str = "wall_s", scale: float = 1.0) -> list[float]:
    """``num`` time / (``scale`` x ``den`` time) in every round of ``alternate``'s result where both ran."""
    return [r[num][key] / (scale * r[den][key]) for r in result["rounds"] if num in r and den in r]


def ratio_summary(ratios: list[float]) -> dict | None:
    """``{"median", "min", "max", "n"}`` of per-round ratios (None when there are none)."""
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "n": len(ratios)}


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
