"""Benchmarks against SpikingJelly, snnTorch and Norse: ``python -m snnlib.bench`` (``make bench``).

``nets`` builds the same conv SNN in every framework, ``steps`` trains it, ``ottt`` holds the OTTT
comparison, ``worker`` runs one measurement per process, ``report`` writes the table and figures.
This package imports no torch at the top level (the orchestrator must not).
"""
