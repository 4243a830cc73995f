"""Neurons: pure step functions, stateful modules, surrogate gradients and rate estimators."""
from .functional import if_step, lif_multistep, lif_step, ternary_step
from .chunked import chunk_size, chunked_forward, last_level_cache_bytes, mixes_batch
from .fused import lif_multistep_fused
from .modules import (IFNode, LIFNode, MemoryModule, SeqToBatch, detach_net, memory_modules, reset_net,
                      set_step_mode, state_bytes)
from .rates import RateAccumulator, mean_rate, rate_normaliser, weighted_rate
from .surrogate import ATan, Rectangle, Sigmoid, Surrogate, Triangle, get_surrogate, heaviside

__all__ = [
    "if_step", "lif_step", "lif_multistep", "lif_multistep_fused", "ternary_step",
    "MemoryModule", "LIFNode", "IFNode", "SeqToBatch", "reset_net", "detach_net", "set_step_mode",
    "memory_modules", "state_bytes", "chunked_forward", "chunk_size", "last_level_cache_bytes", "mixes_batch",
    "mean_rate", "weighted_rate", "rate_normaliser", "RateAccumulator",
    "Surrogate", "Sigmoid", "ATan", "Rectangle", "Triangle", "get_surrogate", "heaviside",
]
