"""Time per training batch, measured honestly on a shared CPU (see ../shared/bench-method.md).

Variants run in the same process, on the same batch, alternated within every round (the order is
reversed on odd rounds, A B C C B A ..., so a slow drift of the machine hits all equally). Each
round keeps the median of ``reps`` timed steps per variant; ratios are taken per round and
summarised by their median. A small matmul probe (GFLOP/s) before and after tells which state the
machine was in. Timings are recorded, never asserted.
"""
from __future__ import annotations

import statistics
import time

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_gflops(n: int = 256, reps: int = 30) -> float:
    """GFLOP/s of an n x n float32 matmul (median of ``reps``): a probe of the machine's current speed."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def time_alternating(fns: dict, *, rounds: int = 5, reps: int = 5, warmup: int = 2) -> dict:
    """Median seconds per call of every function in ``fns`` ({name: zero-argument callable}), per round.

    Returns ``{"rounds": [{name: median_s}], "probe_gflops_before": float, "probe_gflops_after": float,
    "threads": int}``.
    """
    if rounds < 1 or reps < 1:
        raise ValueError(f"rounds and reps must be >= 1, got {rounds}, {reps}")
    names = list(fns)
    before = matmul_gflops()
    for name in names:
        for _ in range(warmup):
            fns[name]()
    per_round = []
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        med = {}
        for name in order:
            ts = []
            for _ in range(reps):
                _sync()
                t0 = time.perf_counter()
                fns[name]()
                _sync()
                ts.append(time.perf_counter() - t0)
            med[name] = statistics.median(ts)
        per_round.append({n: med[n] for n in names})
    return {"rounds": per_round, "probe_gflops_before": before, "probe_gflops_after": matmul_gflops(),
            "threads": torch.get_num_threads()}


def round_ratios(result: dict, pairs) -> list[dict]:
    """Per-round ratios ``a/b`` for every (label, a, b) in ``pairs``, plus their median over rounds.

    Rows: (pair, round, ratio) with round = "median" for the summary row (also min and max there)."""
    rows = []
    for label, a, b in pairs:
        rs = [r[a] / r[b] for r in result["rounds"]]
        rows += [{"pair": label, "round": i + 1, "ratio": v} for i, v in enumerate(rs)]
        rows.append({"pair": label, "round": "median", "ratio": statistics.median(rs), "min": min(rs), "max": max(rs)})
    return rows
