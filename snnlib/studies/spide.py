"""SPIDE's study (notebook 02): gradient quality of the spiking backward, the rate error of the
modified reset, SPIDE against exact-implicit IDE in training, operation counts and memory.

The measurements take an ``EquilibriumNet`` with one stream (``snnlib.models.spide``) and a batch
and return plain rows (lists of dicts) for ``pandas.DataFrame``. Cosines and errors are over the
spiking network's parameters (input map, loop maps, feedback); the non-spiking readout's gradient
is the same for every backward and is left out. The ``*_summary`` functions turn those tables into
the numbers behind the notebook's claims.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ..equilibrium.feedback import Simulation
from ..equilibrium.implicit import EquilibriumContext, equilibrium_forward, implicit_rates
from ..equilibrium.solvers import get_solver
from ..equilibrium.spiking_backward import (apply_rate_gradients, cosine, dense_solve, layer_masks,
                                            stream_transposes, ternary_solve)
from ..experiments.published import published
from ..metrics.ops import E_AC_PJ, E_MAC_PJ
from ..metrics.spike_ops import energy_rows, spide_op_counts
from ..models import build_model
from .measure import load_trained, memory_vs_T

FMNIST = {"channels": 1, "size": (28, 28), "num_classes": 10}
SMALL = {"channels": 1, "size": (4, 5), "num_classes": 5}
SPIDE_RESET = "thresholds +-0.5, reset to -+0.5 (SPIDE)"
ZERO_RESET = "thresholds +-1, reset to 0"


# -- the networks and batches of the notebook ------------------------------------------------------
def in_float64(fn):
    """``fn`` wrapped to run with float64 as the default dtype (equivalence checks), then restore it."""
    def wrapped(*args, **kw):
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            return fn(*args, **kw)
        finally:
            torch.set_default_dtype(old)
    return wrapped


def small_net(seed: int = 0, **kw):
    """The small float64 feedback net of the gradient checks: 20 inputs -> 48 -> 32, feedback 32 -> 48."""
    torch.manual_seed(seed)
    return build_model({"name": "spide_fc", "hidden": [48, 32], "fb_bound": 4.0, **kw}, SMALL).double()


def small_batch(B: int, seed: int = 1):
    """Synthetic inputs for ``small_net``: x ``[B, 1, 4, 5]`` float64 (standard normal), y ``[B]`` in 0..4."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 1, 4, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (B,), generator=g)


def fmnist_net(hidden, seed: int = 0):
    """An untrained FC feedback net 784 -> hidden (feedback from the last to the first), float64."""
    torch.manual_seed(seed)
    return build_model({"name": "spide_fc", "hidden": list(hidden)}, FMNIST).double()


# -- gradients and states ----------------------------------------------------------------------------
def _drive(net, x, T):
    inputs, events = net.encode(x, T)
    return net.snn.drive(inputs, events=events)


@torch.no_grad()
def exact_state(net, drive, *, tol: float = 1e-12, max_iter: int = 500) -> Simulation:
    """The fixed point a* = f(a*) of the rate map (Broyden to ``tol``) and every layer's rate there,
    as a ``Simulation`` (``T = 0``, firing NaN): the state an infinitely long simulation reaches."""
    snn = net.snn
    like = snn.simulate(drive, drive.T or 1).last

    def f(vec):
        return snn.pack(snn.rate_map(snn.unpack(vec, like), drive))

    a, stat = get_solver("broyden")(f, snn.pack(like).zero_(), max_iter=max_iter, tol=tol, stop_mode="abs")
    if stat.abs_lowest > 1e3 * tol * max(1.0, a.numel() ** 0.5):
        raise RuntimeError(f"the rate map's fixed point was not found (residual {stat.abs_lowest:.3g}); "
                           "the feedback is probably not contractive")
    layers = snn.rate_map(snn.unpack(a, like), drive, all_layers=True)
    rates = [[t.detach() for t in row] for row in layers]
    return Simulation(rates=rates, firing=[[math.nan] * len(r) for r in rates], T=0, names=snn.layer_names())


def _state(net, drive, T, state):
    if state == "snn":
        with torch.no_grad():
            return net.snn.simulate(drive, T)
    if state == "exact":
        return exact_state(net, drive)
    raise ValueError(f"state must be 'snn' (a T-step simulation) or 'exact' (the fixed point), got {state!r}")


def snn_parameters(net) -> list:
    """The trainable parameters of the spiking layers (the readout left out)."""
    return [p for p in net.snn.parameters() if p.requires_grad]


def _grads(params) -> list:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def batch_gradients(net, x, y, *, T: int, backward: str, state: str = "snn", **options) -> list:
    """Gradients of the mean cross-entropy w.r.t. the spiking layers' parameters for one batch.

    ``backward``: any registered implicit backward ('exact', 'broyden', 'spike', 'spide_exact',
    ...). ``state``: 'snn' (the T-step simulation's rates, as in training) or 'exact' (the rate
    map's fixed point: the backward alone is then tested). ``options`` go to the backward.
    """
    snn = net.snn
    net.zero_grad(set_to_none=True)
    drive = _drive(net, x, T)
    sim = _state(net, drive, T, state)
    a = snn.pack(sim.last).detach().requires_grad_()
    fa = snn.pack(snn.rate_map(snn.unpack(a, sim.last), drive))
    ctx = EquilibriumContext(snn, drive, sim, [t.shape for t in sim.last])
    z = implicit_rates(fa, a, backward=backward, context=ctx, warn_tol=math.inf, **options)
    F.cross_entropy(net.readout(snn.unpack(z, sim.last)), y).backward()
    out = _grads(snn_parameters(net))
    net.zero_grad(set_to_none=True)
    return out


def _grad_at_a(net, sim, y) -> torch.Tensor:
    a = sim.last[0].detach().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(net.readout([a]), y), a)
    return g


def spike_gradient_sweep(net, x, y, *, T: int, T_bs, scales, state: str = "snn", v_th_b: float = 0.5,
                         u_rest_b: float | None = None) -> list[dict]:
    """Cosine between the spike-based gradient and the exact implicit ones, for every (s, T_b).

    References, computed on the same batch and forward state: ``ide_exact`` (IDE's dense solve of
    (I - J^T) beta = g at the state, backpropagated through f) and ``layer_exact`` (SPIDE's
    per-layer system with the same masks and rates, solved without spikes). One ternary run of
    max(T_bs) steps per scale gives every smaller T_b (the first k steps do not depend on T_b).
    Rows: scale, T_b, cos_ide_exact, cos_layer_exact, rel_err_layer_exact (||g_s - g|| / ||g||),
    beta_rel_err (backward signed rates / s against the exact per-layer beta), backward_firing,
    saturated.
    """
    snn = net.snn
    T_bs = sorted({int(t) for t in T_bs})
    ide_ref = batch_gradients(net, x, y, T=T, backward="exact", state=state)
    layer_ref = batch_gradients(net, x, y, T=T, backward="spide_exact", state=state)
    drive = _drive(net, x, T)
    sim = _state(net, drive, T, state)
    rates = sim.rates[0]
    g = _grad_at_a(net, sim, y)
    masks = layer_masks(rates)
    tr = stream_transposes(snn.streams[0], [r.shape for r in rates])
    beta_exact, _ = dense_solve(g, tr, masks, V=snn.map_divisor)
    ref_flat = torch.cat([b.reshape(-1) for b in beta_exact])
    ref = torch.cat([b.reshape(-1) for b in layer_ref])
    params = snn_parameters(net)
    n = [m.numel() for m in masks]
    rows = []
    for s in scales:
        sol = ternary_solve(g, tr, masks, T_b=T_bs[-1], V=snn.map_divisor, scale=float(s), v_th_b=v_th_b,
                            u_rest_b=u_rest_b, leak=snn.leak, checkpoints=T_bs[:-1])
        for T_b in T_bs:
            part = sol if T_b == T_bs[-1] else sol.history[T_b]
            net.zero_grad(set_to_none=True)
            apply_rate_gradients(snn, drive, rates, masks, part.beta)
            gs = _grads(params)
            diff = torch.cat([(a - b).reshape(-1) for a, b in zip(gs, layer_ref)])
            bdiff = torch.cat([(a - b).reshape(-1) for a, b in zip(part.beta, beta_exact)])
            rows.append({"scale": float(s), "T_b": T_b, "state": state, "T": T if state == "snn" else None,
                         "cos_ide_exact": cosine(gs, ide_ref), "cos_layer_exact": cosine(gs, layer_ref),
                         "rel_err_layer_exact": float(diff.norm() / ref.norm()),
                         "beta_rel_err": float(bdiff.norm() / ref_flat.norm()),
                         "backward_firing": sum(f * k for f, k in zip(part.firing, n)) / sum(n),
                         "saturated": sum(f * k for f, k in zip(part.saturated, n)) / sum(n)})
    net.zero_grad(set_to_none=True)
    return rows


def end_to_end_cosine(net, x, y, *, Ts, T_bs, scale: float) -> list[dict]:
    """Spike-based gradient from a T-step forward and a T_b-step backward against IDE's exact
    gradient at the true fixed point a*. Rows: T, T_b, cos_true, cos_ide_exact_at_T (IDE's exact
    solve at the same T-step state), cos_ide_T_vs_true, forward_err (mean |a_T - a*| over all layers)."""
    truth = batch_gradients(net, x, y, T=1, backward="exact", state="exact")
    star = exact_state(net, _drive(net, x, 1)).rates[0]
    rows = []
    for T in Ts:
        ide_T = batch_gradients(net, x, y, T=T, backward="exact", state="snn")
        with torch.no_grad():
            sim = net.snn.simulate(_drive(net, x, T), T)
        err = torch.cat([(a - b).abs().reshape(-1) for a, b in zip(sim.rates[0], star)]).mean()
        for T_b in T_bs:
            gs = batch_gradients(net, x, y, T=T, backward="spike", state="snn", T_b=int(T_b), scale=float(scale))
            rows.append({"T": int(T), "T_b": int(T_b), "cos_true": cosine(gs, truth),
                         "cos_ide_exact_at_T": cosine(gs, ide_T), "cos_ide_T_vs_true": cosine(ide_T, truth),
                         "forward_err": float(err)})
    return rows


def reset_variants(V: float) -> dict:
    """Forward neuron settings with the same V = v_th - u_rest (so the same fixed point):
    'zero' (threshold V, reset to 0) and 'modified' (threshold V/2, reset to -V/2, SPIDE)."""
    return {"zero": (float(V), 0.0), "modified": (V / 2.0, -V / 2.0)}


def rate_error(net, x, Ts, *, variants=("zero", "modified")) -> list[dict]:
    """|a_T - a*| over every layer's neurons for each reset variant (``reset_variants``) and T.

    Rows: variant, u_rest, v_th, T, mean_abs, max_abs, signed_mean (a_T - a* averaged). The
    network's own v_th/u_rest are restored afterwards."""
    snn = net.snn
    star = exact_state(net, _drive(net, x, 1)).rates[0]
    saved = (snn.v_th, snn.u_rest)
    table = reset_variants(snn.V)
    rows = []
    try:
        for name in variants:
            snn.v_th, snn.u_rest = table[name]
            for T in Ts:
                with torch.no_grad():
                    sim = snn.simulate(_drive(net, x, T), int(T))
                d = torch.cat([(a - b).reshape(-1) for a, b in zip(sim.rates[0], star)])
                rows.append({"variant": name, "v_th": snn.v_th, "u_rest": snn.u_rest, "T": int(T),
                             "mean_abs": float(d.abs().mean()), "max_abs": float(d.abs().max()),
                             "signed_mean": float(d.mean())})
    finally:
        snn.v_th, snn.u_rest = saved
    return rows


def ide_backward_steps(net, x, y, *, T: int, max_iter: int = 30, tol: float = 1e-6) -> int:
    """Iterations IDE's Broyden backward takes on one batch (for the energy comparison)."""
    res = equilibrium_forward(net, x, T, backward="broyden", max_iter=max_iter, tol=tol, warn_tol=math.inf)
    F.cross_entropy(res.logits, y).backward()
    net.zero_grad(set_to_none=True)
    return int(res.record.stats["nstep"])


# -- the notebook's tables ------------------------------------------------------------------------------
@in_float64
def rate_rows(x, Ts) -> list[dict]:
    """``rate_error`` of the float64 FC feedback net 784 -> 128 (seed 0) on images ``x``."""
    return rate_error(fmnist_net([128]), x.double(), Ts)


@in_float64
def sweep_rows(T_bs, scales, B: int) -> list[dict]:
    """The gradient sweep of ``small_net`` on ``small_batch(B)`` with T = 30: at the exact fixed
    point and at the SNN's state with SPIDE's backward reset, and at the fixed point with thresholds
    +-1 and reset to 0 (s = 10). Rows of ``spike_gradient_sweep`` plus ``backward_reset`` and ``net``."""
    net = small_net()
    x, y = small_batch(B)
    rows = [{**r, "backward_reset": SPIDE_RESET} for state in ("exact", "snn")
            for r in spike_gradient_sweep(net, x, y, T=30, T_bs=T_bs, scales=scales, state=state)]
    rows += [{**r, "backward_reset": ZERO_RESET} for r in
             spike_gradient_sweep(net, x, y, T=30, T_bs=T_bs, scales=[10.0], state="exact", v_th_b=1.0, u_rest_b=0.0)]
    return [{**r, "net": "small float64 FC"} for r in rows]


@in_float64
def fmnist_sweep_rows(x, y, T_bs=(30, 100, 250), scales=(30.0, 100.0, 300.0, 1000.0, 3000.0)) -> list[dict]:
    """The gradient sweep of the untrained 784 -> 256 -> 128 net on images ``x``, SNN state T = 30."""
    return spike_gradient_sweep(fmnist_net([256, 128]), x.double(), y, T=30, T_bs=list(T_bs), scales=list(scales),
                                state="snn")


@in_float64
def e2e_rows(Ts, T_bs, B: int, scale: float = 10.0) -> list[dict]:
    """``end_to_end_cosine`` of ``small_net`` on ``small_batch(B)``."""
    x, y = small_batch(B)
    return end_to_end_cosine(small_net(), x, y, Ts=Ts, T_bs=T_bs, scale=scale)


def train_overrides(base: str, seed: int, train: dict) -> dict:
    """Overrides of ``configs/runs/<base>.yaml`` for the notebook's training comparison; ``train``:
    epochs, subset, test_subset, batch_size, T (and T_b, scale for SPIDE's ``spide_fmnist_fc``)."""
    over = {"name": f"{base}_nb02", "seed": seed, "epochs": train["epochs"], "T": train["T"],
            "data": {"subset": train["subset"], "test_subset": train["test_subset"], "batch_size": train["batch_size"]}}
    if base == "spide_fmnist_fc":
        over["method_args"] = {"T_b": train["T_b"], "scale": train["scale"], "legacy_scale": False, "v_th_b": 0.5}
    return over


def final_accuracy(records) -> dict:
    """The last epoch's test accuracy of every run, by seed: ``{seed: acc}``."""
    return {int(r["seed"]): float(r["history"][-1]["test_acc"]) for r in records}


def training_firing(records) -> list[dict]:
    """Per-epoch training firing rates from run records (``step_stats`` of ``spide`` and ``ide``).

    Rows: name, method, seed, epoch, layer, phase ('forward' or 'backward'), rate (spikes per
    neuron per step, averaged over the epoch's training steps)."""
    rows = []
    for r in records:
        for h in r["history"]:
            rates = (h.get("step_stats") or {}).get("rates") or {}
            for key, value in rates.items():
                phase, _, layer = key.partition(".") if key.split(".")[0] in ("forward", "backward") \
                    else ("forward", "", key)
                rows.append({"name": r.get("name") or r["method"], "method": r["method"], "seed": r["seed"],
                             "epoch": h["epoch"], "layer": layer, "phase": phase, "rate": float(value)})
    return rows


def energy_tables(spide_record: dict, ide_record: dict, x, y, train: dict, conv_channels: int) -> dict:
    """Per-sample ``spide_op_counts`` (and ``energy_rows``) of one training step on ``x``, ``y``: the
    trained SPIDE net of ``spide_record`` (IDE's reference at the mean Broyden steps of
    ``ide_record``), and an untrained ConvNet-F with ``conv_channels`` (T = 30, T_b = 100, s = 100).
    Returns ``{"rows": [...], "counts": [fc, conv]}``."""
    model, _, _ = load_trained(spide_record)
    nstep = float(np.mean([h["step_stats"]["solver"]["backward_nstep"] for h in ide_record["history"]]))
    fc = spide_op_counts(model, x, y, T=train["T"], T_b=train["T_b"], scale=train["scale"], ide_nstep=round(nstep))
    torch.manual_seed(0)
    conv = build_model({"name": "spide_convnet_f", "channels": conv_channels, "dropout": 0.0}, FMNIST)
    cv = spide_op_counts(conv, x, y, T=30, T_b=100, scale=100.0, ide_nstep=ide_backward_steps(conv, x, y, T=30))
    rows = [{"network": "FC 784-256-128 (trained)", **r} for r in energy_rows(fc)]
    rows += [{"network": f"ConvNet-F, {conv_channels} channels (untrained)", **r} for r in energy_rows(cv)]
    return {"rows": rows, "counts": [fc, cv]}


def passes_energy(counts: dict) -> dict:
    """Energy (uJ per sample) of the forward and backward passes, weight updates excluded (full
    precision in both): SPIDE's spikes (accumulates) plus its analog input layer and readout (and
    the readout's gradient) against the ANN's forward and input-gradient passes (2x its dense MACs)."""
    ac, mac = E_AC_PJ / 1e6, E_MAC_PJ / 1e6                     # uJ per operation
    spiking = ac * (counts["forward_sops"] + counts["backward_sops"]) + mac * (counts["input_macs"]
                                                                              + 2 * counts["readout_macs"])
    dense = mac * 2 * counts["dense_forward_macs"]
    return {"value": spiking / dense, "spike_passes_uJ": spiking, "ann_passes_uJ": dense}


def memory_vs_Tb(cfg: dict, T_bs, batch) -> list[dict]:
    """``memory_vs_T`` of SPIDE's run config ``cfg`` at its own T, one variant per backward length T_b.
    Rows as ``memory_vs_T`` plus ``T_b``."""
    variants = {}
    for T_b in T_bs:
        c = copy.deepcopy(cfg)
        c["method_args"] = {**c.get("method_args", {}), "T_b": int(T_b)}
        variants[int(T_b)] = c
    return [{"T_b": r["variant"], **r} for r in memory_vs_T(variants, [cfg["T"]], batch=batch)]


# -- claim summaries -------------------------------------------------------------------------------------
def modified_reset_summary(rate: pd.DataFrame) -> dict:
    """Rate error of SPIDE's reset against reset to 0 at T = 30 (or the largest T): ``value`` is
    the ratio of their mean absolute errors."""
    T_ref = 30 if 30 in set(rate["T"]) else int(rate["T"].max())
    r = rate[rate["T"] == T_ref].set_index("variant")
    return {"value": float(r.loc["modified", "mean_abs"] / r.loc["zero", "mean_abs"]), "T": T_ref,
            "mean_abs_u0": float(r.loc["zero", "mean_abs"]), "mean_abs_modified": float(r.loc["modified", "mean_abs"]),
            "signed_u0": float(r.loc["zero", "signed_mean"]), "signed_modified": float(r.loc["modified", "signed_mean"])}


def grad_cosine_summary(sweep: pd.DataFrame) -> tuple[dict, bool]:
    """The best scale's cosine with IDE's exact gradient at the fixed point at T_b = 250 (or the
    largest T_b), and whether its curve is non-decreasing in T_b (to 1e-4). ``(measured, rising)``."""
    main = sweep[sweep.backward_reset == SPIDE_RESET]
    cos_s = main[main.state == "exact"].pivot(index="T_b", columns="scale", values="cos_ide_exact")
    T_claim = 250 if 250 in cos_s.index else int(cos_s.index.max())
    at = cos_s.loc[T_claim].dropna()
    best_s = float(at.idxmax())
    curve = cos_s[best_s].values
    rising = bool(all(b > a - 1e-4 for a, b in zip(curve, curve[1:])))
    snn = main[(main.state == "snn") & (main.scale == best_s) & (main.T_b == T_claim)]
    return ({"value": float(at.max()), "scale": best_s, "T_b": T_claim,
             "by_T_b": {int(k): float(v) for k, v in cos_s[best_s].items()},
             "at_snn_state_T30": float(snn.cos_ide_exact.iloc[0])}, rising)


def saturation_summary(sweep: pd.DataFrame) -> dict:
    """At the largest scale (exact fixed point, SPIDE's reset): the cosine and saturated fraction at
    the largest T_b, and the cosine's gain over the T_b range."""
    ex = sweep[(sweep.backward_reset == SPIDE_RESET) & (sweep.state == "exact")]
    s_max = float(ex.scale.max())
    big = ex[ex.scale == s_max].set_index("T_b")
    return {"value": float(big.cos_ide_exact.iloc[-1]), "scale": s_max, "saturated": float(big.saturated.iloc[-1]),
            "gain_over_T_b": float(big.cos_ide_exact.iloc[-1] - big.cos_ide_exact.iloc[0])}


def backward_reset_summary(sweep: pd.DataFrame) -> dict:
    """Backward error at s = 10 and T_b = 30 (or the smallest T_b): SPIDE's reset against thresholds
    +-1 with reset to 0; ``value`` is their ratio."""
    ex = sweep[sweep.state == "exact"]
    zero = ex[ex.backward_reset == ZERO_RESET].set_index("T_b").beta_rel_err
    spide = ex[(ex.backward_reset == SPIDE_RESET) & (ex.scale == 10.0)].set_index("T_b").beta_rel_err
    T_b = 30 if 30 in zero.index else int(zero.index.min())
    return {"value": float(spide[T_b] / zero[T_b]), "T_b": T_b, "err_modified": float(spide[T_b]),
            "err_reset0": float(zero[T_b])}


def firing_summary(fire: pd.DataFrame) -> tuple[dict, list]:
    """SPIDE's mean training firing rates (over all its rows) and per (phase, layer) means, and the
    backward mean of every seed: ``(measured, backward_by_seed)``."""
    s = fire[fire.method == "spide"]
    bwd = s[s.phase == "backward"]
    measured = {"backward_mean": float(bwd.rate.mean()), "forward_mean": float(s[s.phase == "forward"].rate.mean()),
                "per_layer": {f"{k[0]}.{k[1]}": float(v) for k, v in s.groupby(["phase", "layer"]).rate.mean().items()}}
    return measured, [float(v) for v in bwd.groupby("seed").rate.mean().values]


def memory_summary(mem: pd.DataFrame) -> dict:
    """Total bytes of SPIDE's training step by T_b and their max / min ratio (``value``)."""
    return {"value": float(mem.total_bytes.max() / mem.total_bytes.min()),
            "bytes": dict(zip(mem.T_b.astype(int).tolist(), mem.total_bytes.astype(int).tolist()))}


# -- reference tables --------------------------------------------------------------------------------------
PARAM_REFERENCE = {"spide_mnist_lenet": "spide.params.mnist_lenet", "spide_mnist_convnetf": "spide.params.mnist_convnetf",
                   "spide_cifar10_alexnetf": "spide.params.alexnetf.cifar10",
                   "spide_cifar100_alexnetf": "spide.params.alexnetf.cifar100",
                   "spide_cifar10_cifarnetf": "spide.params.cifarnetf.cifar10",
                   "spide_cifar100_cifarnetf": "spide.params.cifarnetf.cifar100",
                   "spide_cifar10dvs_convnet": "spide.params.dvs_convnet"}
PAPER_RUNS = ["spide_mnist_lenet", "spide_mnist_convnetf", "spide_cifar10_alexnetf", "spide_cifar10_cifarnetf",
              "spide_cifar100_alexnetf", "spide_cifar100_cifarnetf", "spide_cifar10dvs_convnet"]
IDE_README = {"MNIST, IDE's F64C5 (SPIDE: LeNet / ConvNet-F)": "ide.mnist.f64c5.if.T30",
              "CIFAR-10, AlexNet-F": "ide.cifar10.alexnetf.if.T30",
              "CIFAR-10, CIFARNet-F": "ide.cifar10.cifarnetf.if.T30",
              "CIFAR-100, CIFARNet-F": "ide.cifar100.cifarnetf.if.T30"}


def ide_reference_table() -> pd.DataFrame:
    """IDE's README accuracies on SPIDE's structures (T = 30, IF), beside 'not found' for SPIDE."""
    ref = pd.DataFrame([{"setting": k, **{c: published(v)[c] for c in ("value", "std", "source", "tag")}}
                        for k, v in IDE_README.items()]).rename(columns={"value": "IDE README mean (%)"})
    ref["SPIDE (paper)"] = "not found"
    return ref


def accuracy_summary(spide_records, ide_records) -> tuple[pd.DataFrame, dict, list, list]:
    """Final test accuracy of both arms: the table (mean, std, count by method), the measured dict
    (means, standard deviations over seeds when more than one) and the per-seed accuracies in
    points, paired by seed: ``(table, measured, spide_points, ide_points)``."""
    spide, ide = final_accuracy(spide_records), final_accuracy(ide_records)
    if sorted(spide) != sorted(ide):
        raise ValueError(f"SPIDE and IDE runs must share their seeds, got {sorted(spide)} and {sorted(ide)}")
    seeds = sorted(spide)
    table = pd.DataFrame({"SPIDE (spiking backward)": pd.Series([spide[s] for s in seeds]),
                          "IDE (Broyden, exact implicit)": pd.Series([ide[s] for s in seeds])}).agg(
        ["mean", "std", "count"]).T
    many = len(seeds) > 1
    measured = {"spide_acc": float(table.loc["SPIDE (spiking backward)", "mean"]),
                "spide_sd": float(table.loc["SPIDE (spiking backward)", "std"]) if many else None,
                "ide_acc": float(table.loc["IDE (Broyden, exact implicit)", "mean"]),
                "ide_sd": float(table.loc["IDE (Broyden, exact implicit)", "std"]) if many else None,
                "seeds": len(seeds)}
    return table, measured, [100 * spide[s] for s in seeds], [100 * ide[s] for s in seeds]


__all__ = ["FMNIST", "SMALL", "in_float64", "small_net", "small_batch", "fmnist_net", "exact_state", "snn_parameters",
           "batch_gradients", "spike_gradient_sweep", "end_to_end_cosine", "reset_variants", "rate_error",
           "ide_backward_steps", "rate_rows", "sweep_rows", "fmnist_sweep_rows", "e2e_rows", "train_overrides",
           "final_accuracy", "training_firing", "energy_tables", "passes_energy", "memory_vs_Tb",
           "modified_reset_summary", "grad_cosine_summary", "saturation_summary", "backward_reset_summary",
           "firing_summary", "memory_summary", "PARAM_REFERENCE", "PAPER_RUNS", "IDE_README",
           "ide_reference_table", "accuracy_summary"]
