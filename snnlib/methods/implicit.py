"""Equilibrium training methods: ``ide`` (IDE, NeurIPS 2021) and ``mpis`` (MPIS-SNN, ECCV 2024).

Both run the model's feedback SNN for T steps without an autograd graph and backpropagate
through the equilibrium of its rates (``snnlib.equilibrium.equilibrium_forward``):

    backward='broyden' (default) | 'anderson' | 'fixed_point'   implicit gradient, iterative solve
    backward='exact'                                           dense solve (tiny nets only)
    backward='one_step'                                        Jacobian-free (released MPIS code)
    backward='ide_iter'                                        IDE's released damped update (defect)
    backward='bptt'                                            the same network unrolled over T with
                                                               surrogate gradients (the baseline)

``rate='step0'`` reproduces the released MPIS rate (step-0 spikes / c_T) instead of the
lambda-weighted accumulation. Step statistics: ``solver`` (backward nstep and residuals,
forward residual ||f(a) - a|| / ||f(a)||), ``extra_memory_bytes`` (solver buffers),
``state_bytes`` (simulation state). Firing rates during evaluation come from the simulation
(spikes per neuron per step, per layer and stream).
"""
from __future__ import annotations

import inspect
import warnings

import torch
from torch.nn import functional as F

from ..equilibrium.implicit import BACKWARDS, ImplicitSolveWarning, backward_names, equilibrium_forward
from ..equilibrium.solvers import SOLVERS
from ..experiments.config import ConfigError, suggest
from ..metrics.accuracy import correct
from ..neurons import reset_net
from ..neurons.surrogate import get_surrogate
from . import register_method
from .base import Method

MAX_WARNINGS = 3
SOLVE_ARGS = ("max_iter", "tol", "stop_mode")   # every solver's; set as method arguments, not solver_options


def check_solver_options(backward: str, options) -> None:
    """ConfigError unless ``options`` are keyword arguments of ``backward``'s solver (``SOLVERS``)."""
    if not options:
        return
    if not isinstance(options, dict):
        raise ConfigError(f"method_args.solver_options must be a mapping of solver arguments, got {options!r}")
    if backward not in SOLVERS:
        raise ConfigError(f"backward {backward!r} runs no iterative solver, so method_args.solver_options "
                          f"{sorted(options)} would be ignored: remove them")
    params = inspect.signature(SOLVERS[backward]).parameters.values()
    if any(q.kind == q.VAR_KEYWORD for q in params):
        return
    valid = sorted(q.name for q in params if q.kind == q.KEYWORD_ONLY and q.name not in SOLVE_ARGS)
    for k in options:
        if k not in valid:
            where = "a method argument, not a solver option" if k in SOLVE_ARGS else \
                f"not an option of the {backward} solver.{suggest(k, valid)} Valid: {', '.join(valid) or 'none'}"
            raise ConfigError(f"method_args.solver_options: {k!r} is {where} (backward={backward!r})")


class SimulationRates:
    """Context manager: firing rates of the equilibrium simulations run inside it (evaluation)."""

    def __init__(self, method):
        self.method = method
        self._sum: dict[str, float] = {}
        self._n: dict[str, int] = {}

    def add(self, sim) -> None:
        for name, r in sim.firing_rates().items():
            self._sum[name] = self._sum.get(name, 0.0) + r
            self._n[name] = self._n.get(name, 0) + 1

    def __enter__(self):
        self.method._rate_sink = self
        return self

    def __exit__(self, *exc):
        self.method._rate_sink = None
        return False

    def rates(self) -> dict:
        return {k: self._sum[k] / self._n[k] for k in self._sum}


@register_method("ide")
class IDE(Method):
    """Implicit differentiation on the equilibrium state (IDE).

    Args:
        backward: see the module docstring; 'bptt' unrolls the same net with ``surrogate``.
        max_iter, tol, stop_mode: backward solver budget (IDE: Broyden, 30 iterations).
        solver_options: extra solver arguments (e.g. {'memory': 27}, {'m': 6}, {'tau': 0.5}).
        rate: 'weighted' (lambda-weighted accumulation) or 'step0' (released MPIS).
        warn_tol: relative residual above which the backward warns.
        eval_T: time steps at evaluation (default: T).
    """

    name = "ide"

    def __init__(self, model, *, T: int, backward: str = "broyden", max_iter: int = 30, tol: float = 1e-6,
                 stop_mode: str = "rel", solver_options: dict | None = None, rate: str = "weighted",
                 surrogate="sigmoid", warn_tol: float = 1e-2, eval_T: int | None = None):
        super().__init__(model, T=T)
        if backward != "bptt" and backward not in BACKWARDS:
            raise ValueError(f"unknown backward {backward!r}; choose 'bptt' or one of {backward_names()}")
        if rate not in ("weighted", "step0"):
            raise ValueError(f"rate must be 'weighted' or 'step0', got {rate!r}")
        if not hasattr(self.net, "snn") or not hasattr(self.net, "readout"):
            raise TypeError(f"method {self.name!r} needs an equilibrium model (snnlib.equilibrium.EquilibriumNet), "
                            f"got {type(self.net).__name__}")
        if eval_T is not None and (not isinstance(eval_T, int) or eval_T < 1):
            raise ValueError(f"eval_T must be a positive integer, got {eval_T!r}")
        check_solver_options(backward, solver_options)
        self.backward, self.rate = backward, rate
        self.surrogate = get_surrogate(surrogate)
        self.solver_kw = dict(max_iter=int(max_iter), tol=float(tol), stop_mode=stop_mode, **(solver_options or {}))
        self.warn_tol = float(warn_tol)
        self.eval_T = eval_T
        self._rate_sink = None
        self._warned = 0

    def _forward(self, x, T):
        opts = {} if self.backward in ("bptt", "one_step", "exact") else self.solver_kw
        return equilibrium_forward(self.net, x, T, backward=self.backward, rate=self.rate,
                                   surrogate=self.surrogate, warn_tol=self.warn_tol, **opts)

    def train_step(self, x, y, optimizer):
        optimizer.zero_grad(set_to_none=True)
        res = self._forward(x, self.T)
        loss = F.cross_entropy(res.logits, y)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ImplicitSolveWarning)
            loss.backward()
        unconverged = 0.0
        for w in caught:
            if issubclass(w.category, ImplicitSolveWarning):
                unconverged = 1.0
                if self._warned < MAX_WARNINGS:
                    self._warned += 1
                    tail = " (further warnings of this run are counted in step_stats)" if self._warned == MAX_WARNINGS else ""
                    warnings.warn(str(w.message) + tail, ImplicitSolveWarning, stacklevel=2)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        optimizer.step()
        reset_net(self.net)
        solver = {"forward_rel_residual": res.forward_rel_residual, "backward_unconverged": unconverged}
        extra = 0
        if res.record is not None:
            st = res.record.stats
            solver.update({f"backward_{k}": float(v) for k, v in st.items() if k != "buffer_bytes"})
            extra = int(st.get("buffer_bytes", 0))
        return {"loss": loss.item(), "correct": correct(res.logits.detach(), y), "solver": solver,
                "extra_memory_bytes": extra, "state_bytes": res.state_bytes,
                "rates": res.simulation.firing_rates()}

    def state_dict(self) -> dict:
        """How many non-convergence warnings this run has shown (at most ``MAX_WARNINGS``)."""
        return {"warned": self._warned}

    def load_state_dict(self, state: dict) -> None:
        self._warned = int(state.get("warned", 0))

    def logits(self, x):
        T = self.eval_T or self.T
        with torch.no_grad():
            res = equilibrium_forward(self.net, x, T, backward="broyden", rate=self.rate)
        if self._rate_sink is not None:
            self._rate_sink.add(res.simulation)
        return res.logits

    def monitor(self):
        """Firing rates (spikes per neuron per step) of every layer during evaluation."""
        return SimulationRates(self)


@register_method("mpis")
class MPISMethod(IDE):
    """MPIS-SNN training: the ``ide`` method on an ``mpis`` model (same options). The paper's
    "backward relies on a single-time-step simulation" is the one evaluation of the rate map
    that every backward differentiates; the released code effectively trains with
    ``backward='one_step'`` and ``rate='step0'`` (see the notes)."""

    name = "mpis"
