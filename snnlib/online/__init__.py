"""Online training rules: OTTT (reference and lean formulations) and SAF, on one set of layers.

See ``modes`` for the four execution modes, ``neuron.OnlineLIF`` and ``synapse.TraceSynapse``
for the per-mode maths and ``export`` for LIF inference of trained weights. The measurements
notebook 03 reports live in ``snnlib.studies.ottt_saf``.
"""
from .export import LIFNetwork, export_lif, readout
from .modes import MODES, ONLINE_MODES, get_mode, running, set_mode
from .monitor import SpikeRateMonitor
from .neuron import OnlineLIF
from .synapse import TraceGradConv2d, TraceGradLinear, TraceSynapse, trace_grad_op

__all__ = ["MODES", "ONLINE_MODES", "set_mode", "get_mode", "running", "OnlineLIF", "TraceSynapse",
           "TraceGradConv2d", "TraceGradLinear", "trace_grad_op", "SpikeRateMonitor", "export_lif",
           "LIFNetwork", "readout"]
