"""Experiments, low level: configs, run records on disk, the tidy table, the claims ledger, caching,
published numbers and figures. Training a config lives one level up, in :mod:`snnlib.experiments.runs`
(``run``, ``run_many``, ``run_dir_for``, ``is_done``), because it needs the trainer."""
from .cache import memo
from .claims import ClaimFailed, Ledger, load_claims
from .config import ConfigError, config_hash, load_config, load_yaml, parse_set, resolve
from .io import read_json, write_json
from .published import published
from .tables import final, load_runs, save_runs, tidy

__all__ = ["memo", "Ledger", "ClaimFailed", "load_claims", "ConfigError", "config_hash", "load_config",
           "load_yaml", "parse_set", "resolve", "read_json", "write_json", "published", "tidy", "final",
           "save_runs", "load_runs"]
