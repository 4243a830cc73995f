"""Measurements on equilibrium models for notebook 01 (each returns JSON-able rows for ``memo``).

- ``forward_convergence``: ||a_T - a*|| / ||a*|| against T, a* the exact fixed point of the rate map.
- ``backward_traces``: residual of (I - J^T) beta = g against iterations, per solver, plus the
  error of each solver's answer against the dense solution (and IDE "iter"'s wrong target).
- ``gradient_comparison``: cosine of each backward's parameter gradient with the dense solve.
- ``finite_difference_check``: implicit gradient at the exact fixed point vs central differences.
- ``memory_vs_T``: ``step_memory`` of one training step against T, for several backwards.
- ``released_T_invariance``: the released MPIS forward (step-0 rates) against T.
- ``evaluate_at_T``: test accuracy of a trained run evaluated with other numbers of steps.
- ``parameter_table``: parameter counts of run configs against the published counts.
Models are ``EquilibriumNet``s; batches are static [B, ...] or events [B, T, ...].
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch.nn import functional as F

from ..neurons import rate_normaliser, reset_net
from .implicit import dense_jacobian, equilibrium_forward, implicit_rates
from .solvers import broyden, get_solver


def _cos(a, b) -> float:
    a = torch.cat([t.reshape(-1) for t in a]).double()
    b = torch.cat([t.reshape(-1) for t in b]).double()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else float("nan")


@torch.no_grad()
def fixed_point(net, x: torch.Tensor, T: int = 1, *, tol: float = 1e-10, max_iter: int = 300):
    """Exact fixed point of ``net``'s rate map for batch ``x`` (call in eval mode so f is fixed).

    Returns (a* packed [B, n], drive, like) where ``like`` are per-stream shaped tensors."""
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
        a_star, drive, like = fixed_point(net, x, 1)
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


def capture_backward_problem(net, x: torch.Tensor, y: torch.Tensor, T: int):
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

    Returns {"traces": rows (solver, iteration, rel_residual), "errors": rows (solver, target,
    rel_error)}; errors compare each answer with the dense solution of (I - J^T) beta = g and, for
    IDE's "iter", also with (2I - J^T)^-1 g (the equation it actually solves)."""
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
            errors.append({"solver": label, "target": "(I - J^T)^-1 g",
                           "rel_error": float((b - exact).norm() / exact.norm())})
            if name == "ide_iter":
                errors.append({"solver": label, "target": "(2I - J^T)^-1 g",
                               "rel_error": float((b - wrong).norm() / wrong.norm())})
    return {"traces": traces, "errors": errors}


def parameter_gradients(net, x, y, T: int, backward: str, *, seed: int = 0, **opts):
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
        rows.append({"gradient": label, "cosine": _cos(g, ref), "rel_error": float((gn - rn).norm() / rn.norm())})
    return rows


def finite_difference_check(net, x, y, *, n_entries: int = 6, eps: float = 1e-6, seed: int = 0) -> dict:
    """Implicit gradient at the exact fixed point against central finite differences of
    L(readout(a*(theta))) for ``n_entries`` random weight entries (float64 advised, eval mode)."""
    net = copy.deepcopy(net).eval()
    snn = net.snn

    def loss_at_fixed_point(grad: bool):
        a, drive, like = fixed_point(net, x, 1, tol=1e-13)
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


def memory_vs_T(cfg: dict, Ts, backwards, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """``step_memory`` of one training step of ``cfg``'s model for each backward and T (bytes)."""
    from ..metrics import step_memory
    from ..train import build
    rows = []
    for bw in backwards:
        for T in Ts:
            c = copy.deepcopy(cfg)
            c["T"] = int(T)
            c["method_args"] = {**c.get("method_args", {}), "backward": bw, "warn_tol": 1e9}
            if bw in ("bptt", "one_step", "exact"):
                for k in ("max_iter", "tol", "stop_mode", "solver_options"):
                    c["method_args"].pop(k, None)
            torch.manual_seed(0)
            model, method = build(c)
            xx = x
            if x.dim() == 5 and x.shape[1] != T:          # events: as many frames as steps
                reps = -(-int(T) // x.shape[1])
                xx = x.repeat(1, reps, 1, 1, 1)[:, :int(T)]
            torch.manual_seed(0)
            m = step_memory(method, xx, y)
            rows.append({"backward": bw, "T": int(T), **{k: int(v) for k, v in m.items()}})
    return rows


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


def evaluate_at_T(record: dict, Ts, *, test_subset=None) -> list[dict]:
    """Test accuracy of a finished run (its final checkpoint) evaluated with each T in ``Ts``."""
    from ..experiments.io import load_torch
    from ..experiments.runs import run_dir_for
    from ..train import build
    from ..train.trainer import DTYPES, build_data, evaluate
    cfg = record["config"]
    ck = load_torch(run_dir_for(cfg) / "checkpoint.pt", map_location="cpu")
    rows = []
    for T in Ts:
        c = copy.deepcopy(cfg)
        c["T"] = int(T)
        if test_subset is not None:
            c["data"]["test_subset"] = test_subset
        model, method = build(c)
        model.load_state_dict(ck["model"])
        _, test = build_data(c)
        ev = evaluate(method, test, c, torch.device("cpu"), DTYPES[c["dtype"]])
        rows.append({"T": int(T), "test_acc": ev["test_acc"], "mean_firing_rate": ev["mean_firing_rate"],
                     "seed": cfg["seed"], "name": cfg["name"], "train_T": cfg["T"]})
    return rows


def parameter_table(paths, reference: dict) -> list[dict]:
    """Parameter count of each run config's model against ``reference`` {config name: published key}."""
    from ..experiments import load_config, published
    from ..train import build
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
