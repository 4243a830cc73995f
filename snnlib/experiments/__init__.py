"""Experiments: configs, run records, the tidy table, the claims ledger, caching and figures."""
from .cache import memo
from .claims import ClaimFailed, Ledger, load_claims
from .config import ConfigError, config_hash, load_config, load_yaml, parse_set, resolve
from .io import read_json, write_json
from .published import published
from .runs import is_done, run, run_dir_for, run_many
from .tables import all_records, final, load_runs, mean_sd, save_runs, tidy

__all__ = ["memo", "Ledger", "ClaimFailed", "load_claims", "ConfigError", "config_hash", "load_config",
           "load_yaml", "parse_set", "resolve", "read_json", "write_json", "published", "run", "run_many",
           "is_done", "run_dir_for", "tidy", "final", "mean_sd", "all_records", "save_runs", "load_runs"]
