"""Trace-gradient synapses: a Conv2d/Linear layer run in every execution mode.

OTTT's instantaneous weight gradient is g[t] a_hat[t]^T: the error at the layer's output times
the presynaptic trace a_hat (the leak-discounted sum of the layer's past inputs). Three ways to
compute a layer's step with that gradient:

* reference (``ottt_reference``, the authors' code): the input arrives as spikes ``s`` with their
  trace ``a_hat`` (``forward(s, trace)``); ``op(s)`` under no_grad gives the forward value and
  ``op(a_hat)`` the gradient path. Two operations per call; the error reaches ``s`` (and through
  the surrogate, the layer below).
* lean (``ottt_lean``): one ``op(s)`` inside ``TraceGradConv2d``/``TraceGradLinear``, whose
  backward takes the weight gradient from a trace this synapse keeps of its own input.
* SAF (``saf``): the input is already the accumulation a_hat; the output is the accumulated
  potential ``op(a_hat) + c_t b`` with c_t = sum_{k<t} leak^k. One operation per call.

The input layer (``input_layer=True``) receives the raw input x[t] and keeps its trace (OTTT) or
accumulation (SAF) itself. ``raw_input=True`` makes OTTT use x[t] instead of its trace there
(the authors' code leaves the first conv unwrapped; the paper's rule uses the trace).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function
from torch.nn import functional as F

from ..layers.weight_standardization import effective_weight
from ..neurons import MemoryModule
from .modes import ModeModule

SUPPORTED = (nn.Conv2d, nn.Linear)


def apply_op(op: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``op``'s linear map with an explicit weight and bias (Conv2d: its stride, padding, ...)."""
    if isinstance(op, nn.Conv2d):
        return F.conv2d(x, weight, bias, op.stride, op.padding, op.dilation, op.groups)
    if isinstance(op, nn.Linear):
        return F.linear(x, weight, bias)
    raise TypeError(f"trace-gradient synapses wrap Conv2d or Linear layers, got {type(op).__name__}")


class _ValueOf(Function):
    """Forward: ``value``. Backward: the whole gradient goes to ``path`` (none to ``value``)."""

    @staticmethod
    def forward(ctx, value, path):
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        return None, grad


class TraceGradConv2d(Function):
    """y = conv2d(x, W, b); backward: dx = conv2d^T(g, W), dW from ``trace`` (not x), db = sum g.

    One forward convolution; the backward is one ``convolution_backward`` with the trace as input
    (the input gradient depends only on the input's shape, which the trace shares).
    """

    @staticmethod
    def forward(ctx, x, trace, weight, bias, stride, padding, dilation, groups):
        if trace.shape != x.shape:
            raise ValueError(f"trace shape {tuple(trace.shape)} differs from input shape {tuple(x.shape)}")
        ctx.save_for_backward(trace, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        trace, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need = ctx.needs_input_grad
        mask = [need[0], need[2], ctx.has_bias and need[3]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, trace, weight, [weight.shape[0]] if ctx.has_bias else None, list(stride), list(padding),
            list(dilation), False, [0, 0], groups, mask)
        return gx, None, gw, gb, None, None, None, None


class TraceGradLinear(Function):
    """y = x W^T + b; backward: dx = g W, dW = g^T trace, db = sum g. Inputs [B, D_in]."""

    @staticmethod
    def forward(ctx, x, trace, weight, bias):
        if trace.shape != x.shape:
            raise ValueError(f"trace shape {tuple(trace.shape)} differs from input shape {tuple(x.shape)}")
        ctx.save_for_backward(trace, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        trace, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx = grad @ weight if need[0] else None
        gw = grad.t() @ trace if need[2] else None
        gb = grad.sum(0) if ctx.has_bias and need[3] else None
        return gx, None, gw, gb


def trace_grad_op(op: nn.Module, x: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
    """``op(x)`` whose weight gradient is taken from ``trace`` (lean OTTT)."""
    w, b = effective_weight(op), op.bias
    if isinstance(op, nn.Conv2d):
        return TraceGradConv2d.apply(x, trace, w, b, op.stride, op.padding, op.dilation, op.groups)
    if isinstance(op, nn.Linear):
        return TraceGradLinear.apply(x, trace, w, b)
    raise TypeError(f"trace-gradient synapses wrap Conv2d or Linear layers, got {type(op).__name__}")


class SynapseState(MemoryModule):
    """Per-batch state of a synapse: input trace (OTTT), input accumulation and c_t (SAF).

    Never called, so firing-rate hooks ignore it; ``reset_net`` resets it."""

    def __init__(self):
        super().__init__("s")
        self.register_memory("trace", None)
        self.register_memory("acc", None)
        self.register_memory("c", 0.0)


class TraceSynapse(ModeModule):
    """A Conv2d/Linear ``op`` run per execution mode (see module doc). Shapes: ``op``'s, per step.

    Args:
        op: the layer (``ScaledWSConv2d``, ``ScaledWSLinear``, ``nn.Conv2d`` or ``nn.Linear``).
        leak: lambda of the traces and of c_t (the neurons' leak).
        input_layer: receives the raw input x[t] (keeps its own trace / accumulation).
    """

    def __init__(self, op: nn.Module, *, leak: float, input_layer: bool = False):
        super().__init__()
        if not isinstance(op, SUPPORTED):
            raise TypeError(f"TraceSynapse wraps Conv2d or Linear layers, got {type(op).__name__}")
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        self.op = op
        self.leak = float(leak)
        self.input_layer = bool(input_layer)
        self.raw_input = False
        self.state = SynapseState()

    def _own_trace(self, x: torch.Tensor) -> torch.Tensor:
        st = self.state
        prev = st.trace if st.trace is not None and st.trace.shape == x.shape else torch.zeros_like(x)
        st.trace = (self.leak * prev + x).detach()
        return st.trace

    def forward(self, x: torch.Tensor, trace: torch.Tensor | None = None) -> torch.Tensor:
        """x: the step's input [B, ...]; ``trace``: its presynaptic trace, needed in ``ottt_reference``
        mode by every layer but the input layer (which keeps its own)."""
        mode = self.mode
        if mode == "lif" or (mode != "saf" and self.input_layer and self.raw_input):
            return self.op(x)
        if mode == "saf":
            return self._saf(x)
        if mode == "ottt_lean":
            return trace_grad_op(self.op, x, self._own_trace(x))
        return self._reference(x, trace)

    def _reference(self, s: torch.Tensor, tr: torch.Tensor | None) -> torch.Tensor:
        if self.input_layer:
            tr = self._own_trace(s)
        elif tr is None:
            raise ValueError("reference OTTT needs the input's presynaptic trace: call forward(spikes, trace)")
        elif tr.shape != s.shape:
            raise ValueError(f"trace shape {tuple(tr.shape)} differs from input shape {tuple(s.shape)}")
        with torch.no_grad():
            value = self.op(s)
        path = self.op(_ValueOf.apply(tr, s))   # value of the trace, gradient to the spikes
        return _ValueOf.apply(value, path)

    def _saf(self, x: torch.Tensor) -> torch.Tensor:
        st = self.state
        if self.input_layer:
            prev = st.acc if st.acc is not None and st.acc.shape == x.shape else torch.zeros_like(x)
            acc = self.leak * prev + x
            st.acc = acc.detach()
        else:
            acc = x
        st.c = self.leak * st.c + 1.0
        out = apply_op(self.op, acc, effective_weight(self.op), None)
        if self.op.bias is not None:
            shape = (1, -1) + (1,) * (out.dim() - 2)
            out = out + st.c * self.op.bias.view(shape)
        return out

    def extra_repr(self) -> str:
        return f"input_layer={self.input_layer}, raw_input={self.raw_input}, mode={self.mode}"
