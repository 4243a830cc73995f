"""Fused multi-step LIF: the whole [T, B, ...] sequence in one autograd node.

Same maths as looping ``functional.lif_step`` over time (the reference), computed with a
few in-place ops per step into preallocated buffers. The forward saves one tensor for the
backward, the pre-spike potential ``h`` [T, B, ...]; the backward recomputes the spikes
and surrogate derivatives from it, step by step, and runs the linear recurrence

    g_h[t] = A[t] + D[t] * g_v[t],   g_v[t] = leak * g_h[t + 1],   g_x[t] = g_h[t]

by hand, where ``A = sg * g_s`` (sg: surrogate derivative at h - v_th, g_s: gradient of
the spikes) and ``D = dv'/dh`` of the reset: soft ``1 - (v_th - u_rest) sg``, hard
``(1 - s) + (v_reset - h) sg``, and ``1`` (soft, 'none') or ``1 - s`` (hard) with
``detach_reset``. The forward is bit-identical to the reference (same rounding order);
gradients agree to rounding (tests: 1e-10 in float64). No double backward.
"""
from __future__ import annotations

import math

import torch

from .functional import RESETS
from .surrogate import ATan, Rectangle, Sigmoid, Surrogate, Triangle


def surrogate_derivative_(surrogate: Surrogate | None, z: torch.Tensor) -> torch.Tensor:
    """``surrogate.derivative(z)`` computed in place in ``z`` for the built-in surrogates
    (no temporaries the size of the sequence); other surrogates use their own method.
    A plain Heaviside (None) passes no gradient."""
    kind = type(surrogate)
    if surrogate is None:
        return z.zero_()
    if kind is Sigmoid:       # alpha sig (1 - sig), sig = sigmoid(alpha z)
        a = surrogate.alpha
        return z.mul_(a).sigmoid_().addcmul_(z, z, value=-1.0).mul_(a)
    if kind is ATan:          # alpha / 2 / (1 + (pi/2 alpha z)^2)
        a = surrogate.alpha
        return z.mul_(math.pi / 2 * a).square_().add_(1.0).reciprocal_().mul_(a / 2)
    if kind is Rectangle:     # 1[|z| < w/2] / w
        w = surrogate.width
        return torch.lt(z.abs_(), w / 2, out=z).div_(w)
    if kind is Triangle:      # max(0, 1 - |z|/w) / w
        w = surrogate.width
        return z.abs_().div_(-w).add_(1.0).clamp_(min=0.0).div_(w)
    return surrogate.derivative(z)


def _charge(h: torch.Tensor, v: torch.Tensor | None, x: torch.Tensor, leak: float) -> None:
    """h = leak * v + x, rounded as ``lif_step`` rounds it (v None means v = 0)."""
    if v is None:
        h.copy_(x)
    elif leak == 1.0:
        torch.add(v, x, out=h)
    else:
        torch.mul(v, leak, out=h)
        h.add_(x)


def _run(x_seq, v0, leak, v_th, reset, u_rest, v_reset, keep_h: bool):
    """Forward over time. Returns (spikes [T, ...], v_final [...], h [T, ...] or None)."""
    T = x_seq.shape[0]
    spikes = torch.empty_like(x_seq)       # same strides as a dense input (e.g. channels-last)
    h_all = torch.empty_like(spikes) if keep_h else None
    work = None if keep_h else torch.empty_like(spikes[0])
    v = torch.empty_like(spikes[0]) if reset != "none" else None
    c = v_th - u_rest
    prev = v0
    for t in range(T):
        h = h_all[t] if keep_h else work
        _charge(h, prev, x_seq[t], leak)
        s = spikes[t]
        torch.ge(h, v_th, out=s)
        if reset == "soft":
            torch.sub(h, s, alpha=c, out=v)            # h - (v_th - u_rest) s
        elif reset == "hard":
            torch.addcmul(h, h, s, value=-1.0, out=v)  # h (1 - s) + s v_reset
            if v_reset != 0.0:
                v.add_(s, alpha=v_reset)
        prev = h if reset == "none" else v
    v_final = prev.clone() if reset == "none" else prev
    return spikes, v_final, h_all


class _FusedLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, v0, leak, v_th, reset, u_rest, v_reset, detach_reset, surrogate):
        spikes, v_final, h_all = _run(x_seq, v0, leak, v_th, reset, u_rest, v_reset, keep_h=True)
        ctx.save_for_backward(h_all)
        ctx.params = (leak, v_th, reset, u_rest, v_reset, detach_reset, surrogate)
        ctx.v0_given = v0 is not None
        ctx.set_materialize_grads(False)
        return spikes, v_final

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_s, g_vT):
        (h_all,) = ctx.saved_tensors
        leak, v_th, reset, u_rest, v_reset, detach_reset, surrogate = ctx.params
        # Step by step, newest first, with two [B, ...] work buffers: no temporary the size of
        # the sequence (large blocks are fresh page-faulted memory on every call).
        gx = torch.empty_like(h_all)
        sg = torch.empty_like(h_all[0])
        D = torch.empty_like(sg) if reset == "hard" else None
        carry, scale = g_vT, 1.0          # gradient w.r.t. the post-reset potential v[t] is scale * carry
        for t in range(h_all.shape[0] - 1, -1, -1):
            h, g = h_all[t], gx[t]
            surrogate_derivative_(surrogate, torch.sub(h, v_th, out=sg))       # d spike[t] / d h[t]
            if g_s is not None:
                torch.mul(sg, g_s[t], out=g)                          # A = sg g_s
            else:
                g.zero_()
            if carry is not None:                                     # + D g_v, D = dv[t]/dh[t]
                if reset == "hard":
                    torch.lt(h, v_th, out=D)                          # 1 - s
                    if not detach_reset:                              # + (v_reset - h) sg
                        D.addcmul_(sg, h, value=-1.0)
                        if v_reset != 0.0:
                            D.add_(sg, alpha=v_reset)
                    g.addcmul_(D, carry, value=scale)
                else:
                    g.add_(carry, alpha=scale)
                    if reset == "soft" and not detach_reset:          # D = 1 - (v_th - u_rest) sg
                        g.addcmul_(sg, carry, value=-scale * (v_th - u_rest))
            carry, scale = g, leak
        g_v0 = gx[0] * leak if (ctx.v0_given and ctx.needs_input_grad[1]) else None
        return gx, g_v0, None, None, None, None, None, None, None


def lif_multistep_fused(
    x_seq: torch.Tensor,
    v0: torch.Tensor | None = None,
    *,
    leak: float = 1.0,
    v_th: float = 1.0,
    reset: str = "soft",
    u_rest: float = 0.0,
    v_reset: float = 0.0,
    surrogate: Surrogate | None = None,
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``functional.lif_multistep`` fused: ``(spikes [T, B, ...], v_final [B, ...])``.

    ``v0`` [B, ...] (or None for zeros) is the post-reset potential before the first step;
    gradients flow to ``x_seq`` and ``v0``. ``surrogate=None`` (plain Heaviside) gives no
    gradient through the spikes, as in the reference.
    """
    if reset not in RESETS:
        raise ValueError(f"unknown reset {reset!r}; choose one of {RESETS}")
    if x_seq.dim() < 2:
        raise ValueError(f"lif_multistep_fused expects [T, B, ...], got shape {tuple(x_seq.shape)}")
    if v0 is not None and v0.shape != x_seq.shape[1:]:
        raise ValueError(f"v0 has shape {tuple(v0.shape)}, expected {tuple(x_seq.shape[1:])}")
    leak, v_th, u_rest, v_reset = float(leak), float(v_th), float(u_rest), float(v_reset)
    needs_grad = torch.is_grad_enabled() and (x_seq.requires_grad or (v0 is not None and v0.requires_grad))
    if not needs_grad:
        spikes, v_final, _ = _run(x_seq, v0, leak, v_th, reset, u_rest, v_reset, keep_h=False)
        return spikes, v_final
    return _FusedLIF.apply(x_seq, v0, leak, v_th, reset, u_rest, v_reset, bool(detach_reset), surrogate)
