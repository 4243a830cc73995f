"""How an online network runs: one model, four execution modes.

The same weights can be run as

* ``"lif"``: an ordinary LIF network (membrane state kept with its graph: BPTT, inference);
* ``"ottt_reference"``: OTTT as in the authors' code. Every neuron emits ``cat([s, a_hat])``
  along the batch (2B); every wrapped layer computes ``op(s)`` (forward value, no grad) and
  ``op(a_hat)`` (gradient path): two operations per layer per step;
* ``"ottt_lean"``: OTTT with one operation per layer: ``op(s)`` forward, the weight gradient
  taken from the presynaptic trace inside a custom autograd function;
* ``"saf"``: spike accumulation forwarding. Only the accumulations ``a_hat`` travel between
  layers and each layer computes ``op(a_hat) + c_t b``: one operation per layer per step.

In the three online modes the state is detached at every step, so no graph spans two steps.
Modules that behave differently per mode carry a ``mode`` attribute; ``set_mode`` sets it on a
whole network, ``running(model, mode)`` switches temporarily.
"""
from __future__ import annotations

import contextlib

from torch import nn

MODES = ("lif", "ottt_reference", "ottt_lean", "saf")
ONLINE_MODES = MODES[1:]


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown online execution mode {mode!r}; choose one of {MODES}")
    return mode


class ModeModule(nn.Module):
    """Mixin for modules whose behaviour depends on the execution mode."""

    mode: str = "lif"


def set_mode(model: nn.Module, mode: str) -> None:
    """Set ``mode`` on every mode-dependent module of ``model`` (DDP wrappers included)."""
    check_mode(mode)
    found = False
    for m in model.modules():
        if isinstance(m, ModeModule):
            m.mode = mode
            found = True
    if not found:
        raise TypeError(f"{type(model).__name__} has no mode-dependent modules; online methods need a model "
                        "built from snnlib.online layers (e.g. 'online_vgg', 'online_conv')")


def get_mode(model: nn.Module) -> str:
    """The mode of the first mode-dependent module of ``model``."""
    for m in model.modules():
        if isinstance(m, ModeModule):
            return m.mode
    raise TypeError(f"{type(model).__name__} has no mode-dependent modules")


@contextlib.contextmanager
def running(model: nn.Module, mode: str):
    """Temporarily run ``model`` in ``mode`` (state should be reset before and after)."""
    old = get_mode(model)
    set_mode(model, mode)
    try:
        yield model
    finally:
        set_mode(model, old)
