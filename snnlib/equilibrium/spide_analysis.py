"""Measurements for SPIDE's notebook: gradient quality of the spiking backward, the rate error of
the modified reset, and per-batch gradients of any backward on one feedback model.

All functions take an ``EquilibriumNet`` with one stream (``snnlib.models.spide``) and a batch;
they return plain Python rows (lists of dicts) for ``pandas.DataFrame``. Cosines and errors are
over the spiking network's parameters (input map, loop maps, feedback); the non-spiking
readout's gradient is the same for every backward and is left out.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .feedback import Simulation
from .implicit import EquilibriumContext, implicit_rates
from .solvers import get_solver
from .spiking_backward import (apply_rate_gradients, cosine, dense_solve, layer_masks, stream_transposes,
                               ternary_solve)


def _drive(net, x, T):
    inputs, events = net.encode(x, T)
    return net.snn.drive(inputs, events=events)


@torch.no_grad()
def exact_state(net, drive, *, tol: float = 1e-12, max_iter: int = 500) -> Simulation:
    """The fixed point a* = f(a*) of the rate map (Broyden to ``tol``) and every layer's rate there,
    as a ``Simulation`` (``T = 0``, firing NaN): the state an infinitely long simulation reaches."""
    snn = net.snn
    with torch.no_grad():
        shapes_sim = snn.simulate(drive, drive.T or 1)
    like = shapes_sim.last

    def f(vec):
        return snn.pack(snn.rate_map(snn.unpack(vec, like), drive))

    a0 = snn.pack(like).zero_()
    a, stat = get_solver("broyden")(f, a0, max_iter=max_iter, tol=tol, stop_mode="abs")
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
    return [p for p in net.snn.parameters() if p.requires_grad]


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
    out = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in snn_parameters(net)]
    net.zero_grad(set_to_none=True)
    return out


def _grad_at_a(net, sim, y) -> torch.Tensor:
    a = sim.last[0].detach().requires_grad_()
    loss = F.cross_entropy(net.readout([a]), y)
    (g,) = torch.autograd.grad(loss, a)
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
    params = snn_parameters(net)
    rows = []
    for s in scales:
        sol = ternary_solve(g, tr, masks, T_b=T_bs[-1], V=snn.map_divisor, scale=float(s), v_th_b=v_th_b,
                            u_rest_b=u_rest_b, leak=snn.leak, checkpoints=T_bs[:-1])
        for T_b in T_bs:
            part = sol if T_b == T_bs[-1] else sol.history[T_b]
            net.zero_grad(set_to_none=True)
            apply_rate_gradients(snn, drive, rates, masks, part.beta)
            gs = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
            diff = torch.cat([(a - b).reshape(-1) for a, b in zip(gs, layer_ref)])
            ref = torch.cat([b.reshape(-1) for b in layer_ref])
            bdiff = torch.cat([(a - b).reshape(-1) for a, b in zip(part.beta, beta_exact)])
            n = [m.numel() for m in masks]
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
    solve at the same T-step state), forward_err (mean |a_T - a*| over all layers)."""
    truth = batch_gradients(net, x, y, T=1, backward="exact", state="exact")
    drive = _drive(net, x, 1)
    star = exact_state(net, drive).rates[0]
    rows = []
    for T in Ts:
        ide_T = batch_gradients(net, x, y, T=T, backward="exact", state="snn")
        with torch.no_grad():
            sim = net.snn.simulate(_drive(net, x, T), T)
        err = torch.cat([(a - b).abs().reshape(-1) for a, b in zip(sim.rates[0], star)]).mean()
        for T_b in T_bs:
            gs = batch_gradients(net, x, y, T=T, backward="spike", state="snn", T_b=int(T_b), scale=float(scale))
            rows.append({"T": int(T), "T_b": int(T_b), "cos_true": cosine(gs, truth), "cos_ide_exact_at_T": cosine(gs, ide_T),
                         "cos_ide_T_vs_true": cosine(ide_T, truth), "forward_err": float(err)})
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
    drive = _drive(net, x, 1)
    star = exact_state(net, drive).rates[0]
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


def ide_backward_steps(net, x, y, *, T: int, max_iter: int = 30, tol: float = 1e-6) -> int:
    """Iterations IDE's Broyden backward takes on one batch (for the energy comparison)."""
    from .implicit import equilibrium_forward
    res = equilibrium_forward(net, x, T, backward="broyden", max_iter=max_iter, tol=tol, warn_tol=math.inf)
    F.cross_entropy(res.logits, y).backward()
    net.zero_grad(set_to_none=True)
    return int(res.record.stats["nstep"])
