"""snnlib: a reproducible companion to efficient SNN training papers.

Layout, bottom to top (imports run one way, down; tests/test_structure.py checks it):
    paths, errors, registry   where things live, ConfigError and suggest, name -> constructor registries
    experiments (low)  configs, run records, tidy tables, the claims ledger, caching, published numbers, figures
    neurons      IF/LIF/ternary step functions, stateful modules, surrogates, rate estimators
    layers       layers several papers share (weight standardisation, feedback norms, shared dropout)
    equilibrium  fixed-point solvers and implicit differentiation (IDE, MPIS, SPIDE)
    online       OTTT and SAF forward and gradient rules
    models       models by name (one module per paper family)
    methods      training methods by name (bptt, ide, mpis, spide, ottt_a, ottt_o, saf_e, saf_f, ...)
    metrics      accuracy, firing rates, training memory, operation counts and energy (hook-based monitors)
    data         datasets, offline resolution, event data, the static-to-event converter
    train        the trainer, checkpoints and resume, DDP
    experiments (high)  run-or-load (runs), executors, ``make reproduce``, the report and the site
    interop      NIR export and import
    studies      what each notebook computes, one module per paper study, and the Study context
    bench        the cross-library benchmark
    __main__     the command line, ``python -m snnlib``
"""
import os as _os

# Quiet OpenMP workers: on small shared CPUs, spinning threads make steps erratic. Takes effect
# only when snnlib is imported before torch (the Makefile also exports it).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
