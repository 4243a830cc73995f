"""Explicit transposes of the linear maps of a feedback SNN (no autograd).

``transpose_of(module, in_shape)`` gives a ``TransposedOp``: the transpose of the linear part
(no bias) of a module, mapping an output-shaped tensor [B, *out] to an input-shaped one
[B, *in]. ``map_transpose`` does the same for a ``SynapseMap`` between two layers (op, then
its shared dropout mask; a BatchNorm in between is linearised at its input, ``bn_transpose``),
``stream_transposes`` for every map of a ``Stream``. They serve
SPIDE's spiking backward, the analytic VJP of the rate map (``FeedbackSNN.rate_map_vjp``) and
the synaptic-operation counts (``snnlib.metrics.spike_ops``). ``output_padding`` is the
output padding that makes a transposed convolution hit a given size.

Weights are read when the operator is built (detached): build it again after a weight update.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import SharedDropout

__all__ = ["TransposedOp", "transpose_of", "map_transpose", "stream_transposes", "output_padding", "bn_transpose",
           "dropout_mask"]


def output_padding(op: nn.Module, src_hw, dst_hw) -> tuple[int, int]:
    """Output padding of a transposed convolution with ``op``'s kernel, stride, padding and
    dilation (a ``Conv2d`` or ``ConvTranspose2d``) that maps a ``src_hw`` map to ``dst_hw``
    (H, W). ValueError when no padding in [0, max(stride, dilation)) gives that size."""
    pads = []
    for i in range(2):
        base = (src_hw[i] - 1) * op.stride[i] - 2 * op.padding[i] + op.dilation[i] * (op.kernel_size[i] - 1) + 1
        p = dst_hw[i] - base
        if not 0 <= p < max(op.stride[i], op.dilation[i]):
            raise ValueError(f"{op}: a transposed convolution cannot map a {tuple(src_hw)} map to {tuple(dst_hw)}")
        pads.append(p)
    return tuple(pads)


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


def _conv_t(conv: nn.Conv2d, in_shape, out_shape):
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ValueError(f"transpose of {conv}: only numeric zero padding is supported")
    op = output_padding(conv, out_shape[-2:], in_shape[-2:])
    kw = dict(stride=conv.stride, padding=conv.padding, output_padding=op, groups=conv.groups, dilation=conv.dilation)
    w = conv.weight.detach()
    return (TransposedOp(lambda y: F.conv_transpose2d(y, w, **kw),
                         lambda y: F.conv_transpose2d(y, _structural(w), **kw), "conv2d^T"))


def _convtranspose_t(ct: nn.ConvTranspose2d):
    if ct.padding_mode != "zeros":
        raise ValueError(f"transpose of {ct}: only zero padding is supported")
    kw = dict(stride=ct.stride, padding=ct.padding, groups=ct.groups, dilation=ct.dilation)
    w = ct.weight.detach()
    return TransposedOp(lambda y: F.conv2d(y, w, **kw), lambda y: F.conv2d(y, _structural(w), **kw),
                        "conv_transpose2d^T")


def _linear_t(lin: nn.Linear):
    w = lin.weight.detach()
    return TransposedOp(lambda y: y @ w, lambda y: y @ _structural(w), "linear^T")


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


def dropout_mask(drop: SharedDropout, shape) -> torch.Tensor | None:
    """The mask ``drop`` multiplies a batch shaped ``shape`` by (None: identity, in eval mode or
    with p = 0). RuntimeError when no mask of that shape has been drawn yet."""
    if not drop.training or drop.p == 0.0:
        return None
    if drop.mask is None or tuple(drop.mask.shape) != tuple(shape):
        raise RuntimeError("SharedDropout has no mask for this batch: run the forward simulation first")
    return drop.mask


def _dropout_t(drop: SharedDropout):
    def fn(y):
        m = dropout_mask(drop, y.shape)
        return y if m is None else y * m

    def reach(y):
        m = dropout_mask(drop, y.shape)
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


def bn_transpose(bn: nn.Module, z: torch.Tensor) -> TransposedOp:
    """Transpose of the Jacobian of BatchNorm ``bn`` at its input ``z`` [B, C, ...], in the mode
    ``bn(z)`` runs in. Batch statistics (training, or no running statistics): with
    xhat = (z - mean) / sigma and s = gamma / sigma per channel (biased variance, sigma with eps),
    dy -> s (dy - mean(dy) - xhat mean(dy xhat)), means over every axis but C. Running statistics:
    dy -> s dy with s = gamma / sqrt(running_var + eps). The statistics are read once, here."""
    z = z.detach()
    C = z.shape[1]
    shape = (1, C) + (1,) * (z.dim() - 2)
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones(C, dtype=z.dtype, device=z.device)
    if not (bn.training or bn.running_mean is None):
        s = (gamma * torch.rsqrt(bn.running_var + bn.eps)).view(shape)
        return TransposedOp(lambda y: y * s, lambda y: y * (s != 0).to(y.dtype), "batch_norm(running)^T")
    dims = [0] + list(range(2, z.dim()))
    n = z.numel() // C
    var, mean = torch.var_mean(z, dims, correction=0, keepdim=True)
    inv = torch.rsqrt(var + bn.eps)
    s = gamma.view(shape) * inv
    xhat = (z - mean) * inv
    s_xhat = s * xhat

    def fn(y):                  # s y - s mean(y) - s xhat mean(y xhat), in two passes over y
        m_y = y.sum(dims, keepdim=True).div_(n)
        m_yx = (y * xhat).sum(dims, keepdim=True).div_(n)
        return torch.addcmul(-(s * m_y), y, s).addcmul_(s_xhat, m_yx, value=-1.0)

    def reach(y):
        raise NotImplementedError("a batch-statistics BatchNorm couples every unit of a channel: no synaptic-operation rule")
    return TransposedOp(fn, reach, "batch_norm(batch)^T")


def map_transpose(m, in_shape, out_shape, bn_input: torch.Tensor | None = None, *,
                  dropout: bool = True) -> TransposedOp:
    """Transpose of a ``SynapseMap`` (op -> [BatchNorm] -> [dropout]) from layer shape ``out_shape``
    back to ``in_shape`` ([B, ...] each). A map with BatchNorm has no fixed transpose: give
    ``bn_input``, the BatchNorm's input z = op(x) at the point of linearisation (``bn_transpose``);
    without it, ValueError. ``dropout=False`` leaves the dropout mask out (the caller applies
    ``dropout_mask(m.drop, out_shape)`` itself, e.g. folded into another elementwise factor)."""
    has_bn = getattr(m, "has_bn", False)
    if has_bn and bn_input is None:
        raise ValueError("a synaptic map with BatchNorm has an explicit transpose only once linearised: "
                         "pass bn_input, its BatchNorm's input (the SPIDE models have no BatchNorm)")
    op = m.op if hasattr(m, "op") else m
    if hasattr(op, "spide_transpose"):
        t_op = TransposedOp(op.spide_transpose, op.spide_transpose, f"{type(op).__name__}^T")
    else:
        last = op[-1] if isinstance(op, nn.Sequential) else op
        if isinstance(last, nn.ConvTranspose2d) or op is last:   # the output size is the target layer's
            t_op = transpose_of(op, in_shape, out_shape)
        else:
            t_op = transpose_of(op, in_shape)
    if has_bn:
        b_op = bn_transpose(m.bn, bn_input)
        t_op = _then(b_op, t_op)
    drop = getattr(m, "drop", None)
    if drop is None or not dropout:
        return t_op
    return _then(_dropout_t(drop), t_op)


def _then(first: TransposedOp, second: TransposedOp) -> TransposedOp:
    """``second`` after ``first``."""
    return TransposedOp(lambda y: second(first(y)), lambda y: second.reach(first.reach(y)),
                        f"{second.name} . {first.name}")


def stream_transposes(stream, shapes, bn_inputs=None) -> list:
    """``TransposedOp`` of every map of a ``Stream``: entry l maps layer (l+1) % N back to layer l.

    ``shapes``: the N layer shapes [B, ...] (e.g. of the simulated rates). ``bn_inputs``: for
    maps with BatchNorm, entry l is map l's BatchNorm input (see ``map_transpose``); None else."""
    maps = stream.layer_maps()
    N = len(maps)
    if len(shapes) != N:
        raise ValueError(f"the stream has {N} layers but {len(shapes)} shapes were given")
    bn_inputs = [None] * N if bn_inputs is None else list(bn_inputs)
    if len(bn_inputs) != N:
        raise ValueError(f"the stream has {N} maps but {len(bn_inputs)} BatchNorm inputs were given")
    return [map_transpose(m, tuple(shapes[l]), tuple(shapes[(l + 1) % N]), bn_inputs[l]) for l, m in enumerate(maps)]
