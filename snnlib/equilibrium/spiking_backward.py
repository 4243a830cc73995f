"""SPIDE's spike-based backward: ternary spiking neurons solve the implicit-gradient system.

The forward pass (``FeedbackSNN.simulate``) gives per-layer weighted rates a_l and the masks
m_l = 1[0 < a_l < 1]. With g = dL/da_N and V = V_th - u_rest, the implicit gradient
beta_l = total dL/da_l solves (layers 1..N, feedback N -> 1)

    beta_N = g + (1/V) W_N^T (m_1 * beta_1)
    beta_l = (1/V) W_l^T (m_(l+1) * beta_(l+1)),   l = N-1 .. 1

which is (I - J^T) beta = g, the system IDE solves with Broyden. SPIDE solves it with one
ternary neuron per forward neuron (thresholds +-v_th_b, spike magnitude V_b = v_th_b - u_rest_b)
run for ``T_b`` steps: the last layer integrates ``scale * g`` every step, every other layer
integrates the gated, transposed spikes of the layer above, and the signed rates r_l estimate
``scale * beta_l`` (``ternary_solve``). Weight gradients then come from the two stages of
average rates: dL/dW_l = (1/V) (m_(l+1) * beta_(l+1)) a_l^T (``rate_weight_grads``).

Layer indices in this module are 0-based: layer ``l`` = 0 .. N-1. ``transposes[l]`` maps a
tensor shaped like layer ``(l+1) % N`` to one shaped like layer ``l`` (so ``transposes[N-1]``
is the feedback's transpose, from layer 0 to layer N-1; built by ``transpose.stream_transposes``).
Units: rates per time step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..neurons import rate_normaliser, ternary_step
from .implicit import register_backward
from .transpose import TransposedOp, map_transpose, stream_transposes, transpose_of

__all__ = ["TransposedOp", "transpose_of", "map_transpose", "stream_transposes", "SpikeSolve", "ternary_solve",
           "dense_solve", "rate_weight_grads",
           "cosine", "auto_scale", "SpikeSaturationWarning", "AUTO_DRIVE"]

AUTO_DRIVE = 0.5   # scale="auto": the largest per-step drive s |g| of the batch, in spike magnitudes V_b


class SpikeSaturationWarning(RuntimeWarning):
    """SPIDE's backward neurons saturate: the scale s is too large for this gradient magnitude."""


def auto_scale(g: torch.Tensor, v_b: float, drive: float = AUTO_DRIVE) -> float:
    """s = drive * V_b / max|g|: the strongest per-step input of the last backward layer is
    ``drive`` spike magnitudes, so rates stay below the clip +-V_b while the gradient is resolved
    by many spikes. [derived] On the notebook's 784-256-128 FC net (float64, T = 30, T_b = 100)
    this gives cosine >= 0.997 with the exact per-layer gradient at batch 4 and 32, where a fixed
    s = 100 saturates 15% of the backward neurons at batch 4 (cosine 0.956). Zero g gives s = 1."""
    m = float(g.detach().abs().max()) if g.numel() else 0.0
    return drive * float(v_b) / m if m > 0 and math.isfinite(m) else 1.0


# ----------------------------------------------------------------------------------------------
# the ternary spiking solve
# ----------------------------------------------------------------------------------------------
@dataclass
class SpikeSolve:
    """Result of ``ternary_solve``.

    ``rates[l]``: signed, leak-weighted rate r_l of layer l's backward neurons (spike magnitude
    units), estimating ``scale * beta_l``; ``beta[l] = rates[l] / scale``. ``firing[l]``: mean
    number of nonzero spikes per neuron per step (in [0, 1]). ``saturated[l]``: fraction of
    neurons whose |r| reached 0.95 V_b (rates clip there: scale too large). ``sops``: synaptic
    operations of the transposed, gated spikes over all T_b steps (whole batch), when counted.
    ``history``: {k: SpikeSolve of the first k steps} for the requested checkpoints.
    """

    rates: list
    beta: list
    firing: list
    saturated: list
    T_b: int
    scale: float
    sops: int | None = None
    sops_per_layer: list = field(default_factory=list)
    history: dict = field(default_factory=dict)


def _check_solve_args(g, transposes, masks, T_b, V, scale, v_th_b, u_rest_b):
    if not isinstance(T_b, int) or isinstance(T_b, bool) or T_b <= 0:
        raise ValueError(f"T_b must be a positive integer number of backward steps, got {T_b!r}")
    if len(transposes) != len(masks) or not masks:
        raise ValueError(f"need one transposed map and one mask per layer, got {len(transposes)} maps "
                         f"and {len(masks)} masks")
    if tuple(g.shape) != tuple(masks[-1].shape):
        raise ValueError(f"g has shape {tuple(g.shape)} but the last layer is {tuple(masks[-1].shape)}")
    if not V > 0:
        raise ValueError(f"V = V_th - u_rest must be > 0, got {V}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    if not v_th_b > 0 or not v_th_b - u_rest_b > 0:
        raise ValueError(f"backward threshold must be > 0 and above u_rest_b, got v_th_b={v_th_b}, u_rest_b={u_rest_b}")
    if not torch.isfinite(g).all():
        raise ValueError("the gradient fed to the spiking backward contains NaN or inf")


@torch.no_grad()
def ternary_solve(g: torch.Tensor, transposes, masks, *, T_b: int, V: float, scale: float = 1.0,
                  v_th_b: float = 0.5, u_rest_b: float | None = None, leak: float = 1.0,
                  count_sops: bool = False, checkpoints=()) -> SpikeSolve:
    """Run the ternary backward neurons for ``T_b`` steps; returns a ``SpikeSolve``.

    Args:
        g: dL/da_N, shaped like the last layer [B, ...] (unscaled).
        transposes: N callables, ``transposes[l]`` = W_l^T from layer (l+1) % N to layer l
            (``TransposedOp`` for op counts). masks: N tensors m_l in {0, 1}, layer shapes.
        T_b: backward steps. V: forward V_th - u_rest (the 1/V of the rate map).
        scale: s; the last layer integrates s * g per step, and beta = r / s.
        v_th_b, u_rest_b: backward thresholds +-v_th_b, reset potential (default -v_th_b, the
            modified reset; 0 gives the plain subtraction of v_th_b). leak: lambda (1 = IF);
            the rates are then lambda-weighted like the forward ones.
        count_sops: count synaptic operations (needs ``TransposedOp``s).
        checkpoints: step counts k < T_b at which to also return the result of a k-step solve
            (the first k steps do not depend on T_b), in ``SpikeSolve.history[k]``.
    Dynamics (step k): v_N += s g + [k >= 1] (1/V) W_N^T(m_1 z_1[k-1]); fire; then for
    l = N-1..1: v_l += (1/V) W_l^T(m_(l+1) z_(l+1)[k]); fire. Memory does not grow with T_b.
    """
    u_rest_b = -v_th_b if u_rest_b is None else float(u_rest_b)
    _check_solve_args(g, transposes, masks, T_b, V, scale, v_th_b, u_rest_b)
    N = len(masks)
    mag = v_th_b - u_rest_b
    drive = g * scale
    inv_v = 1.0 / V
    v = [torch.zeros_like(m, dtype=g.dtype) for m in masks]
    z = [torch.zeros_like(m, dtype=g.dtype) for m in masks]
    acc = [torch.zeros_like(m, dtype=g.dtype) for m in masks]
    nspk = [torch.zeros((), dtype=torch.int64, device=g.device) for _ in range(N)]   # on device: no sync per step
    sops = [0] * N
    masks = [m.to(g.dtype) for m in masks]
    checkpoints = sorted({int(c) for c in checkpoints if 0 < int(c) < T_b})
    history = {}
    for k in range(T_b):
        for l in range(N - 1, -1, -1):
            if l == N - 1:
                x = drive
                if k > 0:
                    gated = masks[0] * z[0]
                    x = x + inv_v * transposes[N - 1](gated)
                    if count_sops:
                        sops[N - 1] += transposes[N - 1].sops(gated)
            else:
                gated = masks[l + 1] * z[l + 1]
                x = inv_v * transposes[l](gated)
                if count_sops:
                    sops[l] += transposes[l].sops(gated)
            z[l], v[l] = ternary_step(x, v[l], leak=leak, v_th=v_th_b, u_rest=u_rest_b)
            acc[l] = leak * acc[l] + z[l] if leak != 1.0 else acc[l] + z[l]
            nspk[l] = nspk[l] + (z[l] != 0).sum()
        if k + 1 in checkpoints:
            history[k + 1] = _solve_result(acc, nspk, sops, masks, k + 1, leak, scale, mag, count_sops)
    out = _solve_result(acc, nspk, sops, masks, T_b, leak, scale, mag, count_sops)
    out.history = history
    return out


def _solve_result(acc, nspk, sops, masks, T_b, leak, scale, mag, count_sops) -> SpikeSolve:
    c = rate_normaliser(T_b, leak)
    rates = [a / c for a in acc]   # in units of the input current: z carries the magnitude V_b
    beta = [r / scale for r in rates]
    firing = [float(n) / (T_b * m.numel()) for n, m in zip(nspk, masks)]
    saturated = [float((r.abs() >= 0.95 * mag).to(r.dtype).mean()) for r in rates]
    return SpikeSolve(rates=rates, beta=beta, firing=firing, saturated=saturated, T_b=T_b, scale=float(scale),
                      sops=sum(sops) if count_sops else None, sops_per_layer=list(sops) if count_sops else [])


@torch.no_grad()
def dense_solve(g: torch.Tensor, transposes, masks, *, V: float, tol: float | None = None, max_iter: int = 100000):
    """The same system solved without spikes: beta = g + J^T beta iterated until the largest
    change is below ``tol`` times the largest |beta| (default: 100 machine epsilons of g's dtype).

    Returns (beta per layer, number of sweeps). Used as the exact reference of ``ternary_solve``
    for the masks of one forward pass (it converges when the loop gain is < 1).
    """
    N = len(masks)
    if tol is None:
        tol = 100 * torch.finfo(g.dtype).eps
    masks = [m.to(g.dtype) for m in masks]
    beta = [torch.zeros_like(m, dtype=g.dtype) for m in masks]
    for it in range(1, max_iter + 1):
        new = [None] * N
        new[N - 1] = g + transposes[N - 1](masks[0] * beta[0]) / V
        for l in range(N - 2, -1, -1):
            new[l] = transposes[l](masks[l + 1] * new[l + 1]) / V
        diff = max(float((a - b).abs().max()) for a, b in zip(new, beta))
        beta = new
        scale = max(float(b.abs().max()) for b in beta) or 1.0
        if diff <= tol * scale:
            return beta, it
    raise RuntimeError(f"dense_solve did not converge in {max_iter} sweeps (last change {diff:.3g}); "
                       "the loop gain of the feedback is probably >= 1")


def rate_weight_grads(maps, inputs, masks, beta, *, V: float) -> None:
    """Accumulate dL/dtheta into ``.grad`` from the two stages of average rates.

    ``maps[l]`` maps ``inputs[l]`` (layer l's forward rate a_l, or the input x for the input map)
    to the current of layer ``targets``; the cotangent is (1/V) m * beta of the target layer.
    Pass aligned lists: ``maps[i](inputs[i])`` has the shape of ``masks[i]`` and ``beta[i]``.
    Biases receive (1/V) sum over the batch of m * beta; weights the outer products.
    """
    outs, cots = [], []
    with torch.enable_grad():
        for mp, a, m, b in zip(maps, inputs, masks, beta):
            y = mp(a.detach())
            if tuple(y.shape) != tuple(b.shape):
                raise ValueError(f"map output {tuple(y.shape)} does not match its layer {tuple(b.shape)}")
            if y.requires_grad:
                outs.append(y)
                cots.append((m.to(b.dtype) * b / V).to(y.dtype))
        if outs:
            torch.autograd.backward(outs, cots)


def cosine(a, b) -> float:
    """Cosine similarity of two tensors (or lists of tensors, flattened and concatenated)."""
    if isinstance(a, (list, tuple)):
        a = torch.cat([t.reshape(-1) for t in a])
        b = torch.cat([t.reshape(-1) for t in b])
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else float("nan")


# ----------------------------------------------------------------------------------------------
# SPIDE as a backward of the shared implicit machinery
# ----------------------------------------------------------------------------------------------
def _call_map(m, a, target_shape):
    """Apply a ``SynapseMap`` to a_l, fixing a transposed convolution's output size to the layer's."""
    if len(target_shape) == 4 and hasattr(m, "linear"):
        return m(a, output_size=tuple(target_shape[-2:]))
    return m(a)


def layer_masks(rates) -> list:
    """m_l = 1[0 < a_l < 1]: the neurons whose rate is not clipped (the clamp's derivative)."""
    return [((a > 0) & (a < 1)).to(a.dtype) for a in rates]


def apply_rate_gradients(snn, drive, rates, masks, beta) -> None:
    """Accumulate SPIDE's parameter gradients of one stream into ``.grad``.

    Loop maps: dL/dtheta_l from a_l (forward rate) and (1/V) m * beta of the target layer.
    Input map (and anything before it): the current I = F(x) (x_bar for events) receives the
    cotangent (1/V) m_1 * beta_1 through the drive's graph."""
    stream = snn.streams[0]
    maps = stream.layer_maps()
    N = len(maps)
    V = snn.map_divisor
    tgt = [(l + 1) % N for l in range(N)]
    wrapped = [(lambda a, m=m, shp=tuple(rates[t].shape): _call_map(m, a, shp)) for m, t in zip(maps, tgt)]
    rate_weight_grads(wrapped, list(rates), [masks[t] for t in tgt], [beta[t] for t in tgt], V=V)
    I = drive.static[0]
    if I.requires_grad:
        torch.autograd.backward(I, (masks[0] * beta[0] / V).to(I.dtype), retain_graph=True)


def _spide_problem(problem):
    ctx = problem.context
    if ctx is None or not hasattr(ctx, "simulation"):
        raise ValueError("the SPIDE backwards need the EquilibriumContext of equilibrium_forward (snn, drive, "
                         "simulation); call them through snnlib.equilibrium.equilibrium_forward")
    snn, drive, sim = ctx.snn, ctx.drive, ctx.simulation
    if len(snn.streams) != 1:
        raise ValueError(f"SPIDE's backward supports one stream, the network has {len(snn.streams)}")
    if snn.map_scale != "V":
        raise ValueError("SPIDE's backward needs the rate map scaled by 1/V (map_scale='V')")
    rates = sim.rates[0]
    g = snn.unpack(problem.grad, sim.last)[0]
    return snn, drive, rates, g


@dataclass
class SpikeBackwardStat:
    """Statistics of one SPIDE backward (``summary()`` feeds the per-step training statistics)."""

    solve: SpikeSolve | None
    nstep: int
    buffer_bytes: int
    names: list

    def summary(self) -> dict:
        out = {"nstep": self.nstep, "abs_lowest": float("nan"), "rel_lowest": float("nan"),
               "buffer_bytes": self.buffer_bytes}
        if self.solve is not None:
            s = self.solve
            n = [m for m in s.rates]
            total = sum(t.numel() for t in n)
            out["backward_firing"] = sum(f * t.numel() for f, t in zip(s.firing, n)) / total
            out["saturated"] = sum(f * t.numel() for f, t in zip(s.saturated, n)) / total
            out["scale"] = s.scale
            if s.sops is not None:
                out["backward_sops"] = float(s.sops)
        return out

    def per_layer(self) -> dict:
        """{layer name: backward firing rate} (spikes per neuron per step)."""
        if self.solve is None:
            return {}
        return dict(zip(self.names, self.solve.firing))


@register_backward("spike")
def spike_backward(problem, *, T_b: int = 250, scale: float = 1.0, loss_scaled: bool = False,
                   v_th_b: float = 0.5, u_rest_b: float | None = None, count_sops: bool = False, **_):
    """SPIDE: ternary spiking neurons solve the per-layer system for T_b steps; the parameter
    gradients are written from the forward rates and the backward signed rates.

    ``scale``: s (the last layer integrates s g per step). ``loss_scaled=True``: the loss was
    already multiplied by s (the released recipe), so g is fed as it is and the gradients stay
    s-scaled. Returns beta = None: the gradients are already in ``.grad`` and nothing is
    backpropagated through the rate map f."""
    snn, drive, rates, g = _spide_problem(problem)
    masks = layer_masks(rates)
    tr = stream_transposes(snn.streams[0], [r.shape for r in rates])
    if scale == "auto" and loss_scaled:
        raise ValueError("scale='auto' picks s per batch and cannot be combined with a loss scaled by s")
    u_b = -v_th_b if u_rest_b is None else float(u_rest_b)
    s = 1.0 if loss_scaled else (auto_scale(g, v_th_b - u_b) if scale == "auto" else float(scale))
    sol = ternary_solve(g, tr, masks, T_b=int(T_b), V=snn.map_divisor, scale=s, v_th_b=v_th_b,
                        u_rest_b=u_rest_b, leak=snn.leak, count_sops=count_sops)
    apply_rate_gradients(snn, drive, rates, masks, sol.beta)
    nbytes = sum(3 * r.numel() * r.element_size() for r in rates)
    return None, SpikeBackwardStat(sol, int(T_b), nbytes, snn.layer_names()[0])

@register_backward("spide_exact")
def spide_exact_backward(problem, *, tol: float | None = None, **_):
    """SPIDE's per-layer system with the same masks and forward rates, solved without spikes
    (the T_b -> infinity limit of ``spike``); same rate-based parameter gradients."""
    snn, drive, rates, g = _spide_problem(problem)
    masks = layer_masks(rates)
    tr = stream_transposes(snn.streams[0], [r.shape for r in rates])
    beta, sweeps = dense_solve(g, tr, masks, V=snn.map_divisor, tol=tol)
    apply_rate_gradients(snn, drive, rates, masks, beta)
    return None, SpikeBackwardStat(None, sweeps, 0, snn.layer_names()[0])

