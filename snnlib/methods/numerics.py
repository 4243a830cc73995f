"""CPU float handling of a method's steps: subnormal (denormal) floats flushed to zero.

Arithmetic that produces or reads subnormal floats (|x| < 1.2e-38 in float32) takes a slow path
on x86 CPUs (microcode assists, tens to hundreds of cycles an operation). ``flushing_subnormals``
turns torch's flush-to-zero (``torch.set_flush_denormal``: FTZ and DAZ) on for the duration of a
step and restores the previous state after it, so code around the step (another framework timed
in the same process, a user's own loop) is unaffected.

Two limits, both of torch's switch: it sets the floating-point control register of the calling
thread only, so with several intra-op threads the work of the other OpenMP threads keeps
subnormals; and it is a no-op where the CPU has no such mode (``torch.set_flush_denormal``
returns False). float64 results change only below 2.2e-308 (the equivalence tests' range never
reaches it).
"""
from __future__ import annotations

import contextlib

import torch

_PROBE_VALUE = 1e-40          # a float32 subnormal


def flush_denormal_enabled() -> bool:
    """Whether the calling thread flushes subnormals now (a subnormal times one reads as zero)."""
    probe = torch.tensor([_PROBE_VALUE], dtype=torch.float32)
    return bool(torch.mul(probe, 1.0)[0] == 0)


@contextlib.contextmanager
def flushing_subnormals(enabled: bool = True):
    """Flush subnormals to zero in the block when ``enabled`` (CPU), then restore the previous state."""
    if not enabled:
        yield False
        return
    before = flush_denormal_enabled()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(before)


def on_cpu(x: torch.Tensor) -> bool:
    return x.device.type == "cpu"
