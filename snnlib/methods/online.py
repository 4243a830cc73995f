"""Online training: OTTT (Xiao et al., NeurIPS 2022) and SAF (Saiin et al., TMLR 2024).

* ``ottt_a``: per-step loss, ``backward()`` at every step, one ``optimizer.step()`` after T steps.
* ``ottt_o``: per-step loss, ``backward()`` and ``optimizer.step()`` at every step.
  Both take ``formulation`` = "reference" (the authors' two-operation wrapped layers) or "lean"
  (one operation, trace gradient in a custom autograd function), and ``first_layer`` = "trace"
  (the paper's rule, the SAF-equivalent convention) or "raw" (the authors' code: x[t]).
* ``saf_e``: SAF, loss at every step on o[t] = O_hat[t] - leak O_hat[t-1] (O_hat[t-1] detached),
  an update every step (``online_update=False`` accumulates like OTTT_A, and then equals it).
* ``saf_f``: SAF, steps t < T without autograd, one loss at t = T on the weighted rate
  a[T] = O_hat[T] / c_T (TMLR), or on the mean output (``readout="mean"``, our reading of the
  ICLR version's sum_t s[t] / T; gradient through the last step only).

The per-step loss is OTTT's ((1 - g) CE + g MSE(onehot)) / T with g = ``mse_weight``; SAF-F's
final loss is the same mix without the 1/T. Models must be built from ``snnlib.online`` layers
(``online_vgg``, ``online_vggf``, ``online_conv``). Under DistributedDataParallel, accumulating
methods skip the gradient all-reduce for t < T with ``no_sync()``.
"""
from __future__ import annotations

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

from ..data.loader import time_sequence
from ..metrics.accuracy import correct
from ..neurons import rate_normaliser, reset_net, state_bytes
from ..online.modes import running, set_mode
from ..online.monitor import SpikeRateMonitor
from ..online.synapse import TraceSynapse
from . import register_method
from .base import Method, check_batch
from .bptt import per_step_loss

FORMULATIONS = ("reference", "lean")
FIRST_LAYER = ("trace", "raw")
SAF_F_READOUTS = ("weighted_rate", "mean")


def mixed_loss(out: torch.Tensor, y: torch.Tensor, mse_weight: float) -> torch.Tensor:
    """(1 - g) CE(out, y) + g MSE(out, onehot(y)) for one output [B, K]."""
    return per_step_loss(out.unsqueeze(0), y, mse_weight)


class OnlineMethod(Method):
    """Shared loop of the online methods: T single steps, no graph across steps.

    Subclasses set ``mode`` and implement ``_forward_step(t, x_t, y, ctx) -> (loss or None, out)``
    where ``out`` [B, K] is the step's contribution to the prediction; ``_begin()`` makes the per-batch
    context and ``_prediction(outs, ctx)`` turns the summed contributions into class scores.
    """

    mode = "lif"
    online_update = False
    # VGG-F's feedback conv gets no gradient at t = 1.
    ddp_kwargs = {"find_unused_parameters": True}

    def __init__(self, model, *, T: int, mse_weight: float = 0.05):
        super().__init__(model, T=T)
        if not 0.0 <= mse_weight <= 1.0:
            raise ValueError(f"mse_weight must be in [0, 1], got {mse_weight}")
        self.mse_weight = float(mse_weight)
        set_mode(self.net, self.mode)
        if not hasattr(self.net, "leak"):
            raise TypeError(f"{type(self.net).__name__} has no 'leak' attribute: online methods need the model's "
                            "neuron leak for traces, c_t and the SAF readout")
        self.leak = float(self.net.leak)

    # -- per-method pieces -------------------------------------------------------------------
    def _begin(self) -> dict:
        return {}

    def _needs_grad(self, t: int) -> bool:
        return True

    def _forward_step(self, t, x_t, y, ctx):  # pragma: no cover - abstract
        raise NotImplementedError

    def _prediction(self, total: torch.Tensor, ctx: dict) -> torch.Tensor:
        return total / self.T

    # -- the loop ----------------------------------------------------------------------------
    def _sync(self, t: int):
        """Skip DDP's all-reduce on all but the last backward of an accumulating method."""
        if isinstance(self.model, DistributedDataParallel) and not self.online_update and t < self.T - 1:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def train_step(self, x, y, optimizer):
        xs = time_sequence(x, self.T)
        ctx = self._begin()
        try:   # the per-step state (traces, accumulations, c_t) never outlives the batch, even on errors
            if not self.online_update:
                optimizer.zero_grad(set_to_none=True)
            total, loss_sum, peak_state = None, 0.0, 0
            for t in range(self.T):
                grad = self._needs_grad(t)
                if self.online_update and grad:
                    optimizer.zero_grad(set_to_none=True)
                with self._sync(t), torch.set_grad_enabled(grad):
                    loss, out = self._forward_step(t, xs[t], y, ctx)
                    if loss is not None:
                        loss.backward()
                if self.online_update and grad:
                    optimizer.step()
                if loss is not None:
                    loss_sum += loss.item()
                out = out.detach()
                total = out if total is None else total + out
                peak_state = max(peak_state, state_bytes(self.net) + ctx.get("extra_bytes", 0))
            if not self.online_update:
                optimizer.step()
            pred = self._prediction(total, ctx)
        finally:
            reset_net(self.net)
        return {"loss": loss_sum, "correct": correct(pred, y), "state_bytes": peak_state}

    def logits(self, x):
        """Class scores [B, K]; the state is reset afterwards (also on errors)."""
        xs = time_sequence(x, self.T)
        ctx = self._begin()
        total = None
        try:
            with self._eval_mode():
                for t in range(self.T):
                    _, out = self._forward_step(t, xs[t], None, ctx)
                    total = out if total is None else total + out
            return self._prediction(total, ctx)
        finally:
            reset_net(self.net)

    def _eval_mode(self):
        return contextlib.nullcontext()

    def per_step_grads(self, x, y) -> list[dict[str, torch.Tensor]]:
        """Gradients of every step's loss with the weights held fixed: [{param name: grad}] * T.

        Steps without a loss (SAF-F, t < T) give empty dicts. No parameter is changed.
        """
        check_batch(x, y, model=self.net)
        xs = time_sequence(x, self.T)
        ctx = self._begin()
        params = dict(self.net.named_parameters())
        out_grads = []
        try:
            for t in range(self.T):
                for p in params.values():
                    p.grad = None
                with torch.set_grad_enabled(self._needs_grad(t)):
                    loss, _ = self._forward_step(t, xs[t], y, ctx)
                    if loss is not None:
                        loss.backward()
                out_grads.append({n: p.grad.detach().clone() for n, p in params.items()
                                  if loss is not None and p.grad is not None})
        finally:
            for p in params.values():
                p.grad = None
            reset_net(self.net)
        return out_grads

    def monitor(self):
        return SpikeRateMonitor(self.net)


class OTTT(OnlineMethod):
    """OTTT (see module doc). ``formulation``: "reference" | "lean"; ``first_layer``: "trace" | "raw"."""

    def __init__(self, model, *, T: int, formulation: str = "reference", first_layer: str = "trace",
                 mse_weight: float = 0.05):
        if formulation not in FORMULATIONS:
            raise ValueError(f"unknown OTTT formulation {formulation!r}; choose one of {FORMULATIONS}")
        if first_layer not in FIRST_LAYER:
            raise ValueError(f"first_layer must be one of {FIRST_LAYER}, got {first_layer!r}")
        self.mode = f"ottt_{formulation}"
        self.formulation, self.first_layer = formulation, first_layer
        super().__init__(model, T=T, mse_weight=mse_weight)
        for m in self.net.modules():
            if isinstance(m, TraceSynapse) and m.input_layer:
                m.raw_input = first_layer == "raw"

    def _forward_step(self, t, x_t, y, ctx):
        o = self.model(x_t)
        loss = None if y is None else mixed_loss(o, y, self.mse_weight) / self.T
        return loss, o

    def _eval_mode(self):
        # OTTT's forward values are those of the plain LIF network: evaluate with one op per layer.
        return running(self.net, "lif")


@register_method("ottt_a")
class OTTTA(OTTT):
    """OTTT_A: gradients accumulated over the T steps, one update per batch."""

    name = "ottt_a"
    online_update = False


@register_method("ottt_o")
class OTTTO(OTTT):
    """OTTT_O: an update after every time step."""

    name = "ottt_o"
    online_update = True


class SAF(OnlineMethod):
    mode = "saf"

    def _readout_step(self, t, x_t, ctx):
        """O_hat[t] and o[t] = O_hat[t] - leak O_hat[t-1] (previous value detached)."""
        O = self.model(x_t)
        prev = ctx.get("prev")
        o = O if prev is None else O - self.leak * prev
        ctx["prev"] = O.detach()
        ctx["extra_bytes"] = O.numel() * O.element_size()
        return O, o


@register_method("saf_e")
class SAFE(SAF):
    """SAF-E: per-step loss on o[t], an update every step (``online_update=False``: accumulate)."""

    name = "saf_e"

    def __init__(self, model, *, T: int, online_update: bool = True, mse_weight: float = 0.05):
        self.online_update = bool(online_update)
        super().__init__(model, T=T, mse_weight=mse_weight)

    def _forward_step(self, t, x_t, y, ctx):
        _, o = self._readout_step(t, x_t, ctx)
        loss = None if y is None else mixed_loss(o, y, self.mse_weight) / self.T
        return loss, o


@register_method("saf_f")
class SAFF(SAF):
    """SAF-F: one loss at t = T on a[T] = O_hat[T] / c_T (``readout="mean"``: on sum_t o[t] / T)."""

    name = "saf_f"
    online_update = False

    def __init__(self, model, *, T: int, readout: str = "weighted_rate", mse_weight: float = 0.05):
        if readout not in SAF_F_READOUTS:
            raise ValueError(f"unknown SAF-F readout {readout!r}; choose one of {SAF_F_READOUTS}")
        self.readout = readout
        super().__init__(model, T=T, mse_weight=mse_weight)

    def _needs_grad(self, t):
        return t == self.T - 1

    def _forward_step(self, t, x_t, y, ctx):
        O, o = self._readout_step(t, x_t, ctx)
        last = t == self.T - 1
        if self.readout == "weighted_rate":
            if not last:
                return None, torch.zeros_like(O.detach())
            out = O / rate_normaliser(self.T, self.leak)
        else:
            ctx["sum_before"] = ctx.get("sum_before", 0) + (0 if last else o.detach())
            if not last:
                return None, torch.zeros_like(O.detach())
            out = (o + ctx["sum_before"]) / self.T
        loss = None if y is None else mixed_loss(out, y, self.mse_weight)
        return loss, out

    def _prediction(self, total, ctx):
        return total   # only the last step contributes, already normalised
