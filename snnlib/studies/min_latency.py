"""The minimum-latency study (notebook ``04_min_latency``): unit checks, the reference-size counts,
T = 1 accuracy over training and evaluation seeds, ablations judged seed by seed, firing rates and
energy from counted operations, with the figures drawn from them.

Accuracies are fractions in [0, 1]; energies are picojoules per test image (``pj``) unless a
column says nJ; parameter and MAC counts are in millions where a name ends in ``(M)`` / ``_m``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..experiments.cache import memo
from ..experiments.published import published
from ..experiments.tables import tidy
from ..experiments.verdict import Verdict, decide_comparison
from ..layers.projection import get_projection
from ..layers.windows import WindowGrid
from ..metrics.energy import EnergyCounter, ptflops_convention, shares
from ..models.min_latency import layer_part, parameter_counts
from ..neurons import Rectangle
from ..train import build
from .measure import energy_of_run, evaluate_seeds

# CIFAR-10 configs whose README counts we compare: config -> (params claim, MACs claim)
README_COUNTS = {"minlat_cnn_cifar10": ("minlat.params.cnn.cifar10", "minlat.macs.cnn.cifar10"),
                 "minlat_rnn_cifar10": ("minlat.params.rnn.cifar10", "minlat.macs.rnn.cifar10")}
PAPER_T1 = ("minlat.cifar100.cnn.T1", "minlat.cifar100.rnn.T1", "minlat.cifar10.cnn.T1")


# ----------------------------------------------------------------------------- budget
def budget(cfg: dict, seeds) -> str:
    """The training budget of a run config in words, e.g. '1024 fashion_mnist images x 1 epoch(s),
    batch 64, 1 seed(s); 500 test images'."""
    d = cfg["data"]
    return (f"{d.get('subset') or 'all'} {d['name']} images x {cfg['epochs']} epoch(s), batch {d['batch_size']}, "
            f"{len(list(seeds))} seed(s); {d.get('test_subset') or 'all'} test images")


# ----------------------------------------------------------------------------- unit checks
def unit_checks() -> dict:
    """The projections, the window merge and the surrogate, measured in float64 (seed 0).

    ``P(0,0)``: largest |P(0, 0)| over sin/avg/none; ``max |P_sin|`` on 200k arguments of scale 40;
    ``slope error``: max |dP_sin/da at a=0 - (pi/2) cos(pi b/4)|; ``merge error``: max |merge(split(x)) - x|;
    ``surrogate on (0,1)``: the rectangle surrogate is non-zero exactly for u in (0, 1)."""
    torch.manual_seed(0)
    z = torch.zeros(5, dtype=torch.float64)
    a, b = 40 * torch.randn(200000, dtype=torch.float64), 40 * torch.randn(200000, dtype=torch.float64)
    p0 = max(float(get_projection(n)(z, z).abs().max()) for n in ("sin", "avg", "none"))
    bound = float(get_projection("sin")(a, b).abs().max())
    a0 = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    bb = torch.linspace(-3, 3, 7, dtype=torch.float64)
    (g,) = torch.autograd.grad(get_projection("sin")(a0, bb).sum(), a0)
    slope_err = float((g - np.pi / 2 * torch.cos(np.pi * bb / 4)).abs().max())
    merge_err = 0.0
    for size, grid, ov in [(4, 2, False), (4, 2, True), (8, 2, True), (16, 2, True), (8, 4, False), (16, 1, False)]:
        x = torch.randn(2, size, size, 3, dtype=torch.float64)
        wg = WindowGrid(size, grid, overlap=ov)
        merge_err = max(merge_err, float((wg.merge(wg.split(x)) - x).abs().max()))
    u = torch.arange(-5000, 15001, dtype=torch.float64) / 10000   # exact grid: 0 and 1 are on it
    mask = Rectangle(1.0).derivative(u - 0.5)
    surrogate_ok = bool(torch.equal(mask > 0, (u > 0) & (u < 1)))
    return {"P(0,0)": p0, "max |P_sin|": bound, "slope error": slope_err, "merge error": merge_err,
            "surrogate on (0,1)": surrogate_ok}


def unit_claims(checks: dict) -> list[dict]:
    """The correctness claims of ``unit_checks()``: ``{"id", "statement", "measured", "threshold", "holds"}``."""
    c = checks
    rows = [("minlat.projection_zero", "P(0, 0) = 0 for the sine, average and identity projections",
             c["P(0,0)"], "== 0", c["P(0,0)"] == 0),
            ("minlat.projection_bounded", "|P_sin| <= 2 (200k random arguments of scale 40)", c["max |P_sin|"],
             "<= 2", c["max |P_sin|"] <= 2.0),
            ("minlat.projection_slope", "dP_sin/da at a = 0 equals (pi/2) cos(pi b / 4)", c["slope error"],
             "< 1e-12", c["slope error"] < 1e-12),
            ("minlat.window_merge_exact", "merging the split windows returns the map (with and without overlap)",
             c["merge error"], "== 0", c["merge error"] == 0.0),
            ("minlat.surrogate_rectangle", "the surrogate gradient is 1 exactly on u in (0, 1)",
             c["surrogate on (0,1)"], "True", c["surrogate on (0,1)"])]
    return [dict(zip(("id", "statement", "measured", "threshold", "holds"), r)) for r in rows]


# ----------------------------------------------------------------------------- reference-size models
def _built(cfg: dict):
    torch.manual_seed(0)
    model, _ = build(cfg, "cpu")
    return model.eval()


def reference_counts(cfg: dict) -> dict:
    """Parameters (total, used) and MACs (dense, ptflops convention) of a config's model, in millions,
    on one random 3x32x32 image (seed 0)."""
    model = _built(cfg)
    pt = ptflops_convention(model, torch.rand(1, 3, 32, 32))
    c = parameter_counts(model)
    return {"config": cfg["name"], "params total (M)": c["total"] / 1e6, "params used (M)": c["used"] / 1e6,
            "dense MACs (M)": pt["dense_macs"] / 1e6, "ptflops convention (MMac)": pt["total"] / 1e6}


def counts_table(counts: list[dict]) -> pd.DataFrame:
    """``reference_counts`` rows beside the README's parameter and MAC counts (NaN where none)."""
    t = pd.DataFrame(counts)
    t["README params (M)"] = [published(README_COUNTS[n][0])["value"] if n in README_COUNTS else np.nan for n in t.config]
    t["README MMac"] = [published(README_COUNTS[n][1])["value"] if n in README_COUNTS else np.nan for n in t.config]
    return t


def reference_count_claims(table: pd.DataFrame) -> list[dict]:
    """One correctness claim per README config: total parameters and ptflops MACs equal to 2 decimals."""
    out = []
    for n, (pk, mk) in README_COUNTS.items():
        row = table.set_index("config").loc[n]
        variant = n.split("_")[1]
        ok = round(row["params total (M)"], 2) == published(pk)["value"] and \
            round(row["ptflops convention (MMac)"], 2) == published(mk)["value"]
        out.append({"id": f"minlat.reference_counts_{variant}",
                    "statement": f"the {variant.upper()} CIFAR-10 config reproduces the README's parameter and MAC counts",
                    "measured": {"value": row["params total (M)"], "mmac": row["ptflops convention (MMac)"],
                                 "used_params_m": row["params used (M)"]},
                    "threshold": f"== {published(pk)['value']} M and {published(mk)['value']} MMac (2 decimals)",
                    "holds": ok, "published": {"params": published(pk), "macs": published(mk)}})
    return out


#: the released reference model whose energy bound the notebook computes (untrained: counts only)
REFERENCE_CNN = "minlat_cnn_cifar10"


def full_model_bound(cfg: dict, images: int = 4) -> dict:
    """E_ANN / E_SNN bound of an untrained reference model on ``images`` random images in [0, 2)
    (seed 0): ``{"bound", "real_macs_m", "macs_m", "parts": [{part, macs, real_valued, ann_share}]}``."""
    model = _built(cfg)
    x = torch.rand(images, 3, 32, 32) * 2
    with torch.no_grad(), EnergyCounter(model, layer_part) as ec:
        model(x)
    s, sh = ec.summary(images), shares(ec.table(images))
    return {"bound": s["bound_ann_over_snn"], "real_macs_m": s["real_macs"] / 1e6, "macs_m": s["macs"] / 1e6,
            "parts": sh[["part", "macs", "real_valued", "ann_share"]].to_dict("records")}


# ----------------------------------------------------------------------------- accuracy
def accuracy_tables(records: dict[str, list[dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run test accuracy (``variant`` -> records) and its mean/sd/count per variant, beside the
    paper's T = 1 numbers (CIFAR-100 CNN/RNN, README CIFAR-10 CNN; percent)."""
    acc = pd.DataFrame([{"variant": v, "seed": r["seed"], "test_acc": r["final"]["test_acc"],
                         "train_s": r["wall_time_s"], "dataset": r["dataset"],
                         "train_samples": r["config"]["data"]["subset"]} for v, recs in records.items() for r in recs])
    summary = acc.groupby("variant")["test_acc"].agg(["mean", "std", "count"])
    summary["paper (CIFAR-100, T=1) %"] = [published(PAPER_T1[0])["value"], published(PAPER_T1[1])["value"]]
    summary["README CNN CIFAR-10 %"] = [published(PAPER_T1[2])["value"], np.nan]
    return acc, summary


def published_t1() -> pd.DataFrame:
    return pd.DataFrame([{"published": k, **published(k)} for k in PAPER_T1])


def eval_spread(records: list[dict], seeds, test_subset: int) -> list[dict]:
    """Test accuracy of every finished run under every evaluation seed (cached):
    ``[{"seed" (training), "eval_seed", "test_acc"}]``."""
    out = []
    for r in records:
        key = {"run": r["config_hash"], "seeds": list(seeds), "subset": test_subset}
        for e in memo("minlat_eval_seeds", key, lambda r=r: evaluate_seeds(r, seeds, test_subset=test_subset)):
            out.append({"seed": r["seed"], **e})
    return out


def spread_per_run(spread: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd, min and max of the accuracy over evaluation seeds, per variant and training seed."""
    return spread.groupby(["variant", "seed"])["test_acc"].agg(["mean", "std", "min", "max"]).reset_index()


def plot_eval_spread(spread: pd.DataFrame):
    """Test accuracy under every evaluation seed, one column per trained run (variant, training seed)."""
    runs = spread[["variant", "seed"]].drop_duplicates().sort_values(["variant", "seed"]).itertuples(index=False)
    runs = list(runs)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(runs) + 1.5), 3.2))
    variants = sorted(spread.variant.unique())
    for i, (v, seed) in enumerate(runs):
        d = spread[(spread.variant == v) & (spread.seed == seed)]
        ax.scatter([i] * len(d), 100 * d["test_acc"], s=14, alpha=0.7, color=f"C{variants.index(v) % 10}")
    ax.set_xticks(range(len(runs)), [f"{v}\nseed {seed}" for v, seed in runs])
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ax.set(ylabel="test accuracy (%)", xlabel="trained run (variant, training seed)",
           title=f"{spread.eval_seed.nunique()} evaluation seeds per trained run")
    return fig


# ----------------------------------------------------------------------------- ablations
def ablation_frame(records: list[dict], variants: list[str]) -> pd.DataFrame:
    """One row per ablation run: ``variant`` (``variants[i]`` for ``records[i]``), seed, test_acc,
    train_s and mean firing rate."""
    if len(records) != len(variants):
        raise ValueError(f"{len(records)} ablation records for {len(variants)} variant labels")
    return pd.DataFrame([{"variant": v, "seed": r["seed"], "test_acc": r["final"]["test_acc"],
                          "train_s": r["wall_time_s"], "rates": r["final"].get("mean_firing_rate")}
                         for v, r in zip(variants, records)])


def ablation_table(abl: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd, seeds, median training time, firing rate and the difference to the first (base)
    variant in percentage points, one row per variant in order."""
    t = abl.groupby("variant", sort=False).agg(mean=("test_acc", "mean"), sd=("test_acc", "std"),
                                               seeds=("test_acc", "count"), train_s=("train_s", "median"),
                                               firing_rate=("rates", "mean"))
    t["vs base (pp)"] = 100 * (t["mean"] - t.iloc[0]["mean"])
    return t


def plot_ablations(abl: pd.DataFrame, table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7, 3.2))
    order = list(table.index)
    for i, v in enumerate(order):
        d = abl[abl.variant == v]
        ax.scatter([i] * len(d), 100 * d["test_acc"], s=14, color="C0", alpha=0.6)
        ax.errorbar(i, 100 * table.loc[v, "mean"], yerr=100 * (table.loc[v, "sd"] if len(d) > 1 else 0),
                    fmt="o", color="k", capsize=3)
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("variant (one change to the base CNN run)")
    ax.set_title(f"T = 1 ablations (dots: seeds; black: mean ± sd over {abl.seed.nunique()} seeds)")
    return fig


def compare(abl: pd.DataFrame, a: str, b: str) -> tuple[Verdict, dict]:
    """Variant ``a`` better than ``b`` in test accuracy, paired by training seed
    (``decide_comparison``): the verdict and ``{"a", "b" (means), "seeds"}``."""
    da = abl[abl.variant == a].set_index("seed")["test_acc"]
    db = abl[abl.variant == b].set_index("seed")["test_acc"]
    if len(da) == 0 or len(db) == 0:
        raise ValueError(f"no ablation runs for variant {a if len(da) == 0 else b!r}")
    if sorted(da.index) != sorted(db.index):
        raise ValueError(f"variants {a!r} and {b!r} were not run with the same seeds: {sorted(da.index)} vs {sorted(db.index)}")
    seeds = sorted(da.index)
    v = decide_comparison([da[s] for s in seeds], [db[s] for s in seeds], paired=True)
    return v, {"a": float(da.mean()), "b": float(db.mean()), "seeds": len(seeds)}


# ----------------------------------------------------------------------------- firing rates
def firing_rate_table(records: list[dict]) -> pd.DataFrame:
    """Mean and sd over runs of the spike probes' firing rates (``rate:`` metrics of the records)."""
    rates = tidy(records)
    rates = rates[rates.metric.str.startswith("rate:")].copy()
    rates["probe"] = rates.metric.str.replace("rate:", "", regex=False).str.replace("stages.0.", "block ", regex=False) \
        .str.replace(".mixer.probe_", ": ", regex=False)
    return rates.groupby("probe")["value"].agg(["mean", "std"])


def plot_firing_rates(table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.bar(range(len(table)), table["mean"], yerr=table["std"].fillna(0), capsize=3)
    ax.set_xticks(range(len(table)), table.index, rotation=30, ha="right")
    ax.set(ylabel="spikes per neuron per image (T = 1)", xlabel="spiking mixer probe (block: spike train)",
           title="Firing rate per probe (mean ± sd over trained runs)")
    return fig


# ----------------------------------------------------------------------------- energy
def energy(record: dict, samples: int, part_fn=None, T: int | None = None) -> dict:
    """``energy_of_run`` of a finished run on ``samples`` test images, cached by run and T."""
    key = {"run": record["config_hash"], "samples": samples, "T": T}
    return memo("minlat_energy", key, lambda: energy_of_run(record, samples=samples, T=T, part_fn=part_fn))


def baseline_part(layer: str) -> str:
    """Part of a layer of the multi-step conv SNN: its first conv is fed real values."""
    return "conv1 (analog input)" if layer.startswith("features.0") else layer


def energy_table(e_snn: dict, e_multi: dict, e_same: dict, *, cnn: dict, ann: dict, snn: dict, passes: int) -> pd.DataFrame:
    """Energy per image (nJ) of the T = 1 SNN, the same-architecture ANN, the multi-step SNN and the
    backbone run for ``passes`` passes, each relative to the T = 1 SNN, with test accuracy."""
    base = e_snn["summary"]["snn_pj"]
    e = {"T=1 SNN (ours)": (base, cnn["final"]["test_acc"]),
         "same-architecture ANN": (e_snn["summary"]["ann_pj"], ann["final"]["test_acc"]),
         f"multi-step conv SNN (BPTT, T={snn['T']})": (e_multi["summary"]["snn_pj"], snn["final"]["test_acc"]),
         f"same backbone, {passes} passes": (e_same["summary"]["snn_pj"], None)}
    return pd.DataFrame([{"network": k, "energy (nJ/image)": v / 1e3, "vs T=1 SNN (x)": v / base, "test_acc": a}
                         for k, (v, a) in e.items()])


def plot_energy_parts(part_table: pd.DataFrame, e_multi: dict, T_multi: int):
    fig, ax = plt.subplots(figsize=(6.5, 3))
    left = np.zeros(2)
    for i, (p, r) in enumerate(part_table.set_index("part").iterrows()):
        vals = np.array([r["snn_pj"], r["ann_pj"]]) / 1e3
        ax.barh([0, 1], vals, left=left, label=p, color=f"C{i % 10}")
        left += vals
    ax.barh([2], [e_multi["summary"]["snn_pj"] / 1e3], color="0.5", label="multi-step conv SNN (total)")
    ax.set_yticks([0, 1, 2], ["T=1 SNN", "same-arch ANN", f"conv SNN T={T_multi}"])
    ax.set_xlabel("energy per image (nJ)")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_title("Estimated inference energy per test image, by part")
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False, title="part")
    return fig


# ----------------------------------------------------------------------------- reporting
def timings(records: list[dict]) -> pd.DataFrame:
    """Wall time of training and per batch of each run (measurements, never asserted)."""
    return pd.DataFrame([{"run": r["name"], "seed": r["seed"], "train_s": r["wall_time_s"],
                          "s_per_batch": r["history"][-1]["time_per_batch_s"]} for r in records])


def pp(x) -> str:
    """A fraction as percent with 2 decimals; 'n/a' for None or NaN (e.g. the sd of one seed)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def counts_line(table: pd.DataFrame) -> str:
    """Summary line of the first two rows of ``counts_table`` (the CIFAR-10 CNN and RNN)."""
    c0, c1 = table.iloc[0], table.iloc[1]
    return (f"- Reference counts reproduced: CNN {c0['params total (M)']:.2f} M params / "
            f"{c0['ptflops convention (MMac)']:.2f} MMac, RNN {c1['params total (M)']:.2f} M / "
            f"{c1['ptflops convention (MMac)']:.2f} MMac; used parameters {c0['params used (M)']:.2f} M "
            f"and {c1['params used (M)']:.2f} M.")


def comparison_line(what: str, entry: dict) -> str:
    """One summary line of a judged comparison: the difference, its interval and the verdict."""
    ci = entry.get("interval")
    ci_text = f"95% interval [{pp(ci[0])}, {pp(ci[1])}] pp" if ci else f"no interval from {entry['n_seeds']} seed(s)"
    return f"- {what}: {100 * entry['measured']['value']:+.2f} pp ({ci_text}) -> {entry['verdict']} here."
