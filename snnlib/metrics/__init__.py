"""Metrics: accuracy, firing rates, training memory, operation counts and energy."""
from .accuracy import accuracy, correct
from .firing import FiringRateMonitor, mean_firing_rate
from .memory import SavedTensorTracker, peak_rss_bytes, step_memory
from .ops import E_AC_PJ, E_MAC_PJ, OpCounter, is_spike_tensor, layer_macs, layer_sops

__all__ = ["accuracy", "correct", "FiringRateMonitor", "mean_firing_rate", "SavedTensorTracker",
           "peak_rss_bytes", "step_memory", "OpCounter", "E_AC_PJ", "E_MAC_PJ", "is_spike_tensor",
           "layer_macs", "layer_sops"]
