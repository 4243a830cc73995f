"""Equilibrium training: fixed-point solvers, feedback SNNs, implicit differentiation, statistics.

- ``solvers``: ``broyden``, ``anderson``, ``fixed_point`` (damped), ``ide_iter`` (IDE's released,
  mis-derived update) behind ``solver(f, x0, *, max_iter, tol, stop_mode) -> (z, SolverStat)``.
- ``feedback``: ``FeedbackSNN`` (streams of LIF layers with a delayed feedback, optional MPIS
  fusion), its no_grad ``simulate`` and differentiable ``rate_map``; ``EquilibriumNet`` base.
- ``implicit``: ``implicit_rates`` (value = SNN rates, gradient = implicit solve) with pluggable
  backwards (``BACKWARDS``: broyden, anderson, fixed_point, ide_iter, one_step, exact, ...),
  ``equilibrium_forward`` for whole models (also unrolled BPTT on the same net).
- ``transpose``: explicit transposes of the synaptic maps (``transpose_of``, ``map_transpose``,
  ``stream_transposes``, ``output_padding``), shared by SPIDE's spiking backward, the rate map's
  analytic VJP (``FeedbackSNN.rate_map_vjp``) and the synaptic-operation counts.

The notebook's measurements on these (forward convergence, backward residuals, gradient quality,
memory against T) live above the core, in ``snnlib.studies.ide_mpis`` and ``snnlib.studies.spide``.
"""
from .feedback import (Drive, EquilibriumNet, FeedbackSNN, Simulation, Stream, StreamFusion, SynapseMap, apply_bn,
                       bn_affine, ide_init_, weighted_frame_mean)
from .implicit import (BACKWARDS, BackwardProblem, BackwardRecord, EquilibriumContext, EquilibriumResult,
                       ImplicitSolveWarning, backward_names, dense_jacobian, equilibrium_forward, implicit_rates,
                       register_backward)
from .solvers import SOLVERS, SolverStat, anderson, broyden, fixed_point, get_solver, ide_iter, register_solver
from . import spiking_backward  # noqa: E402,F401  (registers SPIDE's "spike" and "spide_exact" backwards)

__all__ = [
    "SOLVERS", "SolverStat", "anderson", "broyden", "fixed_point", "ide_iter", "get_solver", "register_solver",
    "FeedbackSNN", "Stream", "StreamFusion", "SynapseMap", "Drive", "Simulation", "EquilibriumNet", "apply_bn",
    "bn_affine", "ide_init_", "weighted_frame_mean",
    "BACKWARDS", "BackwardProblem", "BackwardRecord", "EquilibriumContext", "EquilibriumResult",
    "ImplicitSolveWarning", "backward_names", "dense_jacobian", "equilibrium_forward", "implicit_rates",
    "register_backward",
]
