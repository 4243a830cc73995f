"""Run configurations as data: YAML in, a validated, fully resolved dict out.

A run config has a fixed set of top-level and section keys (``DEFAULTS``); any other
key is an error that names it and suggests the closest valid key. ``model`` and
``method_args`` are checked against the signatures of what they build.
``--set key=value`` overrides use dotted keys (``optim.lr=0.05``) and YAML values.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path

import yaml

DEFAULTS: dict = {
    "name": None,              # label for the run folder
    "method": "bptt",          # registry name, see snnlib.methods.METHODS
    "method_args": {},         # keyword arguments of the method
    "model": {"name": "conv_snn"},   # registry name + keyword arguments, see snnlib.models.MODELS
    "data": {
        "name": "fashion_mnist",
        "subset": None,        # train on a seeded random subset of this many samples
        "test_subset": None,
        "subset_seed": 0,      # seed of the subsets (fixed, so every training seed sees the same data)
        "pad_to": None,        # pad static images to this square size
        "augment": None,       # None: the dataset's default for training
        "batch_size": 128,
        "test_batch_size": 500,
        "num_workers": 0,
    },
    "T": 4,                    # time steps
    "epochs": 1,
    "max_iters_per_epoch": None,   # cap on training iterations per epoch (smoke runs)
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False,
              "betas": [0.9, 0.999]},
    "schedule": {"name": "cosine", "warmup_iters": 0, "milestones": [], "gamma": 0.1, "min_lr": 0.0},
    "grad_clip": None,         # max gradient norm
    "seed": 0,
    "eval_seed": 1234,         # RNG seed used during evaluation (stochastic encoders)
    "device": "auto",          # auto | cpu | cuda
    "dtype": "float32",
    "deterministic": True,
    "threads": None,           # torch.set_num_threads; None leaves the default
    "checkpoint_every": 200,   # iterations between mid-epoch checkpoints
    "measure_memory": True,    # record the bytes one training step saves
}

SECTIONS = ("data", "optim", "schedule")
FREE_SECTIONS = ("model", "method_args")   # checked against signatures, not DEFAULTS


class ConfigError(ValueError):
    """A config key or value that cannot be used."""


def suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_keys(given: dict, allowed: dict, where: str) -> None:
    for k in given:
        if k not in allowed:
            raise ConfigError(f"unknown config key {where}{k!r}.{suggest(k, allowed)} "
                              f"Valid keys: {', '.join(sorted(allowed))}")


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in FREE_SECTIONS:
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve(cfg: dict | None = None, overrides: dict | None = None) -> dict:
    """Merge ``cfg`` and ``overrides`` onto ``DEFAULTS`` and validate the keys and basic values."""
    cfg = cfg or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"a run config must be a mapping, got {type(cfg).__name__}")
    _check_keys(cfg, DEFAULTS, "")
    for sec in SECTIONS:
        if sec in cfg and cfg[sec] is not None:
            if not isinstance(cfg[sec], dict):
                raise ConfigError(f"config section {sec!r} must be a mapping")
            _check_keys(cfg[sec], DEFAULTS[sec], f"{sec}.")
    out = merge(DEFAULTS, cfg)
    if "model" in cfg:   # the model section replaces the default one entirely
        out["model"] = copy.deepcopy(cfg["model"])
    if overrides:
        out = apply_overrides(out, overrides)
    validate_values(out)
    return out


def validate_values(cfg: dict) -> None:
    T = cfg["T"]
    if not isinstance(T, int) or isinstance(T, bool) or T <= 0:
        raise ConfigError(f"T must be a positive integer number of time steps, got {T!r}")
    if not isinstance(cfg["epochs"], int) or cfg["epochs"] < 0:
        raise ConfigError(f"epochs must be a non-negative integer, got {cfg['epochs']!r}")
    if not isinstance(cfg["model"], dict) or "name" not in cfg["model"]:
        raise ConfigError("config 'model' must be a mapping with a 'name' (see snnlib.models.MODELS)")
    bs = cfg["data"]["batch_size"]
    if not isinstance(bs, int) or bs <= 0:
        raise ConfigError(f"data.batch_size must be a positive integer, got {bs!r}")
    if cfg["dtype"] not in ("float32", "float64"):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {cfg['dtype']!r}")
    if cfg["device"] not in ("auto", "cpu", "cuda") and not str(cfg["device"]).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda[:i], got {cfg['device']!r}")


def parse_set(items: list[str]) -> dict:
    """``["optim.lr=0.05", "T=8"]`` -> nested dict with YAML-parsed values."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, val = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(val)
    return out


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    """Apply nested overrides; keys are validated like the config itself (model/method_args: free)."""
    def walk(base, upd, where):
        for k, v in upd.items():
            if where == "" and k not in DEFAULTS:
                raise ConfigError(f"unknown config key {k!r} in --set.{suggest(k, DEFAULTS)}")
            if where.rstrip(".") in SECTIONS and k not in DEFAULTS[where.rstrip(".")]:
                raise ConfigError(f"unknown config key {where}{k!r} in --set.{suggest(k, DEFAULTS[where.rstrip('.')])}")
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                walk(base[k], v, f"{where}{k}.")
            else:
                base[k] = v
    out = copy.deepcopy(cfg)
    walk(out, overrides, "")
    return out


def load_yaml(path) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; a clear error if it is not a mapping."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path, overrides: dict | None = None) -> dict:
    """Load and resolve a run config from YAML."""
    return resolve(load_yaml(path), overrides)


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(cfg: dict, code_version: str | None = None) -> str:
    """Hash of the resolved config and the code version (12 hex digits)."""
    from .provenance import code_version as cv
    payload = canonical_json({"config": cfg, "code": code_version or cv()})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
