"""The IDE -> MPIS-SNN study (notebook ``01_ide_mpis``): its run configs, measurements and claim values.

Measurements on equilibrium models (each returns JSON-able rows for ``Study.memo``):

- ``forward_convergence``: ||a_T - a*|| / ||a*|| against T, a* the exact fixed point of the rate map
  (``rate_fixed_point``).
- ``backward_traces``: residual of (I - J^T) beta = g against iterations, per solver, and the error
  of each answer against the dense solution (and IDE "iter"'s wrong target).
- ``gradient_comparison``: cosine of each backward's parameter gradient with the dense solve;
  ``finite_difference_check``: the implicit gradient at the exact fixed point against central differences.
- ``memory_rows``: ``measure.memory_vs_T`` of the study's nets for several backwards.
- ``released_T_invariance``: the released MPIS forward (step-0 rates) against T.
- ``evaluate_at_T``: test accuracy of a trained run evaluated with other numbers of steps.
- ``parameter_table``: parameter counts of run configs against the published counts (``REFERENCE``).

Models are ``EquilibriumNet``s; batches are static [B, C, H, W] or events [B, T, C, H, W].
The ``*_config``/``*_overrides`` builders give the notebook's run configs; ``final_accuracies``,
``epoch_accuracies``, ``firing_rate_means`` and ``accuracies_at_T`` the per-seed numbers its claims
are judged on (``snnlib.experiments.verdict``; ``decide_all`` joins conditions); the
``*_figure`` functions draw its figures.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from torch.nn import functional as F

from ..equilibrium.implicit import dense_jacobian, equilibrium_forward, implicit_rates
from ..equilibrium.solvers import broyden, get_solver
from ..equilibrium.spiking_backward import cosine
from ..experiments.config import load_config, load_yaml, resolve
from ..experiments.published import published
from ..models import build_model
from ..neurons import rate_normaliser, reset_net
from ..train import build, build_data, evaluate
from ..train.trainer import DTYPES
from .context import RUN_CONFIGS
from .measure import load_trained, memory_vs_T
from .plotting import handles_for, integer_ticks, legend_below, legend_right, plain_log_labels

#: shape information of 28x28 Fashion-MNIST for ``build_model``
FMNIST = {"channels": 1, "size": (28, 28), "num_classes": 10}

#: run config name -> published parameter-count key (configs/published)
REFERENCE = {
    "ide_fmnist_f400": "ide.params.f400.fmnist", "ide_fmnist_f400_lif": "ide.params.f400.fmnist",
    "ide_mnist_f64c5": "ide.params.f64c5.mnist", "ide_nmnist_f64c5": "ide.params.f64c5.nmnist.code",
    "ide_cifar10_alexnetf": "ide.params.alexnetf.cifar10", "ide_cifar10_cifarnetf": "ide.params.cifarnetf.cifar10",
    "ide_cifar100_alexnetf": "ide.params.alexnetf.cifar100", "ide_cifar100_cifarnetf": "ide.params.cifarnetf.cifar100",
    "mpis_cifar10": "mpis.params.cifar10", "mpis_cifar10_released": "mpis.params.cifar10",
    "mpis_cifar100": "mpis.params.cifar100", "mpis_nmnist": "mpis.params.nmnist",
}

#: F400 variants of the forward-convergence figure: label -> ``ide_fc`` model arguments
CONVERGENCE_VARIANTS = {
    "IF": dict(leak=1.0), "LIF 0.99": dict(leak=0.99), "LIF 0.95": dict(leak=0.95),
    "IF, rate map /V^2 (released MPIS)": dict(leak=1.0, map_scale="V2"),
    "IF, unconstrained feedback": dict(leak=1.0, feedback_norm=False),
}

#: solvers of the backward-residual figure: label -> (solver name, options)
BACKWARD_SOLVERS = {
    "Broyden": ("broyden", {}), "Anderson (m=6)": ("anderson", {}),
    "fixed point (tau=1)": ("fixed_point", {}), "damped (tau=0.5)": ("fixed_point", {"tau": 0.5}),
    "IDE 'iter' (released)": ("ide_iter", {}),
}
ITER_SOLVER = "IDE 'iter' (released)"
IMPLICIT_TARGET, ITER_TARGET = "(I - J^T)^-1 g", "(2I - J^T)^-1 g"

#: backwards of the gradient-quality figure: label -> (backward, options)
GRADIENT_BACKWARDS = {
    "implicit (Broyden)": ("broyden", {"max_iter": 100, "tol": 1e-12}),
    "implicit (Anderson)": ("anderson", {"max_iter": 100, "tol": 1e-12}),
    "implicit (damped fixed point)": ("fixed_point", {"max_iter": 200, "tol": 1e-12}),
    "implicit (Broyden, 30 it, tol 1e-4)": ("broyden", {"max_iter": 30, "tol": 1e-4}),
    "one-step (released MPIS)": ("one_step", {}),
    "BPTT through the SNN (surrogate)": ("bptt", {}),
}

#: MPIS ablation at one budget, widths and seeds: variant -> (model overrides, method_args overrides,
#: top-level overrides). ``released`` is the released code's behaviour in every respect the notes list
#: (configs/runs/mpis_cifar10_released.yaml): T = 1 with step-0 rates, one-step gradient, membrane
#: fusion in the SNN only, rate map / V^2, the head reading f(a), BatchNorm statistics from (0, 1).
MPIS_VARIANTS = {
    "two_streams": ({}, {}, {}),
    "one_stream": ({"streams": 1, "fusion": "none"}, {}, {}),
    "one_step": ({}, {"backward": "one_step"}, {}),
    "released": ({"fusion": "membrane_snn_only", "map_scale": "V2", "feedback_norm": False,
                  "readout_source": "rate_map", "bn_init": "default"},
                 {"backward": "one_step", "rate": "step0"}, {"T": 1}),
}

#: backwards without solver options (their method_args drop max_iter/tol/stop_mode/solver_options)
SOLVERLESS_BACKWARDS = ("bptt", "one_step", "exact")
MEMORY_NETS = ("IDE F400", "IDE AlexNet-F/8", "MPIS (2 streams)")


# -- run configs ------------------------------------------------------------------------------
def paper_config_paths() -> list[Path]:
    """Every paper-scale run config of the study: ``configs/runs/ide_*.yaml`` then ``mpis_*.yaml``."""
    return sorted(RUN_CONFIGS.glob("ide_*.yaml")) + sorted(RUN_CONFIGS.glob("mpis_*.yaml"))


def ide_overrides(p: dict, leak: float, seed: int, name: str) -> dict:
    """Overrides of ``ide_fmnist_f400.yaml`` for an F400 run with budget ``p`` (epochs, subset,
    test_subset, batch_size, lr, tol, optional stop_mode and schedule) and neuron ``leak``."""
    return {"name": name, "seed": seed, "epochs": p["epochs"], "model": {"name": "ide_fc", "leak": leak},
            "data": {"subset": p["subset"], "test_subset": p["test_subset"], "batch_size": p["batch_size"]},
            "optim": {"lr": p["lr"]}, "schedule": p.get("schedule") or {},
            "method_args": {"backward": "broyden", "max_iter": 30, "tol": p["tol"],
                            "stop_mode": p.get("stop_mode", "rel")}}


def mpis_schedule(mpis: dict) -> dict:
    """``mpis_fmnist.yaml``'s schedule with the budget's ``schedule`` overrides (None: unchanged)."""
    return {**load_yaml(RUN_CONFIGS / "mpis_fmnist.yaml")["schedule"], **(mpis.get("schedule") or {})}


def ide_same_budget_overrides(mpis: dict, ide: dict, seed: int) -> dict:
    """An IF F400 run with the MPIS budget (data, epochs, lr, schedule) and IDE's backward tolerance."""
    p = {**mpis, "tol": ide["tol"], "stop_mode": ide.get("stop_mode", "rel"), "schedule": mpis_schedule(mpis)}
    return ide_overrides(p, 1.0, seed, "ide_f400_same_budget")


def mpis_config(mpis: dict, variant: str, seed: int) -> dict:
    """The ``mpis_<variant>`` run (``MPIS_VARIANTS``) with budget ``mpis`` (epochs, subset,
    test_subset, batch_size, lr, T, stem, channels, tol, schedule) on 28x28 Fashion-MNIST.
    Its data, optim and method_args sections are the budget's alone (the rest: defaults)."""
    if variant not in MPIS_VARIANTS:
        raise ValueError(f"unknown MPIS variant {variant!r}; choose one of {', '.join(MPIS_VARIANTS)}")
    model, method, top = MPIS_VARIANTS[variant]
    margs = {"backward": "broyden", "max_iter": 30, "tol": mpis["tol"], **method}
    if margs["backward"] == "one_step":
        margs = {k: v for k, v in margs.items() if k not in ("max_iter", "tol")}
    base = load_yaml(RUN_CONFIGS / "mpis_fmnist.yaml")
    return resolve({**base, "name": f"mpis_{variant}", "seed": seed, "T": top.get("T", mpis["T"]), "epochs": mpis["epochs"],
                    "model": {**base["model"], "stem_channels": mpis["stem"], "channels": mpis["channels"], **model},
                    "method_args": margs,
                    "data": {"name": "fashion_mnist", "subset": mpis["subset"], "test_subset": mpis["test_subset"],
                             "batch_size": mpis["batch_size"]},
                    "optim": {"name": "sgd", "lr": mpis["lr"], "momentum": 0.9, "weight_decay": 5e-4},
                    "schedule": mpis_schedule(mpis)})


def dvs_overrides(dvs: dict, tol: float, seed: int) -> dict:
    """Overrides of ``mpis_fmnist_dvs.yaml`` for budget ``dvs`` (epochs, subset, test_subset,
    batch_size, T, channels, lr), Broyden tolerance ``tol``, cosine schedule without warm-up."""
    return {"name": "mpis_fmnist_dvs", "seed": seed, "T": dvs["T"], "epochs": dvs["epochs"],
            "model": {"name": "mpis", "stem_channels": None, "channels": dvs["channels"], "down_at": 1},
            "method_args": {"tol": tol},
            "data": {"subset": dvs["subset"], "test_subset": dvs["test_subset"], "batch_size": dvs["batch_size"]},
            "optim": {"lr": dvs["lr"]}, "schedule": {"name": "cosine", "milestones": [], "warmup_iters": 0}}


def backward_variants(cfg: dict, backwards) -> dict[str, dict]:
    """``{backward: cfg}`` with the method's backward replaced (and the solver's options dropped for
    ``SOLVERLESS_BACKWARDS``); non-convergence warnings off (``warn_tol`` 1e9)."""
    out = {}
    for bw in backwards:
        c = copy.deepcopy(cfg)
        c["method_args"] = {**c.get("method_args", {}), "backward": bw, "warn_tol": 1e9}
        if bw in SOLVERLESS_BACKWARDS:
            for k in ("max_iter", "tol", "stop_mode", "solver_options"):
                c["method_args"].pop(k, None)
        out[bw] = c
    return out


# -- the rate map's fixed point and the forward pass ------------------------------------------
@torch.no_grad()
def rate_fixed_point(net, x: torch.Tensor, T: int = 1, *, tol: float = 1e-10, max_iter: int = 300):
    """Exact fixed point of ``net``'s rate map for batch ``x`` by Broyden (call in eval mode so f is fixed).

    Returns (a* packed [B, n], drive, like) where ``like`` are per-stream shaped tensors.
    RuntimeError when no fixed point is found (the map may not be a contraction)."""
    snn = net.snn
    inputs, events = net.encode(x, T)
    drive = snn.drive(inputs, events=events)
    like = snn.simulate(drive, T).last
    try:
        a, st = broyden(lambda v: snn.pack(snn.rate_map(snn.unpack(v, like), drive)), snn.pack(like),
                        max_iter=max_iter, tol=tol)
    except FloatingPointError as e:
        raise RuntimeError(f"the rate map's fixed point was not found ({e})") from e
    if not st.converged:
        raise RuntimeError(f"the rate map's fixed point was not found (relative residual {st.rel_lowest:.2g}); "
                           "the map may not be a contraction (unconstrained feedback?)")
    return a, drive, like


@torch.no_grad()
def forward_convergence(net, x: torch.Tensor, Ts, *, rate: str = "weighted") -> list[dict]:
    """Relative error of the T-step rates to the rate map's fixed point, for each T in ``Ts``
    (NaN when no fixed point is found), and their fixed-point residual ||f(a_T) - a_T|| / ||f(a_T)||.
    Static inputs; evaluated in eval mode, in float64, on a copy of ``net``."""
    net = copy.deepcopy(net).double().eval()        # float64: the fixed point to 1e-10
    x = x.double()
    snn = net.snn
    try:
        a_star, drive, like = rate_fixed_point(net, x, 1)
    except RuntimeError:
        a_star = None
        inputs, events = net.encode(x, 1)
        drive = snn.drive(inputs, events=events)
        like = snn.simulate(drive, 1).last
    if drive.events:
        raise ValueError("forward_convergence needs static inputs (the same drive for every T)")
    rows = []
    for T in Ts:
        a = snn.pack(snn.simulate(drive, int(T), rate=rate).last)
        fa = snn.pack(snn.rate_map(snn.unpack(a, like), drive))
        err = float((a - a_star).norm() / a_star.norm()) if a_star is not None else math.nan
        rows.append({"T": int(T), "rel_error": err, "rel_residual": float((fa - a).norm() / (fa.norm() + 1e-12))})
    return rows


def convergence_rows(x: torch.Tensor, Ts) -> list[dict]:
    """``forward_convergence`` of an untrained F400 (no dropout, seed 0) per ``CONVERGENCE_VARIANTS``
    on the Fashion-MNIST batch ``x`` [B, 1, 28, 28]: rows (variant, T, rel_error, rel_residual)."""
    rows = []
    for label, kw in CONVERGENCE_VARIANTS.items():
        torch.manual_seed(0)
        net = build_model({"name": "ide_fc", "dropout": 0.0, **kw}, FMNIST)
        rows += [{"variant": label, **r} for r in forward_convergence(net, x, Ts)]
    return rows


def convergence_summary(rows: list[dict]) -> dict:
    """IF's error at the largest and smallest T of ``convergence_rows`` and LIF 0.95's at the largest."""
    by = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    first, last = min(by["IF"], key=lambda r: r["T"]), max(by["IF"], key=lambda r: r["T"])
    return {"value": last["rel_error"], "T": last["T"], "error_at_T_min": first["rel_error"],
            "lif_0.95_at_T_max": max(by["LIF 0.95"], key=lambda r: r["T"])["rel_error"]}


# -- the backward pass ------------------------------------------------------------------------
def capture_backward_problem(net, x: torch.Tensor, y: torch.Tensor, T: int) -> dict:
    """The backward system of one training step: (vjp, g, a) with g = dL/da (cross-entropy).

    Runs the forward as in training (train mode: dropout masks and batch statistics) without
    touching the parameters. Returns a dict with ``vjp``, ``g``, ``a`` and the ``net`` copy."""
    net = copy.deepcopy(net)
    net.train()
    snn = net.snn
    inputs, events = net.encode(x, T)
    drive = snn.drive(inputs, events=events)
    with torch.no_grad():
        sim = snn.simulate(drive, T)
    a = snn.pack(sim.last).detach().requires_grad_()
    fa = snn.pack(snn.rate_map(snn.unpack(a, sim.last), drive))
    z = a.detach().clone().requires_grad_()
    loss = F.cross_entropy(net.readout(snn.unpack(z, sim.last)), y)
    (g,) = torch.autograd.grad(loss, z)

    def vjp(v):
        return torch.autograd.grad(fa, a, v, retain_graph=True)[0]
    return {"vjp": vjp, "g": g.detach(), "a": a.detach(), "net": net}


def backward_traces(net, x, y, T: int, solvers: dict, *, max_iter: int = 30, dense: bool = True) -> dict:
    """Residual traces of the backward solve for each ``solvers`` entry {label: (name, options)}.

    Returns {"traces": rows (solver, iteration, rel_residual, abs_residual), "errors": rows (solver,
    target, rel_error)}; errors compare each answer with the dense solution of (I - J^T) beta = g
    and, for IDE's "iter", also with (2I - J^T)^-1 g (the equation it actually solves)."""
    p = capture_backward_problem(net, x, y, T)
    vjp, g = p["vjp"], p["g"]
    exact = wrong = None
    if dense:
        J = dense_jacobian(vjp, p["a"]).double()
        N = J.shape[0]
        I = torch.eye(N, dtype=torch.float64)
        exact = torch.linalg.solve(I - J.T, g.reshape(N).double())
        wrong = torch.linalg.solve(2 * I - J.T, g.reshape(N).double())
    traces, errors = [], []
    for label, (name, opts) in solvers.items():
        x0 = g.clone() if name == "ide_iter" else torch.zeros_like(g)
        beta, st = get_solver(name)(lambda b: vjp(b) + g, x0, max_iter=max_iter, tol=0.0, **(opts or {}))
        traces += [{"solver": label, "iteration": i + 1, "rel_residual": r, "abs_residual": a}
                   for i, (r, a) in enumerate(zip(st.rel_trace, st.abs_trace))]
        if exact is not None:
            b = beta.reshape(-1).double()
            errors.append({"solver": label, "target": IMPLICIT_TARGET,
                           "rel_error": float((b - exact).norm() / exact.norm())})
            if name == "ide_iter":
                errors.append({"solver": label, "target": ITER_TARGET,
                               "rel_error": float((b - wrong).norm() / wrong.norm())})
    return {"traces": traces, "errors": errors}


def backward_rows(x: torch.Tensor, y: torch.Tensor, *, T: int = 5, max_iter: int = 30) -> dict:
    """``backward_traces`` of ``BACKWARD_SOLVERS`` for one training step of an untrained F400
    (seed 0) on the Fashion-MNIST batch ``(x, y)``."""
    torch.manual_seed(0)
    net = build_model({"name": "ide_fc"}, FMNIST)
    return backward_traces(net, x, y, T, BACKWARD_SOLVERS, max_iter=max_iter)


def iter_errors(errors: list[dict]) -> dict:
    """Relative error of IDE 'iter''s answer against its two targets: {target: rel_error}."""
    return {r["target"]: r["rel_error"] for r in errors if r["solver"] == ITER_SOLVER}


# -- gradient quality -------------------------------------------------------------------------
def parameter_gradients(net, x, y, T: int, backward: str, *, seed: int = 0, **opts) -> list[torch.Tensor]:
    """Parameter gradients of one training step of a copy of ``net`` (same dropout masks per seed)."""
    net = copy.deepcopy(net)
    net.train()
    torch.manual_seed(seed)
    res = equilibrium_forward(net, x, T, backward=backward, warn_tol=math.inf, **opts)
    F.cross_entropy(res.logits, y).backward()
    reset_net(net)
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]


def gradient_comparison(net, x, y, T: int, backwards: dict) -> list[dict]:
    """Cosine similarity (and relative error) of each {label: (backward, options)} gradient with the
    dense ("exact") implicit gradient at the same SNN estimate."""
    ref = parameter_gradients(net, x, y, T, "exact")
    rn = torch.cat([r.reshape(-1) for r in ref]).double()
    rows = []
    for label, (name, opts) in backwards.items():
        g = parameter_gradients(net, x, y, T, name, **(opts or {}))
        gn = torch.cat([t.reshape(-1) for t in g]).double()
        rows.append({"gradient": label, "cosine": cosine(g, ref), "rel_error": float((gn - rn).norm() / rn.norm())})
    return rows


def finite_difference_check(net, x, y, *, n_entries: int = 6, eps: float = 1e-6, seed: int = 0) -> dict:
    """Implicit gradient at the exact fixed point against central finite differences of
    L(readout(a*(theta))) for ``n_entries`` random weight entries (float64 advised, eval mode).
    Returns {"max_rel_error", "entries": rows (finite_difference, implicit, rel_error)}."""
    net = copy.deepcopy(net).eval()
    snn = net.snn

    def loss_at_fixed_point(grad: bool):
        a, drive, like = rate_fixed_point(net, x, 1, tol=1e-13)
        if not grad:
            with torch.no_grad():
                return float(F.cross_entropy(net.readout(snn.unpack(a, like)), y))
        with torch.enable_grad():
            drive = snn.drive(net.encode(x, 1)[0])
            av = a.detach().requires_grad_()
            fa = snn.pack(snn.rate_map(snn.unpack(av, like), drive))
            z = implicit_rates(fa, av, backward="broyden", max_iter=300, tol=1e-13, warn_tol=math.inf)
            return F.cross_entropy(net.readout(snn.unpack(z, like)), y)

    params = [p for p in net.parameters() if p.dim() >= 2]
    loss = loss_at_fixed_point(True)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    gen = torch.Generator().manual_seed(seed)
    worst, rows = 0.0, []
    for _ in range(n_entries):
        k = int(torch.randint(len(params), (1,), generator=gen))
        P, G = params[k], grads[k]
        idx = tuple(int(torch.randint(s, (1,), generator=gen)) for s in P.shape)
        with torch.no_grad():
            P[idx] += eps
        up = loss_at_fixed_point(False)
        with torch.no_grad():
            P[idx] -= 2 * eps
        down = loss_at_fixed_point(False)
        with torch.no_grad():
            P[idx] += eps
        fd = (up - down) / (2 * eps)
        an = float(G[idx]) if G is not None else 0.0
        err = abs(fd - an) / max(abs(fd), abs(an), 1e-8)
        worst = max(worst, err)
        rows.append({"finite_difference": fd, "implicit": an, "rel_error": err})
    return {"max_rel_error": worst, "entries": rows}


def gradient_quality(*, T: int = 20, fd_entries: int = 8) -> dict:
    """``gradient_comparison`` of ``GRADIENT_BACKWARDS`` and ``finite_difference_check`` on a small
    float64 F16 net (dropout 0.2, seed 1) and a random batch (6 samples, 1x4x5, 3 classes, seed 2).
    Returns {"rows", "fd_max_rel_error"}; the default dtype is restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(1)
        net = build_model({"name": "ide_fc", "hidden": 16, "dropout": 0.2},
                          {"channels": 1, "size": (4, 5), "num_classes": 3})
        g = torch.Generator().manual_seed(2)
        x, y = torch.randn(6, 1, 4, 5, generator=g), torch.randint(0, 3, (6,), generator=g)
        rows = gradient_comparison(net, x, y, T, GRADIENT_BACKWARDS)
        fd = finite_difference_check(net, x, y, n_entries=fd_entries)
        return {"rows": rows, "fd_max_rel_error": fd["max_rel_error"]}
    finally:
        torch.set_default_dtype(old)


# -- training memory against T ----------------------------------------------------------------
def memory_configs(ide_tol: float, mpis: dict) -> dict[str, dict[str, dict]]:
    """The nets of the memory figure, each ``{backward: cfg}`` (``backward_variants``): F400 and a
    width-/8 AlexNet-F (Broyden, BPTT) and the budget's MPIS (Broyden, one-step, BPTT)."""
    ide = load_config(RUN_CONFIGS / "ide_fmnist_f400.yaml", {"method_args": {"tol": ide_tol}})
    alex = load_config(RUN_CONFIGS / "ide_cifar10_alexnetf.yaml",
                       {"model": {"name": "ide_multilayer", "channels": [12, 32, 48, 48, 32]},
                        "method_args": {"tol": ide_tol}})
    mp = load_config(RUN_CONFIGS / "mpis_fmnist.yaml",
                     {"model": {"stem_channels": mpis["stem"], "channels": mpis["channels"]},
                      "method_args": {"tol": mpis["tol"]}})
    return {"IDE F400": backward_variants(ide, ["broyden", "bptt"]),
            "IDE AlexNet-F/8": backward_variants(alex, ["broyden", "bptt"]),
            "MPIS (2 streams)": backward_variants(mp, ["broyden", "one_step", "bptt"])}


def memory_rows(batch, Ts, ide_tol: float, mpis: dict) -> list[dict]:
    """Bytes of one training step (``measure.memory_vs_T``) of every ``memory_configs`` net and
    backward at every T. ``batch``: a Fashion-MNIST ``(x, y)``; AlexNet-F gets random CIFAR-shaped
    tensors of the same size (seed 0; memory does not depend on the values).
    Rows: {"net", "backward", "T", "saved_peak_bytes", "state_bytes", "solver_bytes", "total_bytes", ...}."""
    x, y = batch
    g = torch.Generator().manual_seed(0)
    cifar = torch.randn(len(y), 3, 32, 32, generator=g), torch.randint(0, 10, (len(y),), generator=g)
    rows = []
    for net, variants in memory_configs(ide_tol, mpis).items():
        for r in memory_vs_T(variants, Ts, batch=cifar if net == "IDE AlexNet-F/8" else (x, y)):
            r = {"net": net, "backward": r.pop("variant"), **r}
            r.pop("method")
            rows.append(r)
    return rows


def memory_ratio(rows: list[dict], net: str, backward: str, T: int, key: str = "total_bytes",
                 over: int = 5) -> float:
    """``key`` bytes at ``T`` over those at T = ``over`` for one net and backward of ``memory_rows``."""
    at = {r["T"]: r[key] for r in rows if r["net"] == net and r["backward"] == backward}
    return float(at[T] / at[over])


def memory_summary(rows: list[dict], nets, Ts) -> dict:
    """The memory-flatness check of ``nets``: the worst implicit (Broyden) ratio max(T) / T = 5 and
    BPTT's ratios beside it (``bptt_total_ratio_T30_over_T5`` when T = 30 was measured)."""
    t = max(Ts)
    return {"value": max(memory_ratio(rows, n, "broyden", t) for n in nets), "T": [5, t],
            "bptt_total_ratio": {n: memory_ratio(rows, n, "bptt", t) for n in nets},
            "bptt_saved_ratio": {n: memory_ratio(rows, n, "bptt", t, "saved_peak_bytes") for n in nets},
            "bptt_total_ratio_T30_over_T5": {n: memory_ratio(rows, n, "bptt", 30) for n in nets} if 30 in Ts else {}}


def memory_note(summary: dict) -> str:
    """Why BPTT's ratio in ``memory_summary`` stays below T's ratio, with its T = 30 / T = 5 values."""
    return ("BPTT on the same net grows linearly in T, but its ratio is bounded by the T-independent "
            "part (input layer, readout, dropout masks, normalised weights): at T=30/T=5 it is "
            + ", ".join(f"{net} {r:.2f}" for net, r in summary["bptt_total_ratio_T30_over_T5"].items())
            + " (a ratio >= 5 needs per-step activations >= 0.8x the T-independent part)")

# -- MPIS's released forward ------------------------------------------------------------------
@torch.no_grad()
def released_T_invariance(net, x: torch.Tensor, Ts) -> list[dict]:
    """The released MPIS forward (step-0 rates): max |c_T a_T - c_1 a_1| and the agreement of the
    predictions with T = 1, against T (eval mode)."""
    was = net.training
    net.eval()
    try:
        snn = net.snn
        inputs, events = net.encode(x, 1)
        drive = snn.drive(inputs, events=events)
        base = snn.simulate(drive, 1, rate="step0").last
        pred1 = net.readout(base).argmax(1)
        rows = []
        for T in Ts:
            last = snn.simulate(drive, int(T), rate="step0").last
            c = rate_normaliser(int(T), snn.leak)
            diff = max(float((a * c - b).abs().max()) for a, b in zip(last, base))
            agree = float((net.readout(last).argmax(1) == pred1).float().mean())
            w = snn.simulate(drive, int(T)).last
            agree_w = float((net.readout(w).argmax(1) == pred1).float().mean())
            rows.append({"T": int(T), "max_abs_diff_scaled": diff, "prediction_agreement": agree,
                         "weighted_rate_agreement": agree_w})
        return rows
    finally:
        net.train(was)


def released_rows(mpis: dict, x: torch.Tensor, Ts=(1, 2, 5, 30)) -> list[dict]:
    """``released_T_invariance`` of an untrained released-variant MPIS (the budget's widths, seed 0)."""
    torch.manual_seed(0)
    net = build_model({"name": "mpis", "stem_channels": mpis["stem"], "channels": mpis["channels"],
                       "fusion": "membrane_snn_only", "map_scale": "V2", "feedback_norm": False}, FMNIST)
    return released_T_invariance(net, x, list(Ts))


# -- trained runs -----------------------------------------------------------------------------
def evaluate_at_T(record: dict, Ts, *, test_subset=None) -> list[dict]:
    """Test accuracy of a finished run (its final checkpoint) evaluated with each T in ``Ts``:
    rows (T, test_acc, mean_firing_rate, seed, name, train_T)."""
    _, method, cfg = load_trained(record)
    rows = []
    for T in Ts:
        c = copy.deepcopy(cfg)
        c["T"] = int(T)
        if test_subset is not None:
            c["data"]["test_subset"] = test_subset
        method.T = int(T)
        _, test = build_data(c)
        ev = evaluate(method, test, c, torch.device("cpu"), DTYPES[c["dtype"]])
        rows.append({"T": int(T), "test_acc": ev["test_acc"], "mean_firing_rate": ev["mean_firing_rate"],
                     "seed": cfg["seed"], "name": cfg["name"], "train_T": cfg["T"]})
    return rows


def accuracy_vs_T(records: list[dict], Ts, names=None) -> list[dict]:
    """``evaluate_at_T`` of every record (only those whose name is in ``names`` when given)."""
    rows = []
    for r in records:
        if names is None or r["name"] in names:
            rows += evaluate_at_T(r, Ts)
    return rows


def parameter_table(paths, reference: dict = REFERENCE) -> list[dict]:
    """Parameter count of each run config's model against ``reference`` {config name: published key}."""
    rows = []
    for p in paths:
        cfg = load_config(p)
        torch.manual_seed(0)
        model, _ = build(cfg)
        n = sum(q.numel() for q in model.parameters() if q.requires_grad)
        key = reference.get(cfg["name"])
        ref = published(key) if key else None
        rows.append({"config": Path(p).stem, "model": cfg["model"]["name"], "dataset": cfg["data"]["name"],
                     "params_M": n / 1e6, "reference_M": ref["value"] if ref else None,
                     "reference_tag": ref["tag"] if ref else None,
                     "matches": (round(n / 1e6, len(str(ref["value"]).split(".")[1])) == ref["value"]) if ref else None})
    return rows


# -- claim values -----------------------------------------------------------------------------
def _by_seed(records: list[dict], name: str, value) -> list[float]:
    """``value(record)`` of every run called ``name``, in seed order (for paired comparisons)."""
    runs = sorted((r for r in records if r["name"] == name), key=lambda r: r["seed"])
    if not runs:
        raise ValueError(f"no run called {name!r} among {sorted({r['name'] for r in records})}")
    return [float(value(r)) for r in runs]


def final_accuracies(records: list[dict], name: str) -> list[float]:
    """Last-epoch test accuracy of every run called ``name``, in seed order."""
    return _by_seed(records, name, lambda r: r["history"][-1]["test_acc"])


def epoch_accuracies(records: list[dict], name: str, epoch: int = 1) -> list[float]:
    """Test accuracy after ``epoch`` of every run called ``name``, in seed order."""
    return _by_seed(records, name, lambda r: next(h["test_acc"] for h in r["history"] if h["epoch"] == epoch))


def firing_rate_means(records: list[dict], name: str) -> list[float]:
    """Mean over layers of the last epoch's test firing rates of every run called ``name``, in seed order."""
    def mean_rate(r):
        rates = r["history"][-1]["firing_rates"]
        return sum(rates.values()) / len(rates)
    return _by_seed(records, name, mean_rate)


def accuracies_at_T(rows: list[dict], name: str, T: int) -> list[float]:
    """Test accuracy at evaluation T of ``accuracy_vs_T`` rows of the runs called ``name``, in seed order."""
    return [r["test_acc"] for r in sorted(rows, key=lambda r: r["seed"]) if r["name"] == name and r["T"] == T]


def mean(xs) -> float:
    """Arithmetic mean of a non-empty list."""
    xs = list(xs)
    if not xs:
        raise ValueError("mean of no values")
    return sum(xs) / len(xs)


def budget(p: dict, seeds, *, images=None) -> str:
    """The training budget of a runs dict ``p`` (subset, epochs, batch_size) in words."""
    n = images or (f"{p['subset']}" if p.get("subset") else "60k")
    return f"{n} images x {p['epochs']} epochs, batch {p['batch_size']}, {len(seeds)} seeds"


# -- figures (each returns the matplotlib figure; the notebook saves it with ``Study.figure``) --
def convergence_figure(conv: pd.DataFrame):
    """Relative error to the fixed point and fixed-point residual of the rates against T, per variant."""
    variants = list(dict.fromkeys(conv["variant"]))
    palette = dict(zip(variants, sns.color_palette("colorblind", len(variants))))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(data=conv, x="T", y="rel_error", hue="variant", palette=palette, marker="o", ax=axes[0], legend=False)
    sns.lineplot(data=conv, x="T", y="rel_residual", hue="variant", palette=palette, marker="o", ax=axes[1], legend=False)
    for ax, t in zip(axes, ["relative error $\\|a_T - a^*\\| / \\|a^*\\|$",
                            "relative residual $\\|f(a_T) - a_T\\| / \\|f(a_T)\\|$"]):
        ax.set(xscale="log", yscale="log", xlabel="time steps T (log scale)", ylabel=t)
        plain_log_labels(ax, "x")
    axes[0].set_title("rates vs the exact fixed point")
    axes[1].set_title("fixed-point residual of the rates")
    fig.tight_layout()
    legend_below(fig, *handles_for(palette), ncol=3, title="variant")
    return fig


def backward_figure(traces: pd.DataFrame):
    """Relative residual of the backward solve against iterations, per solver."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=traces, x="iteration", y="rel_residual", hue="solver", ax=ax)
    ax.set(yscale="log", xlabel="solver iteration",
           ylabel="relative residual $\\|J^T\\beta + g - \\beta\\| / \\|J^T\\beta + g\\|$",
           title="backward solve, F400, one training step")
    integer_ticks(ax)
    legend_right(ax, title="solver")
    return fig


def gradient_figure(grad: pd.DataFrame):
    """Cosine of each backward's gradient with the exact implicit gradient."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.barplot(data=grad, y="gradient", x="cosine", ax=ax, color="C0")
    ax.bar_label(ax.containers[0], fmt="%.4f", padding=3, fontsize=9)
    ax.set(xlim=(min(0.0, grad.cosine.min() - 0.05), 1.15), xlabel="cosine with the exact implicit gradient", ylabel="",
           title="gradient of one training step vs the exact implicit gradient")
    ax.set_xticks([t / 5 for t in range(6)])
    return fig


def memory_figure(mem: pd.DataFrame, batch_size: int):
    """MB per training step against T, one panel per net of ``MEMORY_NETS``, one line per backward."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=False)
    for ax, net in zip(axes, MEMORY_NETS):
        sns.lineplot(data=mem[mem.net == net], x="T", y="MB", hue="backward", marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", title=f"{net}, batch {batch_size}", ylabel="MiB per training step (log scale)",
               xlabel="time steps T (log scale)")
        plain_log_labels(ax, "x")
        plain_log_labels(ax, "y")
        sns.move_legend(ax, "best", title="backward", fontsize=9, title_fontsize=9)
    fig.tight_layout()
    return fig


def accuracy_vs_T_figure(accT: pd.DataFrame, title: str):
    """Test accuracy against the evaluation T per neuron, with IDE's README values at T = 5."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=accT, x="T", y="test_acc", hue="neuron", marker="o", errorbar="sd", ax=ax)
    for key, m, t, lab in (("ide.fmnist.f400.if.T5", "*", 4.7, "IDE README, IF (100 ep.)"),
                           ("ide.fmnist.f400.lif.T5", "P", 5.3, "IDE README, LIF (100 ep.)")):
        p = published(key)       # both at T = 5, drawn side by side
        ax.errorbar([t], [p["value"] / 100], yerr=[p["std"] / 100], fmt=m, ms=9, color="k", label=lab)
    ax.set(xscale="log", xlabel="time steps at evaluation, log scale (trained at T = 5)",
           ylabel="test accuracy (fraction, mean ± sd)", title=title)
    plain_log_labels(ax, "x")
    legend_right(ax, fontsize=9)
    return fig


def ablation_figure(finals: pd.DataFrame, title: str):
    """Final test accuracy per run name (``tables.final`` rows)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.stripplot(data=finals, y="name", x="value", ax=ax, color="C0", alpha=0.6, size=5, jitter=0.1)
    sns.pointplot(data=finals, y="name", x="value", errorbar="sd", ax=ax, color="k", linestyle="none", capsize=0.2,
                  markersize=6)
    ax.set(xlabel="test accuracy (fraction; dots: seeds, black: mean ± sd)", ylabel="", title=title)
    return fig


def last_epoch_rates(df: pd.DataFrame) -> pd.DataFrame:
    """The last epoch's per-layer firing rates of a tidy run table, with a ``layer`` column."""
    rates = df[df.metric.str.startswith("rate:")]
    rates = rates[rates.epoch == rates.groupby("name").epoch.transform("max")].copy()
    rates["layer"] = rates.metric.str[5:]
    return rates


def convergence_and_firing_figure(curves: pd.DataFrame, rates: pd.DataFrame):
    """Test accuracy against epoch per run name, and firing rates per layer (``last_epoch_rates``);
    one colour per run in both panels (``tab10``: no two alike), error bars (sd over seeds) rather
    than overlapping bands, one legend below the panels (never over the data)."""
    names = list(dict.fromkeys(list(curves["name"]) + list(rates["name"])))
    palette = dict(zip(names, sns.color_palette("tab10", len(names))))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    sns.lineplot(data=curves, x="epoch", y="value", hue="name", hue_order=[n for n in names if n in set(curves["name"])],
                 palette=palette, marker="o", errorbar="sd", err_style="bars", err_kws={"capsize": 3}, ax=axes[0],
                 legend=False)
    axes[0].set(xlabel="epoch", ylabel="test accuracy (fraction, mean ± sd over seeds)", title="test accuracy against epoch")
    integer_ticks(axes[0])
    sns.pointplot(data=rates, y="layer", x="value", hue="name", hue_order=[n for n in names if n in set(rates["name"])],
                  palette=palette, errorbar="sd", dodge=0.6, linestyle="none", markersize=5, ax=axes[1], legend=False)
    axes[1].set(xlabel="firing rate (spikes / neuron / step, test set; mean ± sd)", ylabel="layer",
                title="firing rates per layer")
    fig.tight_layout()
    legend_below(fig, *handles_for(palette), ncol=4)
    return fig
