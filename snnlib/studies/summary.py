"""Summary study (notebook 05): every method on one Fashion-MNIST budget, training memory against T,
and every notebook's runs and claims in one place.

A *methods table* maps a display label to ``{"config": <configs/runs stem>, "model": {overrides}}``;
a *budget* is ``{"subset", "test_subset", "epochs", "max_iters_per_epoch" (optional)}``.
Memory is in bytes (``*_bytes``) or MiB (``*_MiB``, 2**20 bytes).
"""
from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt

from ..experiments.config import load_yaml, resolve
from ..experiments.tables import final
from .context import RUN_CONFIGS
from .measure import memory_vs_T
from .plotting import log_ticks_at, plain_log_labels

BUDGET_KEYS = ("subset", "test_subset", "epochs")
MiB = 2 ** 20


def base_cfg(spec: dict) -> dict:
    """The resolved run config ``configs/runs/<spec['config']>.yaml`` with ``spec['overrides']``
    (nested, optional) applied: the method keeps its own model, T and optimiser unless they say."""
    if "config" not in spec:
        raise ValueError(f"a methods-table entry needs a 'config' (a configs/runs stem), got {spec!r}")
    unknown = set(spec) - {"config", "overrides"}
    if unknown:
        raise ValueError(f"a methods-table entry has only 'config' and 'overrides', got {sorted(unknown)}")
    return resolve(load_yaml(RUN_CONFIGS / f"{spec['config']}.yaml"), spec.get("overrides") or {})


def budget_cfg(spec: dict, budget: dict, seed: int) -> dict:
    """``base_cfg(spec)`` trained on the shared budget with ``seed``. The run keeps its config's name,
    so a notebook that trains the same config on the same budget (00's BPTT, 04's single-step CNN)
    shares the run: runs are cached by the hash of their resolved config."""
    missing = [k for k in BUDGET_KEYS if k not in budget]
    if missing:
        raise ValueError(f"budget lacks {', '.join(missing)}; it needs {', '.join(BUDGET_KEYS)}")
    return resolve(base_cfg(spec), {
        "seed": int(seed), "epochs": budget["epochs"], "max_iters_per_epoch": budget.get("max_iters_per_epoch"),
        "data": {"subset": budget["subset"], "test_subset": budget["test_subset"]}})


def budget_words(budget: dict, seeds, num_train: int = 60000) -> str:
    """The shared budget in words, for figure titles and the report."""
    n = budget["subset"] or num_train
    cap = f", at most {budget['max_iters_per_epoch']} batches per epoch" if budget.get("max_iters_per_epoch") else ""
    return f"{n} training images x {budget['epochs']} epoch(s){cap}, {len(seeds)} seed(s)"


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
        firing_rate=("mean_firing_rate", "mean")).assign(
        time_per_image_ms=lambda d: d.time_per_batch_s / d.batch * 1e3)


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


# -- figures ---------------------------------------------------------------------------------
MARKERS = "osD^vP*Xhp"


def accuracy_cost_figure(agg: pd.DataFrame, budget_text: str, memory_batch: int):
    """Test accuracy (mean ± sd over seeds) against training memory of one step and against time
    per training image; one colour (``tab10``, no two alike) and one open marker per method, so that
    methods at the same place stay visible, the legend outside the axes."""
    colours = sns.color_palette("tab10", 10)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, x, xlabel in ((axes[0], "memory_MiB", f"training memory of one step\n(MiB, log scale; batch {memory_batch})"),
                          (axes[1], "time_per_image_ms", "training time per image\n(ms, log scale; median over batches)")):
        for i, (m, r) in enumerate(agg.iterrows()):
            ax.errorbar(r[x], r.acc_mean, yerr=0 if pd.isna(r.acc_sd) else r.acc_sd, fmt=MARKERS[i % len(MARKERS)],
                        color=colours[i % 10], mfc="none", mew=1.8, label=m, capsize=3, markersize=9)
        ax.set(xscale="log", xlabel=xlabel)
        plain_log_labels(ax, "x")
    axes[0].set_ylabel("test accuracy (fraction, mean ± sd)")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, title="method")
    fig.suptitle(f"Same Fashion-MNIST budget: {budget_text}; each method its own model and T")
    fig.tight_layout()
    return fig


def memory_figure(memT: pd.DataFrame, Ts, batch: int):
    """Training memory of one step (MiB) against T per method, log-log, legend outside."""
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.lineplot(memT.assign(MiB=memT.total_bytes / 2**20), x="T", y="MiB", hue="variant", style="variant",
                 markers=True, dashes=True, palette="tab10", markersize=8, ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="time steps T (log scale)",
           ylabel=f"memory of one training step\n(MiB, log scale; batch {batch})",
           title="Memory against T (coinciding lines overlap; dashes tell them apart)")
    log_ticks_at(ax, Ts, "x")
    plain_log_labels(ax, "y")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, title="method")
    fig.tight_layout()
    return fig


def firing_figure(budget: pd.DataFrame):
    """Mean test-set firing rate per method after the budget (bars: mean, error: sd over seeds)."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.barplot(budget, x="method", y="mean_firing_rate", errorbar="sd", ax=ax, color="C0")
    ax.set(ylabel="mean firing rate (spikes / neuron / step)", xlabel="", title="Test-set firing rate after the budget")
    ax.tick_params(axis="x", rotation=30)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    fig.tight_layout()
    return fig
