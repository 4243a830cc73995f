"""Experiments: configs, run records on disk, the tidy table, the claims ledger, caching, published
numbers and figures. Below the core, which reads its configs; training a config, ``make reproduce``
and the report live above the trainer, in :mod:`snnlib.pipeline`."""
from .cache import memo
from .claims import ClaimFailed, Ledger, load_claims
from .config import ConfigError, config_hash, load_config, load_yaml, parse_set, resolve
from .io import read_json, write_json
from .published import published
from .tables import final, load_runs, save_runs, tidy

__all__ = ["memo", "Ledger", "ClaimFailed", "load_claims", "ConfigError", "config_hash", "load_config",
           "load_yaml", "parse_set", "resolve", "read_json", "write_json", "published", "tidy", "final",
           "save_runs", "load_runs"]
