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
is the feedback's transpose, from layer 0 to layer N-1). Units: rates per time step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import SharedDropout
from ..neurons import rate_normaliser, ternary_step

__all__ = ["TransposedOp", "transpose_of", "SpikeSolve", "ternary_solve", "dense_solve", "rate_weight_grads",
           "cosine"]


# ----------------------------------------------------------------------------------------------
# transposed operators
# ----------------------------------------------------------------------------------------------
class TransposedOp:
    """The transpose of the linear part (no bias) of a forward map, as explicit operations.

    ``op(y)`` maps an output-shaped tensor [B, *out] to an input-shaped one [B, *in]:
    conv -> conv_transpose2d, Linear -> y @ W, ConvTranspose2d -> conv2d, AvgPool2d -> spread
    each value over its window / k^2, SharedDropout -> the same mask, Flatten -> reshape,
    Sequential -> the transposes in reverse order. ``op.reach(y)`` is the same operator with
    every nonzero weight (and mask entry) replaced by 1: summed over a 0/1 pattern it gives
    the exact number of synaptic operations that pattern triggers (``sops``).
    """

    def __init__(self, fn, reach_fn, name: str):
        self._fn, self._reach, self.name = fn, reach_fn, name

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return self._fn(y)

    def reach(self, y: torch.Tensor) -> torch.Tensor:
        return self._reach(y)

    def sops(self, y: torch.Tensor) -> int:
        """Synaptic operations of sending the nonzero entries of ``y`` through the transpose."""
        return int(round(float(self._reach((y != 0).to(y.dtype)).sum())))

    def __repr__(self) -> str:
        return f"TransposedOp({self.name})"


def _structural(w: torch.Tensor) -> torch.Tensor:
    return (w != 0).to(w.dtype)


def _conv_output_padding(in_hw, out_hw, conv: nn.Conv2d) -> tuple[int, int]:
    pads = []
    for i in range(2):
        base = (out_hw[i] - 1) * conv.stride[i] - 2 * conv.padding[i] + conv.dilation[i] * (conv.kernel_size[i] - 1) + 1
        op = in_hw[i] - base
        if not 0 <= op < max(conv.stride[i], conv.dilation[i]):
            raise ValueError(f"cannot invert the shape of {conv}: input {in_hw}, output {out_hw}")
        pads.append(op)
    return tuple(pads)


def _conv_t(conv: nn.Conv2d, in_shape, out_shape):
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ValueError(f"transpose of {conv}: only numeric zero padding is supported")
    op = _conv_output_padding(in_shape[-2:], out_shape[-2:], conv)
    kw = dict(stride=conv.stride, padding=conv.padding, output_padding=op, groups=conv.groups, dilation=conv.dilation)
    return (TransposedOp(lambda y: F.conv_transpose2d(y, conv.weight, **kw),
                         lambda y: F.conv_transpose2d(y, _structural(conv.weight), **kw), "conv2d^T"))


def _convtranspose_t(ct: nn.ConvTranspose2d):
    if ct.padding_mode != "zeros":
        raise ValueError(f"transpose of {ct}: only zero padding is supported")
    kw = dict(stride=ct.stride, padding=ct.padding, groups=ct.groups, dilation=ct.dilation)
    return TransposedOp(lambda y: F.conv2d(y, ct.weight, **kw),
                        lambda y: F.conv2d(y, _structural(ct.weight), **kw), "conv_transpose2d^T")


def _linear_t(lin: nn.Linear):
    return TransposedOp(lambda y: y @ lin.weight, lambda y: y @ _structural(lin.weight), "linear^T")


def _avgpool_t(pool: nn.AvgPool2d, in_shape, out_shape):
    k = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * 2
    s = pool.stride if isinstance(pool.stride, tuple) else (pool.stride,) * 2
    p = pool.padding if isinstance(pool.padding, tuple) else (pool.padding,) * 2
    if p != (0, 0) or pool.ceil_mode or pool.divisor_override:
        raise ValueError(f"transpose of {pool}: only unpadded, floor-mode average pooling is supported")
    C = in_shape[-3]
    op = tuple(in_shape[-2 + i] - ((out_shape[-2 + i] - 1) * s[i] + k[i]) for i in range(2))

    def weight(y, value):
        return torch.full((C, 1, *k), value, dtype=y.dtype, device=y.device)

    def fn(y, value):
        return F.conv_transpose2d(y, weight(y, value), stride=s, groups=C, output_padding=op) if max(op) < max(s) \
            else F.pad(F.conv_transpose2d(y, weight(y, value), stride=s, groups=C), (0, op[1], 0, op[0]))
    return TransposedOp(lambda y: fn(y, 1.0 / (k[0] * k[1])), lambda y: fn(y, 1.0), "avg_pool2d^T")


def _dropout_t(drop: SharedDropout):
    def mask(y):
        if not drop.training or drop.p == 0.0:
            return None
        if drop.mask is None or drop.mask.shape != y.shape:
            raise RuntimeError("SharedDropout has no mask for this batch: run the forward simulation first")
        return drop.mask

    def fn(y):
        m = mask(y)
        return y if m is None else y * m

    def reach(y):
        m = mask(y)
        return y if m is None else y * (m != 0).to(y.dtype)
    return TransposedOp(fn, reach, "dropout^T")


def _reshape_t(in_shape):
    def fn(y):
        return y.reshape(y.shape[0], *in_shape[1:])
    return TransposedOp(fn, fn, "reshape^T")


def _vjp_t(module: nn.Module, in_shape):
    """Fallback: the transpose through autograd (valid for affine modules)."""
    def fn(y):
        x0 = torch.zeros((y.shape[0], *in_shape[1:]), dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            out = module(x0)
            (gx,) = torch.autograd.grad(out, x0, y)
        return gx

    def reach(y):
        raise NotImplementedError(f"no synaptic-operation rule for {type(module).__name__}")
    return TransposedOp(fn, reach, f"vjp({type(module).__name__})")


def _shapes_through(modules, in_shape) -> list[tuple]:
    """Shapes after each module for a zero input, computed in eval mode (no dropout mask drawn)."""
    shapes = [tuple(in_shape)]
    flags = [(m, m.training) for mod in modules for m in mod.modules()]
    p = next((q for mod in modules for q in mod.parameters()), None)
    dtype = p.dtype if p is not None else torch.get_default_dtype()
    device = p.device if p is not None else None
    try:
        for m, _ in flags:
            m.training = False
        with torch.no_grad():
            h = torch.zeros((1, *in_shape[1:]), dtype=dtype, device=device)
            for mod in modules:
                h = mod(h)
                shapes.append((in_shape[0], *h.shape[1:]))
    finally:
        for m, t in flags:
            m.training = t
    return shapes


def transpose_of(module: nn.Module, in_shape, out_shape=None) -> TransposedOp:
    """Explicit transpose of the linear part of ``module`` for inputs shaped ``in_shape`` ([B, ...]).

    ``out_shape`` is computed from a zero input when not given. Unknown modules fall back to an
    autograd VJP (correct for affine maps; ``reach`` is then undefined).
    """
    in_shape = tuple(in_shape)
    if out_shape is None:
        out_shape = _shapes_through([module], in_shape)[-1]
    out_shape = tuple(out_shape)
    if isinstance(module, nn.Sequential):
        ops = []
        shapes = _shapes_through(list(module), in_shape)
        for m, si, so in zip(module, shapes[:-1], shapes[1:]):
            ops.append(transpose_of(m, si, so))
        rev = ops[::-1]

        def fn(y):
            for o in rev:
                y = o(y)
            return y

        def reach(y):
            for o in rev:
                y = o.reach(y)
            return y
        return TransposedOp(fn, reach, " . ".join(o.name for o in ops))
    if isinstance(module, nn.Conv2d):
        return _conv_t(module, in_shape, out_shape)
    if isinstance(module, nn.ConvTranspose2d):
        return _convtranspose_t(module)
    if isinstance(module, nn.Linear):
        return _linear_t(module)
    if isinstance(module, nn.AvgPool2d):
        return _avgpool_t(module, in_shape, out_shape)
    if isinstance(module, SharedDropout):
        return _dropout_t(module)
    if isinstance(module, (nn.Flatten, nn.Unflatten, nn.Identity)):
        return _reshape_t(in_shape)
    return _vjp_t(module, in_shape)


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
    """

    rates: list
    beta: list
    firing: list
    saturated: list
    T_b: int
    scale: float
    sops: int | None = None
    sops_per_layer: list = field(default_factory=list)


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
                  count_sops: bool = False) -> SpikeSolve:
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
    nspk = [0.0] * N
    sops = [0] * N
    masks = [m.to(g.dtype) for m in masks]
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
            nspk[l] += float((z[l] != 0).sum())
    c = rate_normaliser(T_b, leak)
    rates = [a / c for a in acc]   # in units of the input current: z carries the magnitude V_b
    beta = [r / scale for r in rates]
    firing = [n / (T_b * m.numel()) for n, m in zip(nspk, masks)]
    saturated = [float((r.abs() >= 0.95 * mag).to(g.dtype).mean()) for r in rates]
    return SpikeSolve(rates=rates, beta=beta, firing=firing, saturated=saturated, T_b=T_b, scale=float(scale),
                      sops=sum(sops) if count_sops else None, sops_per_layer=sops if count_sops else [])


@torch.no_grad()
def dense_solve(g: torch.Tensor, transposes, masks, *, V: float, tol: float = 1e-12, max_iter: int = 100000):
    """The same system solved without spikes: beta = g + J^T beta iterated to ``tol``.

    Returns (beta per layer, number of sweeps). Used as the exact reference of ``ternary_solve``
    for the masks of one forward pass (it converges when the loop gain is < 1).
    """
    N = len(masks)
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
