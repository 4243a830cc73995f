"""The figures of SPIDE's notebook, from the tables of ``snnlib.studies.spide``; each returns a
matplotlib ``Figure`` (save it with ``Study.figure``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .plotting import handles_for, integer_ticks, legend_below, legend_right, plain_log_labels
from .spide import SPIDE_RESET, ZERO_RESET

RESET_NAMES = {"zero": "u_rest = 0", "modified": "u_rest = -V_th (SPIDE)"}


def rate_error(rate: pd.DataFrame):
    """Mean, max and signed rate error against T (rows of ``spide.rate_error``), one line per reset."""
    rate = rate.assign(reset=rate.variant.map(RESET_NAMES))
    palette = dict(zip(dict.fromkeys(rate.reset), sns.color_palette("colorblind")))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, col, title in zip(axes, ["mean_abs", "max_abs", "signed_mean"],
                              ["mean $|a_T - a^*|$", "max $|a_T - a^*|$", "signed mean $a_T - a^*$"]):
        sns.lineplot(data=rate, x="T", y=col, hue="reset", palette=palette, marker="o", ax=ax, legend=False)
        ax.set(xscale="log", title=title, xlabel="time steps T (log scale)",
               ylabel="rate error (spikes / step)" + (", log scale" if col != "signed_mean" else ""))
        plain_log_labels(ax, "x")
        if col != "signed_mean":
            ax.set(yscale="log")
        else:
            ax.axhline(0, color="k", lw=0.8)
    fig.tight_layout()
    legend_below(fig, *handles_for(palette), title="reset after a spike")
    return fig


def _spide_rows(sweep: pd.DataFrame) -> pd.DataFrame:
    main = sweep[sweep.backward_reset == SPIDE_RESET].copy()
    main["s"] = main.scale.map(lambda v: f"s = {v:g}")
    return main


def grad_cosine(sweep: pd.DataFrame):
    """Cosine with the exact gradients against T_b (at the fixed point; at the SNN's rates) and the
    backward firing rate, one line per scale (rows of ``spide.sweep_rows``, SPIDE's reset)."""
    main = _spide_rows(sweep)
    pal = dict(zip(sorted(main.s.unique(), key=lambda t: float(t[4:])), sns.color_palette("colorblind")))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    d = main[main.state == "exact"]
    sns.lineplot(data=d, x="T_b", y="cos_ide_exact", hue="s", palette=pal, marker="o", ax=axes[0], legend=False)
    axes[0].set(title="at the exact fixed point\n(vs IDE's exact gradient)")
    snn = main[main.state == "snn"].melt(id_vars=["T_b", "s"], value_vars=["cos_ide_exact", "cos_layer_exact"],
                                          var_name="reference", value_name="cosine")
    snn["reference"] = snn.reference.map({"cos_ide_exact": "IDE exact (through f)",
                                          "cos_layer_exact": "same per-layer system, exact"})
    refs = {"IDE exact (through f)": "", "same per-layer system, exact": (4, 2)}
    sns.lineplot(data=snn, x="T_b", y="cosine", hue="s", style="reference", palette=pal, dashes=refs, marker="o",
                 ax=axes[1], legend=False)
    axes[1].set(title="at the SNN's rates (T = 30)\n(solid: vs IDE's exact, dashed: vs same per-layer system)")
    low = min(0.7, float(main[["cos_ide_exact", "cos_layer_exact"]].min().min()) - 0.02)
    for ax in axes[:2]:
        ax.set(xscale="log", ylim=(low, 1.005), xlabel="backward steps $T_b$ (log scale)",
               ylabel="cosine of $\\partial L/\\partial\\theta$ with the exact")
        ax.axhline(0.99, color="k", lw=0.8, ls=":")
    sns.lineplot(data=d, x="T_b", y="backward_firing", hue="s", palette=pal, marker="o", ax=axes[2], legend=False)
    axes[2].set(xscale="log", ylabel="spikes / neuron / step", xlabel="backward steps $T_b$ (log scale)",
                title="backward firing rate\n(saturation at large s)")
    fig.tight_layout()
    handles, labels = handles_for(pal)
    handles += [plt.Line2D([], [], color="k", lw=0.8, ls=":")]
    legend_below(fig, handles, labels + ["cosine 0.99"], ncol=5, title="scale s")
    return fig


def beta_error(sweep: pd.DataFrame):
    """Relative error of the backward's beta at the exact fixed point against T_b: every scale with
    SPIDE's reset, s = 10 with reset to 0, and a 1/T_b guide."""
    ex = _spide_rows(sweep)
    ex = ex[ex.state == "exact"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for s, d in ex.groupby("scale"):
        ax.plot(d.T_b, d.beta_rel_err, marker="o", label=f"s = {s:g}")
    rb = sweep[sweep.backward_reset == ZERO_RESET]
    ax.plot(rb.T_b, rb.beta_rel_err, marker="s", ls="--", color="gray", label="s = 10, backward reset to 0")
    tb = np.array(sorted(ex.T_b.unique()), dtype=float)
    ax.plot(tb, 3.0 / tb, color="k", lw=0.8, ls=":", label="$\\propto 1/T_b$")
    ax.set(xscale="log", yscale="log", xlabel="backward steps $T_b$ (log scale)",
           ylabel="relative error $\\|\\hat\\beta - \\beta\\| / \\|\\beta\\|$ (log scale)",
           title="backward error at the exact fixed point")
    legend_right(ax, title="scale s")
    return fig


def end_to_end(e2e: pd.DataFrame):
    """Cosine with the gradient at a* against the forward's T, one line per T_b, and IDE's exact
    solve at the T-step state (rows of ``spide.e2e_rows``)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    e2e = e2e.assign(backward=e2e.T_b.map(lambda t: f"SPIDE, $T_b$ = {t:g}"))
    sns.lineplot(data=e2e, x="T", y="cos_true", hue="backward", marker="o", ax=ax, palette="crest")
    one = e2e.drop_duplicates("T")
    ax.plot(one["T"], one.cos_ide_T_vs_true, color="k", ls="--", marker="x", label="IDE exact solve at the T-step state")
    ax.set(xscale="log", xlabel="forward time steps T (log scale)", ylabel="cosine with the gradient at $a^*$",
           title="spiking forward + spiking backward")
    plain_log_labels(ax, "x")
    legend_right(ax, title="backward")
    return fig


def training_curves(df: pd.DataFrame):
    """Test accuracy, training accuracy and training loss per epoch by method (a ``tidy`` table)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    curves = df[df.metric.isin(["test_acc", "train_loss", "train_acc"])]
    for ax, m, t in zip(axes, ["test_acc", "train_acc", "train_loss"],
                        ["test accuracy", "training accuracy", "training loss"]):
        sns.lineplot(data=curves[curves.metric == m], x="epoch", y="value", hue="method", marker="o", errorbar="sd",
                     ax=ax, legend=ax is axes[0])
        ax.set(title=t, ylabel=t + (" (cross-entropy, nats)" if m == "train_loss" else " (fraction)"))
        integer_ticks(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].get_legend().remove()
    fig.tight_layout()
    legend_below(fig, handles, labels, title="method (mean ± sd over seeds)")
    return fig


def training_firing(fire: pd.DataFrame):
    """Firing rate per epoch, by layer and (method, phase) (rows of ``spide.training_firing``)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=fire.assign(series=fire.method + " " + fire.phase), x="epoch", y="rate", hue="layer",
                 style="series", markers=True, errorbar="sd", ax=ax)
    ax.set(ylabel="spikes per neuron per step", xlabel="epoch",
           title="training firing rates (SPIDE: forward and backward; IDE: forward)")
    integer_ticks(ax)
    legend_right(ax)
    return fig
