"""Training memory of one step, measured exactly and as peak RSS.

``SavedTensorTracker`` hooks ``torch.autograd.graph.saved_tensors_hooks``: every tensor
autograd saves for backward is counted once per distinct storage (parameters excluded),
and its lifetime is followed, so ``peak_bytes`` is the largest amount of saved activation
memory alive at any moment. A method that frees its graph every time step (OTTT, SAF)
therefore shows memory flat in T, and BPTT shows memory growing with T.
"""
from __future__ import annotations

import resource
import sys
import weakref

import torch

from ..neurons import state_bytes


class _Saved:
    """Wrapper that autograd keeps in place of a saved tensor; tells the tracker when freed."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


class SavedTensorTracker:
    """Context manager: ``peak_bytes`` (live peak of saved storages) and ``total_bytes`` (every
    storage saved during the block, each counted once while it stays alive).

    Args:
        exclude: tensors (e.g. parameters) whose storage is not counted.
    """

    def __init__(self, exclude=()):
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._live: dict[int, list] = {}   # storage ptr -> [nbytes, refcount]
        self.live_bytes = 0
        self.peak_bytes = 0
        self.total_bytes = 0
        self.count = 0

    def _pack(self, t: torch.Tensor):
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return t
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return t
        ptr = st.data_ptr()
        if ptr in self._exclude or ptr == 0:
            return t
        self.count += 1
        nbytes = st.nbytes()
        if ptr in self._live:
            self._live[ptr][1] += 1
        else:
            self._live[ptr] = [nbytes, 1]
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            self.total_bytes += nbytes
        w = _Saved(t)
        weakref.finalize(w, self._release, ptr)
        return w

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live_bytes -= entry[0]
            del self._live[ptr]

    @staticmethod
    def _unpack(w):
        return w.tensor if isinstance(w, _Saved) else w

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        return False

    def summary(self) -> dict:
        return {"saved_peak_bytes": self.peak_bytes, "saved_total_bytes": self.total_bytes,
                "saved_tensors": self.count}


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (never decreases; use a fresh process per config)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


class _NoStep:
    """Optimizer stand-in for memory probes: zero_grad only, parameters untouched."""

    def __init__(self, params):
        self.params = list(params)
        self.param_groups = [{"params": self.params, "lr": 0.0}]

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            p.grad = None

    def step(self, closure=None):
        return None


def step_memory(method, x, y) -> dict:
    """Training memory of one step of ``method`` on a batch, in bytes.

    ``saved_peak_bytes``: the live peak of tensors saved for backward (exact, no parameters).
    ``state_bytes``: persistent neuron state after the step. ``solver_bytes``: buffers a method
    reports (``extra_memory_bytes`` in its step statistics). ``total_bytes`` is their sum.
    The parameters are not updated.
    """
    model = method.model
    params = list(model.parameters())
    opt = _NoStep(params)
    with SavedTensorTracker(exclude=params) as tr:
        stats = method.train_step(x, y, opt)
    opt.zero_grad()
    out = tr.summary()
    out["state_bytes"] = state_bytes(model) + int(stats.get("state_bytes", 0) or 0)
    out["solver_bytes"] = int(stats.get("extra_memory_bytes", 0) or 0)
    out["total_bytes"] = out["saved_peak_bytes"] + out["state_bytes"] + out["solver_bytes"]
    return out
