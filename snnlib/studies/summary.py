"""Summary study (notebook 05): every method on one Fashion-MNIST budget, training memory against T,
and every notebook's runs and claims in one place.

A *methods table* maps a display label to ``{"config": <configs/runs stem>, "model": {overrides}}``;
a *budget* is ``{"subset", "test_subset", "epochs", "max_iters_per_epoch" (optional)}``.
Memory is in bytes (``*_bytes``) or MiB (``*_MiB``, 2**20 bytes).
"""
from __future__ import annotations

import pandas as pd

from ..experiments.config import load_yaml, resolve
from ..experiments.tables import final
from .context import RUN_CONFIGS
from .measure import memory_vs_T

BUDGET_KEYS = ("subset", "test_subset", "epochs")
MiB = 2 ** 20


def base_cfg(spec: dict) -> dict:
    """The resolved run config ``configs/runs/<spec['config']>.yaml`` with ``spec['model']`` merged
    into its model section (the method keeps its own model, T and optimiser)."""
    if "config" not in spec:
        raise ValueError(f"a methods-table entry needs a 'config' (a configs/runs stem), got {spec!r}")
    cfg = load_yaml(RUN_CONFIGS / f"{spec['config']}.yaml")
    cfg["model"] = {**cfg.get("model", {}), **spec.get("model", {})}
    return resolve(cfg)


def budget_cfg(spec: dict, budget: dict, seed: int) -> dict:
    """``base_cfg(spec)`` trained on the shared budget with ``seed``; named ``budget_<config>``."""
    missing = [k for k in BUDGET_KEYS if k not in budget]
    if missing:
        raise ValueError(f"budget lacks {', '.join(missing)}; it needs {', '.join(BUDGET_KEYS)}")
    return resolve(base_cfg(spec), {
        "name": f"budget_{spec['config']}", "seed": int(seed), "epochs": budget["epochs"],
        "max_iters_per_epoch": budget.get("max_iters_per_epoch"),
        "data": {"subset": budget["subset"], "test_subset": budget["test_subset"]}})


def budget_configs(methods: dict, budget: dict, seeds) -> list[tuple[str, dict]]:
    """``(label, config)`` for every method and seed, methods outermost (the notebook's run order)."""
    return [(label, budget_cfg(spec, budget, s)) for label, spec in methods.items() for s in seeds]


def budget_table(labels, records) -> pd.DataFrame:
    """One row per budget run (its last epoch): method label, seed, T, test accuracy, time per batch
    (s), batch size and mean firing rate (spikes / neuron / step)."""
    rows = []
    for label, r in zip(labels, records, strict=True):
        last = r["history"][-1]
        rows.append({"method": label, "seed": r["seed"], "T": r["T"], "test_acc": last["test_acc"],
                     "time_per_batch_s": last["time_per_batch_s"], "batch_size": r["config"]["data"]["batch_size"],
                     "mean_firing_rate": last.get("mean_firing_rate")})
    return pd.DataFrame(rows)


def memory_at_own_T(methods: dict, batch_size: int) -> dict[str, float]:
    """Training memory of one step (MiB, saved + state + solver) of every method at its own T, on a
    batch of ``batch_size`` of its own dataset."""
    out = {}
    for label, spec in methods.items():
        cfg = base_cfg(spec)
        out[label] = memory_vs_T({label: cfg}, [cfg["T"]], batch_size=batch_size)[0]["total_bytes"] / MiB
    return out


def aggregate(budget: pd.DataFrame, memory_MiB: dict[str, float]) -> pd.DataFrame:
    """Per method (rows in table order): accuracy mean and sd over seeds, T, batch, median time per
    batch, training memory (MiB, from ``memory_at_own_T``) and mean firing rate."""
    b = budget.assign(train_memory_MiB=budget.method.map(memory_MiB))
    return b.groupby("method", sort=False).agg(
        acc_mean=("test_acc", "mean"), acc_sd=("test_acc", "std"), T=("T", "first"), batch=("batch_size", "first"),
        time_per_batch_s=("time_per_batch_s", "median"), memory_MiB=("train_memory_MiB", "mean"),
        firing_rate=("mean_firing_rate", "mean"))


def memory_rows(methods: dict, Ts, batch_size: int) -> list[dict]:
    """``memory_vs_T`` rows of every method (``variant`` = its label) at every T; the single-step
    method, T = 1 by design, only at T = 1."""
    rows = []
    for label, spec in methods.items():
        cfg = base_cfg(spec)
        own_Ts = [1] if cfg["method"] == "single_step" else list(Ts)
        rows += memory_vs_T({label: cfg}, own_Ts, batch_size=batch_size)
    return rows


def growth(memory: pd.DataFrame, Ts) -> pd.DataFrame:
    """Total bytes of every variant at the smallest and largest of ``Ts``, and their ratio (NaN
    where a variant was measured at one of them only)."""
    lo, hi = min(Ts), max(Ts)
    g = memory[memory["T"].isin([lo, hi])].pivot_table(index="variant", columns="T", values="total_bytes")
    if g.shape[1] == 2:
        g["ratio"] = g[hi] / g[lo]
    return g


def final_accuracy(runs: pd.DataFrame) -> pd.DataFrame:
    """Last-epoch test accuracy of every run of every notebook: mean, sd and count over seeds per
    (dataset, name, method, T)."""
    acc = final(runs[runs.metric == "test_acc"].drop(columns="notebook"), "test_acc")
    return acc.groupby(["dataset", "name", "method", "T"])["value"].agg(["mean", "std", "count"]).round(4)


def claims_table(claims: list[dict]) -> pd.DataFrame:
    """Every claim for display: notebook, id, measured value, threshold, holds, kind and (result
    claims) verdict and budget."""
    cols = ["notebook", "id", "measured", "threshold", "holds", "kind", "verdict", "budget"]
    rows = [{**{k: c.get(k) for k in cols},
             "measured": c["measured"].get("value") if isinstance(c["measured"], dict) else c["measured"]}
            for c in claims]
    return pd.DataFrame(rows, columns=cols)
