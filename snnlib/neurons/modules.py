"""Stateful neuron modules: thin wrappers over ``functional``.

A ``MemoryModule`` registers its state with ``register_memory(name, init)``;
``reset()`` puts every memory back to its initial value and ``reset_net(net)`` does
that for a whole network. ``step_mode='s'`` takes one step on [B, ...];
``step_mode='m'`` runs a [T, B, ...] sequence (T first) and returns spikes [T, B, ...].
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from . import functional as F
from .fused import lif_multistep_fused
from .surrogate import get_surrogate

STEP_MODES = ("s", "m")
BACKENDS = ("fused", "torch")


class MemoryModule(nn.Module):
    """Base for modules with state that persists across time steps."""

    def __init__(self, step_mode: str = "s"):
        super().__init__()
        self._memories: dict[str, object] = {}
        self._memory_init: dict[str, object] = {}
        self.step_mode = step_mode

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, mode: str) -> None:
        if mode not in STEP_MODES:
            raise ValueError(f"step_mode must be 's' (single step) or 'm' (multi-step, [T, B, ...]), got {mode!r}")
        self._step_mode = mode

    def register_memory(self, name: str, init) -> None:
        if hasattr(self, name) and name not in self._memories:
            raise AttributeError(f"{name!r} is already an attribute of {type(self).__name__}")
        self._memories[name] = copy.deepcopy(init)
        self._memory_init[name] = copy.deepcopy(init)

    def __getattr__(self, name):
        mem = self.__dict__.get("_memories")
        if mem is not None and name in mem:
            return mem[name]
        return super().__getattr__(name)

    def __setattr__(self, name, value):
        mem = self.__dict__.get("_memories")
        if mem is not None and name in mem:
            mem[name] = value
        else:
            super().__setattr__(name, value)

    def memories(self):
        """Yield ``(name, value)`` of every registered memory."""
        yield from self._memories.items()

    def reset(self) -> None:
        """Restore every memory to its initial value."""
        for k, v in self._memory_init.items():
            self._memories[k] = copy.deepcopy(v)

    def detach(self) -> None:
        """Cut the autograd history of every tensor memory (keeps the values)."""
        for k, v in self._memories.items():
            if isinstance(v, torch.Tensor):
                self._memories[k] = v.detach()

    def forward(self, x: torch.Tensor):
        if self.step_mode == "s":
            return self.single_step_forward(x)
        if x.dim() < 2:
            raise ValueError(f"{type(self).__name__} in multi-step mode expects [T, B, ...], got shape {tuple(x.shape)}")
        return self.multi_step_forward(x)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.single_step_forward(x) for x in x_seq])

    def single_step_forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError


class LIFNode(MemoryModule):
    """Leaky integrate-and-fire neuron over ``functional.lif_step``.

    Args:
        leak: lambda in (0, 1]; 1 gives IF. (SpikingJelly's tau: leak = 1 - 1/tau.)
        v_th: threshold. reset: 'soft' (subtract v_th - u_rest), 'hard' (to v_reset) or 'none'.
        u_rest: reset potential of the soft reset (SPIDE: -v_th).
        surrogate: name, dict or ``Surrogate``; default sigmoid(alpha=4).
        detach_reset: no gradient through the spike in the reset term.
        backend: multi-step kernel: 'fused' (one autograd node over the sequence, saves only
            the pre-spike potential; ``neurons.fused``) or 'torch' (the reference loop over
            ``functional.lif_step``). Both give the same spikes and gradients.
    State: ``v`` (post-reset potential), 0. before the first step.
    """

    def __init__(
        self,
        leak: float = 0.5,
        v_th: float = 1.0,
        reset: str = "soft",
        u_rest: float = 0.0,
        v_reset: float = 0.0,
        surrogate="sigmoid",
        detach_reset: bool = False,
        step_mode: str = "s",
        backend: str = "fused",
    ):
        super().__init__(step_mode)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        self.backend = backend
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        if reset not in F.RESETS:
            raise ValueError(f"unknown reset {reset!r}; choose one of {F.RESETS}")
        self.leak, self.v_th, self.reset_mode = float(leak), float(v_th), reset
        self.u_rest, self.v_reset, self.detach_reset = float(u_rest), float(v_reset), bool(detach_reset)
        self.surrogate = get_surrogate(surrogate)
        self.register_memory("v", 0.0)

    def step_kwargs(self) -> dict:
        return dict(leak=self.leak, v_th=self.v_th, reset=self.reset_mode, u_rest=self.u_rest,
                    v_reset=self.v_reset, surrogate=self.surrogate, detach_reset=self.detach_reset)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            v = torch.full_like(x, float(v) if not isinstance(v, torch.Tensor) else 0.0)
        s, self.v = F.lif_step(x, v, **self.step_kwargs())
        return s

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        # subclasses that change the single step keep the generic loop
        if self.backend != "fused" or type(self).single_step_forward is not LIFNode.single_step_forward:
            return super().multi_step_forward(x_seq)
        v = self.v
        if isinstance(v, torch.Tensor):
            v0 = v if v.shape == x_seq.shape[1:] else None     # as single_step_forward: a stale shape starts at 0
        else:
            v0 = None if float(v) == 0.0 else torch.full_like(x_seq[0], float(v))
        s, self.v = lif_multistep_fused(x_seq, v0, **self.step_kwargs())
        return s

    def extra_repr(self) -> str:
        return (f"leak={self.leak}, v_th={self.v_th}, reset={self.reset_mode}, u_rest={self.u_rest}, "
                f"detach_reset={self.detach_reset}, step_mode={self.step_mode}, backend={self.backend}")


class IFNode(LIFNode):
    """Integrate-and-fire neuron: ``LIFNode`` with ``leak = 1``."""

    def __init__(self, **kwargs):
        kwargs.setdefault("leak", 1.0)
        if kwargs["leak"] != 1.0:
            raise ValueError("IFNode has leak = 1; use LIFNode for a leaky neuron")
        super().__init__(**kwargs)


class SeqToBatch(nn.Module):
    """Apply a stateless module to a [T, B, ...] sequence by folding T into the batch."""

    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.body = modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        T, B = x_seq.shape[:2]
        y = self.body(x_seq.flatten(0, 1))
        return y.view(T, B, *y.shape[1:])


def memory_modules(net: nn.Module):
    return (m for m in net.modules() if isinstance(m, MemoryModule))


def reset_net(net: nn.Module) -> None:
    """Reset the state of every ``MemoryModule`` in ``net`` (call between batches)."""
    for m in memory_modules(net):
        m.reset()


def detach_net(net: nn.Module) -> None:
    """Detach the state of every ``MemoryModule`` in ``net`` from the graph."""
    for m in memory_modules(net):
        m.detach()


def set_step_mode(net: nn.Module, mode: str) -> None:
    """Set 's' or 'm' on every ``MemoryModule`` in ``net``."""
    for m in memory_modules(net):
        m.step_mode = mode


def state_bytes(net: nn.Module) -> int:
    """Bytes held by the tensor memories of ``net`` (persistent neuron state)."""
    total = 0
    for m in memory_modules(net):
        for _, v in m.memories():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total
