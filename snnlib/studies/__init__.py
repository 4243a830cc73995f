"""Studies: what the notebooks compute, one module per paper study, above the core.

``Study`` (``studies.context``) is a notebook's handle: its ledger, figures, runs, configs and
data batches, with the scale given once. The paper modules (``ide_mpis``, ``spide``,
``ottt_saf``, ``min_latency``, ``summary``) and the shared ``measure`` hold the measurements,
statistics and checks behind each notebook, tested in ``tests/``; ``plotting`` holds the layout
helpers every figure shares (legends off the data, whole-number and plain log ticks).

Import direction: ``studies`` may import every package of snnlib; no core package (neurons,
layers, equilibrium, online, models, methods, metrics, data, train) and no low ``experiments``
module imports ``studies`` (``tests/test_structure.py``).
"""
from .context import Study

__all__ = ["Study"]
