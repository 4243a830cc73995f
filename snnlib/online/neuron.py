"""The LIF neuron of OTTT and SAF, one time step per call, in every execution mode.

Dynamics (OTTT's, = ``snnlib.neurons.lif_step`` with a soft reset):
    u[t] = leak * (u[t-1] - v_th s[t-1]) + I[t],   s[t] = H(u[t] - v_th)
Presynaptic trace / spike accumulation:
    a_hat[t] = leak * a_hat[t-1] + s[t]

Per mode (see ``modes``), input I[t] [B, ...]:
* ``lif``: returns s[t]; the potential keeps its graph (BPTT).
* ``ottt_lean``: returns s[t]; the potential is detached every step.
* ``ottt_reference``: returns s[t] and keeps a_hat[t] (detached) in ``trace``; the model hands both to
  the next layer (``TraceSynapse.forward(s, trace)``).
* ``saf``: the input is the accumulated potential U_hat[t] = sum_k leak^(t-k) I[k]; the neuron keeps
  only a_hat[t-1] and fires s[t] = H(U_hat[t] - v_th (leak a_hat[t-1] + 1)); returns a_hat[t],
  whose gradient flows through s[t] only.
Dropout (mask drawn once per batch, shared over T) multiplies what the neuron emits.

In the OTTT modes the potential is detached, so the step's only gradient path is x -> s through the
surrogate: the charge, the reset and the trace run without autograd (in place where exact) and one
autograd node (``_SpikeOfCharge``) gives s its surrogate gradient. Same values as ``lif_step``, bit
for bit (same roundings); gradients to rounding.
"""
from __future__ import annotations

import torch
from torch.autograd import Function

from ..layers.dropout import SharedDropout
from ..neurons import MemoryModule, get_surrogate, lif_step
from ..neurons.fused import surrogate_derivative_
from .modes import ModeModule


class _SpikeOfCharge(Function):
    """s = H(h - v_th) for a charge h = leak v + x with v constant; backward: d s / d x = sg(h - v_th)."""

    @staticmethod
    def forward(ctx, x, h, v_th, surrogate):
        ctx.save_for_backward(h)
        ctx.v_th, ctx.surrogate = v_th, surrogate
        return torch.ge(h, v_th, out=torch.empty_like(h))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        return surrogate_derivative_(ctx.surrogate, torch.sub(h, ctx.v_th)).mul_(grad), None, None, None


class OnlineLIF(MemoryModule, ModeModule):
    """LIF neuron for online training (OTTT/SAF) and plain LIF runs.

    Args:
        leak: lambda = 1 - 1/tau in (0, 1] (OTTT: tau = 2, leak = 0.5).
        v_th: threshold. surrogate: name, dict or ``Surrogate`` (OTTT: sigmoid, alpha = 4).
        dropout: probability of OTTT's neuron dropout (mask fixed over T; training only).
        detach_reset: no gradient through the reset in ``lif`` mode (online modes detach it anyway).
    State: ``v`` (potential after reset), ``trace`` (reference mode), ``acc`` (SAF).
    """

    def __init__(self, leak: float = 0.5, v_th: float = 1.0, surrogate="sigmoid", dropout: float = 0.0,
                 detach_reset: bool = False):
        super().__init__("s")
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        if v_th <= 0:
            raise ValueError(f"v_th must be > 0, got {v_th}")
        self.leak, self.v_th, self.detach_reset = float(leak), float(v_th), bool(detach_reset)
        self.surrogate = get_surrogate(surrogate)
        self.dropout = SharedDropout(dropout) if dropout > 0 else None
        self.register_memory("v", None)
        self.register_memory("trace", None)
        self.register_memory("acc", None)
        self._observers: list = []

    # -- helpers ---------------------------------------------------------------------------
    def _mask(self, like: torch.Tensor):
        if self.dropout is None or not self.training:
            return None
        return self.dropout.make_mask(like)

    def _notify(self, s: torch.Tensor) -> None:
        for fn in self._observers:
            fn(self, s.detach())

    def observe(self, fn):
        """Register ``fn(neuron, spikes)`` called with every step's spikes; returns a remover."""
        self._observers.append(fn)
        return lambda: self._observers.remove(fn)

    @staticmethod
    def _zeros_if_none(state, like):
        if state is None or state.shape != like.shape:
            return torch.zeros_like(like)
        return state

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "saf":
            return self._saf_step(x)
        if self.mode == "lif":
            s, self.v = lif_step(x, self._zeros_if_none(self.v, x), leak=self.leak, v_th=self.v_th, reset="soft",
                                 surrogate=self.surrogate, detach_reset=self.detach_reset)
        else:
            s = self._online_step(x)
        self._notify(s)
        mask = self._mask(s)
        out = s if mask is None else s * mask
        if self.mode == "ottt_reference":
            with torch.no_grad():
                self.trace = torch.mul(self._zeros_if_none(self.trace, out), self.leak).add_(out)
        return out

    def _online_step(self, x: torch.Tensor) -> torch.Tensor:
        """``lif_step`` (soft reset) with v detached: charge and reset without autograd, spikes with
        the surrogate gradient to x."""
        with torch.no_grad():
            h = torch.mul(self._zeros_if_none(self.v, x), self.leak).add_(x)          # leak * v + x
        s = _SpikeOfCharge.apply(x, h, self.v_th, self.surrogate) if x.requires_grad else \
            torch.ge(h, self.v_th, out=torch.empty_like(h))
        self.v = torch.sub(h, s.detach(), alpha=self.v_th)                           # h - v_th s
        return s

    def _saf_step(self, u_hat: torch.Tensor) -> torch.Tensor:
        prev = self._zeros_if_none(self.acc, u_hat).detach()
        z = u_hat - self.v_th * (self.leak * prev + 1.0)
        s = self.surrogate(z)
        acc = self.leak * prev + s
        self.acc = acc.detach()
        self._notify(s)
        mask = self._mask(s)
        return acc if mask is None else acc * mask

    def extra_repr(self) -> str:
        p = self.dropout.p if self.dropout is not None else 0.0
        return f"leak={self.leak}, v_th={self.v_th}, dropout={p}, mode={self.mode}"
