"""SPIDE (Xiao et al., Neural Networks 2023): the IDE forward with a spike-based backward.

The forward is the feedback SNN simulated for T steps (``equilibrium_forward``, shared with
``ide``); the backward is the registered ``spike`` backward of ``snnlib.equilibrium``: ternary
spiking neurons run for ``T_b`` steps, their signed rates estimate the implicit gradient, and
every weight is updated from the two stages of average rates (forward rate x backward rate).

Scale factor s (``scale``): the last backward layer integrates s * dL/da_N per step, so that the
gradient is resolved by spikes of magnitude V_b in T_b steps. Too large an s clips the backward
rates at +-V_b (a biased gradient that more T_b does not fix); too small an s leaves few spikes
(quantisation error ~ 1/T_b). dL/da_N shrinks as 1/batch (mean loss), so a good s grows with
the batch: the reference uses 100 (MNIST) and 400/500 (CIFAR) at batch 128. Default
``scale="auto"``: s = 0.5 V_b / max|dL/da_N| per batch (``spiking_backward.auto_scale``). The
method warns once (``SpikeSaturationWarning``, with the fraction) when more than
``saturation_warn`` of the backward neurons saturate. The signed rate is divided by s
(gradients at their true size; nominal lr and weight decay). ``legacy_scale=True`` is the
released recipe: the loss is multiplied by s, gradients (the readout's included) stay s-scaled
and the method divides the optimiser's learning rate by s for each step, so the config keeps the
nominal lr; the effective weight decay then becomes wd / s.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch.nn import functional as F

from ..equilibrium import spiking_backward  # noqa: F401  (registers the 'spike' backwards)
from ..equilibrium.spiking_backward import SpikeSaturationWarning
from ..equilibrium.implicit import ImplicitSolveWarning, equilibrium_forward
from ..metrics.accuracy import correct
from ..neurons import reset_net
from . import register_method
from .implicit import IDE

SPIKE_BACKWARDS = ("spike", "spide_exact")


@register_method("spide")
class SPIDE(IDE):
    """Spike-based implicit differentiation.

    Args:
        T_b: backward time steps. scale: s (> 0) or 'auto' (per batch, see module).
        legacy_scale: loss x s and lr / s (see module; needs a numeric scale).
        saturation_warn: saturated fraction of backward neurons above which to warn (once).
        v_th_b: backward thresholds +-v_th_b. u_rest_b: backward reset potential (default
            -v_th_b, the modified reset; 0 gives the plain reset).
        backward: 'spike' (SPIDE) or 'spide_exact' (the same per-layer system and rate-based
            updates without spikes: the T_b -> infinity limit).
        count_sops: count the backward's synaptic operations every step (slower).
        eval_T: time steps at evaluation (default: T).
    Step statistics: ``spide`` (mean forward and backward firing rates, saturated fraction,
    backward SOPs), ``rates`` (per-layer forward and backward firing), ``solver``.
    """

    name = "spide"

    def __init__(self, model, *, T: int, T_b: int = 100, scale: float | str = "auto", legacy_scale: bool = False,
                 v_th_b: float = 0.5, u_rest_b: float | None = None, backward: str = "spike",
                 count_sops: bool = False, warn_tol: float = 1e-2, saturation_warn: float = 0.02,
                 eval_T: int | None = None):
        if backward not in SPIKE_BACKWARDS:
            raise ValueError(f"spide: backward must be one of {SPIKE_BACKWARDS}, got {backward!r} "
                             "(train the same network with method 'ide' for the other backwards)")
        if not isinstance(T_b, int) or isinstance(T_b, bool) or T_b < 1:
            raise ValueError(f"T_b must be a positive integer number of backward steps, got {T_b!r}")
        if scale == "auto":
            if legacy_scale:
                raise ValueError("legacy_scale multiplies the loss by a fixed s: give a numeric scale, not 'auto'")
        elif isinstance(scale, bool) or not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive finite number or 'auto', got {scale!r}")
        if isinstance(saturation_warn, bool) or not (isinstance(saturation_warn, (int, float))
                                                       and 0 <= saturation_warn <= 1):
            raise ValueError(f"saturation_warn must be a fraction in [0, 1], got {saturation_warn!r}")
        super().__init__(model, T=T, backward=backward, warn_tol=warn_tol, eval_T=eval_T)
        if len(self.net.snn.streams) != 1:
            raise TypeError(f"spide needs a one-stream feedback SNN, got {len(self.net.snn.streams)} streams")
        self.T_b, self.legacy_scale = int(T_b), bool(legacy_scale)
        self.scale = scale if scale == "auto" else float(scale)
        self.saturation_warn, self._sat_warned = float(saturation_warn), False
        self.spike_kw = dict(T_b=self.T_b, scale=self.scale, loss_scaled=self.legacy_scale, v_th_b=float(v_th_b),
                             u_rest_b=None if u_rest_b is None else float(u_rest_b), count_sops=bool(count_sops))

    def _check_saturation(self, frac) -> None:
        if frac is None or self._sat_warned or frac <= self.saturation_warn:
            return
        self._sat_warned = True
        s = "per-batch 'auto'" if self.scale == "auto" else f"{self.scale:g}"
        warnings.warn(f"spide: {frac:.1%} of the backward neurons saturate (|rate| >= 0.95 V_b) with scale s = {s}; "
                      "the spike-based gradient is then biased and more T_b does not help. Lower the scale "
                      "(it should shrink with smaller batches) or use scale='auto'. (Shown once per run.)",
                      SpikeSaturationWarning, stacklevel=3)

    def state_dict(self) -> dict:
        """IDE's warning count and whether the saturation warning was shown."""
        return {**super().state_dict(), "saturation_warned": self._sat_warned}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._sat_warned = bool(state.get("saturation_warned", False))

    def _forward(self, x, T):
        return equilibrium_forward(self.net, x, T, backward=self.backward, warn_tol=self.warn_tol, **self.spike_kw)

    def train_step(self, x, y, optimizer):
        optimizer.zero_grad(set_to_none=True)
        res = self._forward(x, self.T)
        loss = F.cross_entropy(res.logits, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImplicitSolveWarning)
            (loss * self.scale if self.legacy_scale else loss).backward()
        if self.legacy_scale:
            lrs = [g["lr"] for g in optimizer.param_groups]
            for g in optimizer.param_groups:
                g["lr"] = g["lr"] / self.scale
            optimizer.step()
            for g, lr in zip(optimizer.param_groups, lrs):
                g["lr"] = lr
        else:
            optimizer.step()
        reset_net(self.net)
        sim, rec = res.simulation, res.record
        fwd = sim.firing_rates()
        n = {name: r[0].numel() for name, r in zip(sim.names[0], sim.rates[0])}
        stats = rec.stats if rec is not None else {}
        spide = {"forward_firing": sum(fwd[k] * n[k] for k in fwd) / sum(n.values()),
                 "forward_rel_residual": res.forward_rel_residual}
        for k in ("backward_firing", "saturated", "backward_sops"):
            if k in stats:
                spide[k] = float(stats[k])
        if not self.legacy_scale and "scale" in stats:
            spide["scale"] = float(stats["scale"])
        self._check_saturation(spide.get("saturated"))
        rates = {f"forward.{k}": v for k, v in fwd.items()}
        if rec is not None and hasattr(rec.stat, "per_layer"):
            rates.update({f"backward.{k}": v for k, v in rec.stat.per_layer().items()})
        return {"loss": loss.item(), "correct": correct(res.logits.detach(), y), "spide": spide, "rates": rates,
                "extra_memory_bytes": int(stats.get("buffer_bytes", 0)), "state_bytes": res.state_bytes}
