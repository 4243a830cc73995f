"""Implicit differentiation at the equilibrium of a feedback SNN.

Forward: the SNN is simulated for T steps under no_grad; its rates a estimate the fixed point
a = f(a) of the rate map. Backward: with g = dL/da, solve (I - J^T) beta = g, J = df/da at the
SNN's estimate, using vector-Jacobian products through one evaluation of f, then backpropagate
beta once through f (to the parameters and the inputs). Memory therefore does not depend on T:
one graph of f plus the solver's buffers.

``implicit_rates(fa, a, backward=...)`` is the autograd glue: its value is ``a`` (the SNN's
estimate), its gradient flows into ``fa = f(a)`` as beta. Backwards are pluggable by name
(``BACKWARDS``; SPIDE registers "spike"):

    broyden | anderson | fixed_point | ide_iter   solve with ``solvers.SOLVERS[name]``
    one_step                                      beta = g (Jacobian-free; released MPIS)
    exact                                         dense J and ``torch.linalg.solve`` (small nets)

Speed: when the network allows it (linear loop maps, their BatchNorm linearised at the rate map's
point, MPIS's current fusion), every VJP is computed without autograd from explicit transposes and
the clamps' masks (``FeedbackSNN.rate_map_vjp``); otherwise (BatchNorm in a feedback map, a
nonlinear map) the graph of f(a) is built once per step and every VJP
reuses it (``autograd.grad`` with ``retain_graph``), the rate map's clamps (``clamp01``) saving
their derivative masks so that a VJP re-derives nothing. The solvers keep their history in
reused buffers (``solvers.Workspace``).

A backward whose relative residual stays above ``warn_tol`` warns (``ImplicitSolveWarning``)
with its residual; a non-finite beta raises ``FloatingPointError`` (never a silent NaN).

``equilibrium_forward(net, x, T, ...)`` runs a whole model (stem -> FeedbackSNN -> readout) with
any backward, or unrolled with surrogate gradients (``backward="bptt"``) on the same network.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..layers.feedback_norm import power_iterate
from ..registry import Registry
from .solvers import SOLVERS, get_solver

EXACT_MAX_DIM = 8192


class _Clamp01(torch.autograd.Function):
    """clamp(x, 0, 1) that saves its derivative as a 0/1 mask of x's dtype: every VJP of the rate map
    then costs one multiply per clamp instead of torch's ClampBackward (two compares, an and and a
    ``where`` with a bool mask, about 10x slower on CPU). Same values as ``torch.clamp``; the same
    gradients except that a NaN reaching a clipped neuron stays NaN (the implicit backward raises
    on it) instead of becoming 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward((x > 0.0).logical_and_(x < 1.0).to(x.dtype))    # torch's: 0 at x = 0 and 1
        return torch.clamp(x, 0.0, 1.0)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask


def clamp01(x: torch.Tensor) -> torch.Tensor:
    """sigma(x) = clamp(x, 0, 1) of the rate map (any shape), cheap to differentiate repeatedly."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Clamp01.apply(x)
    return torch.clamp(x, 0.0, 1.0)


class ImplicitSolveWarning(RuntimeWarning):
    """The backward linear solve did not reach its tolerance."""


@dataclass
class BackwardProblem:
    """The linear system (I - J^T) beta = grad at one equilibrium.

    ``vjp(v)`` returns J^T v (shaped like ``state``); ``state`` is the SNN's estimate a
    (detached, [B, n]); ``context`` carries model-specific objects for custom backwards
    (an ``EquilibriumContext`` from ``equilibrium_forward``)."""

    vjp: Callable
    grad: torch.Tensor
    state: torch.Tensor
    context: object = None


BACKWARDS = Registry("backward")
"""Backwards by name: ``fn(problem: BackwardProblem, **options) -> (beta, stats)``."""


def register_backward(name: str):
    """Decorator: ``fn(problem: BackwardProblem, **options) -> (beta, stats: dict)``; beta None means
    the backward has already accumulated its gradients into ``.grad`` (nothing is backpropagated through f)."""
    return BACKWARDS.register(name)


def backward_names() -> list[str]:
    return BACKWARDS.names()


def _solver_backward(name):
    def fn(problem: BackwardProblem, *, max_iter: int = 30, tol: float = 1e-6, stop_mode: str = "rel",
           **options):
        g = problem.grad
        solver = get_solver(name)
        x0 = g.clone() if name == "ide_iter" else torch.zeros_like(g)    # IDE's "iter" starts at g
        beta, stat = solver(lambda b: problem.vjp(b) + g, x0, max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                            **options)
        return beta, stat
    fn.__name__ = f"{name}_backward"
    fn.__doc__ = f"Solve beta = J^T beta + g with the {name} solver (starting from 0)."
    return fn


for _name in SOLVERS:
    register_backward(_name)(_solver_backward(_name))


@register_backward("one_step")
def one_step_backward(problem: BackwardProblem, **_):
    """beta = g: the Jacobian-free (1-step phantom, tau = 1) gradient of the released MPIS code."""
    return problem.grad, {"nstep": 0, "rel_lowest": float("nan"), "abs_lowest": float("nan"), "buffer_bytes": 0}


def dense_jacobian(vjp: Callable, state: torch.Tensor) -> torch.Tensor:
    """J = df/da as an [N, N] matrix over the flattened batch state (N = state.numel())."""
    N = state.numel()
    if N > EXACT_MAX_DIM:
        raise ValueError(f"the exact backward builds a dense {N}x{N} Jacobian; limit is {EXACT_MAX_DIM} "
                         "(use a small net or batch, or an iterative backward)")
    eye = torch.eye(N, dtype=state.dtype, device=state.device).reshape(N, *state.shape)
    rows = torch.stack([vjp(e) for e in eye])          # rows[i] = J^T e_i = J[i, :]
    return rows.reshape(N, N)


@register_backward("exact")
def exact_backward(problem: BackwardProblem, **_):
    """Dense solve of (I - J^T) beta = g over the whole batch (float64 checks on small nets)."""
    s = problem.state
    J = dense_jacobian(problem.vjp, s)
    N = J.shape[0]
    A = torch.eye(N, dtype=torch.float64, device=s.device) - J.double().T
    beta = torch.linalg.solve(A, problem.grad.reshape(N).double()).to(s.dtype).reshape(s.shape)
    res = float((A @ beta.reshape(N).double() - problem.grad.reshape(N).double()).norm())
    rel = res / (float(problem.grad.norm()) + 1e-30)
    return beta, {"nstep": 1, "abs_lowest": res, "rel_lowest": rel, "buffer_bytes": J.numel() * J.element_size()}


def _as_dict(stat) -> dict:
    if hasattr(stat, "summary"):
        return stat.summary()
    return dict(stat or {})


@dataclass
class BackwardRecord:
    """Filled in during the backward pass: solver statistics and the full stat object."""

    name: str
    stats: dict = field(default_factory=dict)
    stat: object = None
    called: int = 0


class _ImplicitGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fa, value, solve):
        ctx.solve = solve
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        beta = ctx.solve(grad)
        return beta, None, None


def implicit_rates(fa: torch.Tensor, a: torch.Tensor, *, backward: str = "broyden", warn_tol: float = 1e-2,
                   context=None, record: BackwardRecord | None = None, vjp: Callable | None = None, **options):
    """Value ``a`` (the SNN's estimate, [B, n]) with the implicit gradient through ``fa = f(a)``.

    ``a`` must be the leaf on which ``fa`` was computed (``requires_grad=True``). ``options`` go to
    the backward (``max_iter``, ``tol``, ``stop_mode``, solver options). ``vjp``: v -> J^T v at
    ``a`` computed without autograd (e.g. ``FeedbackSNN.rate_map_vjp``); None: autograd through
    the graph of ``fa``. Returns the output tensor; statistics land in ``record`` (a
    ``BackwardRecord``) during the backward pass.
    """
    if backward not in BACKWARDS:
        raise ValueError(f"unknown backward {backward!r}; choose one of {backward_names()}")
    if not a.requires_grad or a.grad_fn is not None:
        raise ValueError("a must be a leaf tensor with requires_grad=True on which fa = f(a) was evaluated")
    if fa.shape != a.shape:
        raise ValueError(f"f(a) has shape {tuple(fa.shape)} but a has {tuple(a.shape)}")
    record = record if record is not None else BackwardRecord(backward)
    fn = BACKWARDS[backward]

    def autograd_vjp(v):
        if not fa.requires_grad:
            return torch.zeros_like(v)
        (out,) = torch.autograd.grad(fa, a, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if out is None else out

    if vjp is None:
        vjp = autograd_vjp

    def solve(g):
        if not torch.isfinite(g).all():
            raise FloatingPointError("the gradient reaching the equilibrium (dL/da) contains NaN or inf")
        problem = BackwardProblem(vjp=vjp, grad=g, state=a.detach(), context=context)
        beta, stat = fn(problem, **options)
        stats = _as_dict(stat)
        record.stat, record.stats, record.called = stat, stats, record.called + 1
        if beta is None:        # the backward wrote its gradients itself (SPIDE): nothing flows through f
            return None
        rel = stats.get("rel_lowest", float("nan"))
        if not torch.isfinite(beta).all():
            raise FloatingPointError(f"the {backward} backward returned NaN or inf (relative residual {rel:.3g}); "
                                     "the equilibrium is probably unstable (check the feedback norm or the lr)")
        if isinstance(rel, float) and math.isfinite(rel) and rel > warn_tol:
            warnings.warn(f"implicit backward '{backward}' did not converge: relative residual {rel:.3g} "
                          f"after {stats.get('nstep')} steps (warn_tol {warn_tol:g})", ImplicitSolveWarning,
                          stacklevel=2)
        return beta

    out = _ImplicitGrad.apply(fa, a.detach(), solve)
    out.implicit_record = record
    return out


# ----------------------------------------------------------------------------------------------
# a whole equilibrium model
# ----------------------------------------------------------------------------------------------
@dataclass
class EquilibriumContext:
    """What a custom backward may need: the network, the batch's drive and its simulation."""

    snn: object
    drive: object
    simulation: object
    shapes: list


@dataclass
class EquilibriumResult:
    """``logits`` [B, K]; ``simulation`` (rates and firing); ``record`` (backward statistics after
    ``loss.backward()``); ``forward_rel_residual`` ||f(a) - a|| / ||f(a)|| at the SNN's estimate
    (NaN when f was not evaluated); ``state_bytes`` (simulation state)."""

    logits: torch.Tensor
    simulation: object
    record: BackwardRecord | None = None
    forward_rel_residual: float = float("nan")
    state_bytes: int = 0


def equilibrium_forward(net, x: torch.Tensor, T: int, *, backward: str = "broyden", rate: str = "weighted",
                        surrogate="sigmoid", warn_tol: float = 1e-2, **options) -> EquilibriumResult:
    """Run an equilibrium model: ``net.encode`` -> ``net.snn`` -> ``net.readout``.

    ``x``: static batch [B, ...] or events [B, T, ...]. With autograd enabled and ``backward`` an
    implicit backward, the readout sees the SNN's rates with the implicit gradient; with
    ``backward="bptt"`` the SNN is unrolled with ``surrogate`` gradients instead. Under no_grad
    (evaluation) only the simulation runs. ``options`` go to the backward solver.
    """
    snn = net.snn
    inputs, events = net.encode(x, T)
    training_graph = torch.is_grad_enabled()
    if net.training and training_graph:
        power_iterate(snn)                      # IDE: one power iteration per training batch
    drive = snn.drive(inputs, events=events)
    if backward == "bptt":
        if not training_graph:
            with torch.no_grad():
                sim = snn.simulate(drive, T, rate=rate)
        else:
            sim = snn.simulate(drive, T, rate=rate, surrogate=surrogate)
        return EquilibriumResult(net.readout(sim.last), sim, state_bytes=sim.state_bytes)
    with torch.no_grad():
        sim = snn.simulate(drive, T, rate=rate)
    if not training_graph:
        return EquilibriumResult(net.readout(sim.last), sim, state_bytes=sim.state_bytes)
    a = snn.pack(sim.last).detach().requires_grad_()
    layers = snn.rate_map(snn.unpack(a, sim.last), drive, all_layers=True)
    fa = snn.pack([rates[-1] for rates in layers])
    with torch.no_grad():
        fres = float((fa - a).norm() / (fa.norm() + 1e-12))
    record = BackwardRecord(backward)
    ctx = EquilibriumContext(snn, drive, sim, [t.shape for t in sim.last])
    vjp = snn.rate_map_vjp([[r.detach() for r in rates] for rates in layers])
    z = implicit_rates(fa, a, backward=backward, warn_tol=warn_tol, context=ctx, record=record, vjp=vjp, **options)
    logits = net.readout(snn.unpack(z, sim.last))
    state = sim.state_bytes + 2 * a.numel() * a.element_size()
    return EquilibriumResult(logits, sim, record, fres, state)
