"""Neuron maths as pure step functions (no state kept here).

Convention (one time step, all tensors of the same shape [B, ...]):

    h = leak * v + x            charge: v is the post-reset potential of the last step
    s = H(h - v_th)             fire (surrogate gradient in the backward)
    v' = h - s * (v_th - u_rest)            soft reset by subtraction ("reset to u_rest")
    v' = h * (1 - s) + s * v_reset          hard reset

``leak = 1`` gives IF. ``u_rest = 0`` is the usual subtraction of the threshold;
``u_rest = -v_th`` is SPIDE's modified reset (subtracts 2 v_th). This equals IDE's and
OTTT's ``u <- lambda (u - V s)`` followed by ``u <- u + I`` at the next step.
Potentials are in units of the input current; time is in steps.
"""
from __future__ import annotations

import torch

from .surrogate import Surrogate, heaviside

RESETS = ("soft", "hard", "none")


def lif_step(
    x: torch.Tensor,
    v: torch.Tensor,
    *,
    leak: float = 1.0,
    v_th: float = 1.0,
    reset: str = "soft",
    u_rest: float = 0.0,
    v_reset: float = 0.0,
    surrogate: Surrogate | None = None,
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step. Returns ``(spikes, v_next)``, both shaped like ``x``.

    ``surrogate=None`` fires with a plain Heaviside (no gradient through the spike).
    """
    h = leak * v + x
    z = h - v_th
    s = surrogate(z) if surrogate is not None else heaviside(z)
    sr = s.detach() if detach_reset else s
    if reset == "soft":
        v_next = h - sr * (v_th - u_rest)
    elif reset == "hard":
        v_next = h * (1.0 - sr) + sr * v_reset
    elif reset == "none":
        v_next = h
    else:
        raise ValueError(f"unknown reset {reset!r}; choose one of {RESETS}")
    return s, v_next


def if_step(x: torch.Tensor, v: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """One IF step: ``lif_step`` with ``leak = 1``."""
    return lif_step(x, v, leak=1.0, **kwargs)


def lif_multistep(x_seq: torch.Tensor, v0: torch.Tensor | None = None, **kwargs):
    """Run ``lif_step`` over the first (time) axis of ``x_seq`` [T, B, ...].

    Returns ``(spikes [T, B, ...], v_final [B, ...])``.
    """
    v = torch.zeros_like(x_seq[0]) if v0 is None else v0
    out = []
    for x in x_seq:
        s, v = lif_step(x, v, **kwargs)
        out.append(s)
    return torch.stack(out), v


def ternary_step(
    x: torch.Tensor,
    v: torch.Tensor,
    *,
    leak: float = 1.0,
    v_th: float = 0.5,
    u_rest: float = -0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of a ternary (signed) spiking neuron, as in SPIDE's backward.

    h = leak * v + x; z = V_b * (H(h - v_th) - H(-h - v_th)) with spike magnitude
    ``V_b = v_th - u_rest``; v' = h - z. Returns ``(z in {-V_b, 0, +V_b}, v')``.
    No surrogate: this neuron is not differentiated.
    """
    h = leak * v + x
    mag = v_th - u_rest
    z = mag * (heaviside(h - v_th) - heaviside(-h - v_th))
    return z, h - z
