"""snnlib: a reproducible companion to efficient SNN training papers.

Layout:
    neurons      IF/LIF/ternary step functions, stateful modules, surrogates, rate estimators
    layers       layers several papers share (weight standardisation, feedback norms, shared dropout)
    equilibrium  fixed-point solvers and implicit differentiation (IDE, MPIS, SPIDE)
    online       OTTT and SAF forward and gradient rules
    models       models by name (one module per paper family)
    methods      training methods by name (bptt, ide, mpis, spide, ottt_a, ottt_o, saf_e, saf_f, ...)
    data         datasets, offline resolution, event data, the static-to-event converter
    train        the trainer, checkpoints and resume, DDP, the CLI behind ``python -m snnlib``
    metrics      accuracy, firing rates, training memory, operation counts and energy
    experiments  configs, run records, tidy tables, the claims ledger, figures, ``make reproduce``
"""
import os as _os

# Quiet OpenMP workers: on small shared CPUs, spinning threads make steps erratic. Takes effect
# only when snnlib is imported before torch (the Makefile also exports it).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
