"""Run configurations as data: YAML in, a validated, fully resolved dict out.

A run config has a fixed set of top-level and section keys (``DEFAULTS``); any other
key is an error that names it and suggests the closest valid key. ``model`` and
``method_args`` are checked against the signatures of what they build.
``--set key=value`` overrides use dotted keys (``optim.lr=0.05``) and YAML values.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import yaml

from ..errors import ConfigError, suggest
from .provenance import key_code_version

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
        "mean": None,          # per-channel normalisation mean/std overriding the dataset's (static images)
        "std": None,
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
    "flush_denormal": True,    # CPU: subnormal floats flushed to zero during every step (snnlib.methods.numerics)
    "checkpoint_every": 200,   # iterations between mid-epoch checkpoints
    "measure_memory": True,    # record the bytes one training step saves
    "protocol": None,          # documentation, not hashed: {published: [keys], deviations: [...]} (docs/protocols.md)
}

SECTIONS = ("data", "optim", "schedule")
FREE_SECTIONS = ("model", "method_args")   # checked against signatures, not DEFAULTS
OPTIMIZERS = ("sgd", "adam", "adamw")      # the names snnlib.train.setup.make_optimizer builds
SCHEDULES = ("constant", "cosine", "step")  # the names snnlib.train.setup.lr_at knows
MAX_SEED = 2**63 - 1
SECTION_EXAMPLE = {"data": "batch_size", "optim": "lr", "schedule": "name", "model": "name",
                   "method_args": "<argument>"}


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
    cfg = {k: v for k, v in cfg.items() if not (v is None and k in SECTIONS + ("method_args",))}  # empty: defaults
    for sec in SECTIONS:
        if sec in cfg:
            if not isinstance(cfg[sec], dict):
                raise ConfigError(f"config section {sec!r} must be a mapping of its keys, got {cfg[sec]!r}")
            _check_keys(cfg[sec], DEFAULTS[sec], f"{sec}.")
    out = merge(DEFAULTS, cfg)
    if "model" in cfg:   # the model section replaces the default one entirely
        out["model"] = copy.deepcopy(cfg["model"])
    if overrides:
        out = apply_overrides(out, overrides)
    validate_values(out)
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional(test):
    return lambda v: v is None or test(v)


def _int_at_least(lo: int):
    return lambda v: _is_int(v) and v >= lo


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _seed(v) -> bool:
    return _is_int(v) and 0 <= v <= MAX_SEED


def _number_at_least(lo: float, strict: bool):
    return lambda v: _is_number(v) and (v > lo if strict else v >= lo)


def _betas(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v)


def _milestones(v) -> bool:
    return isinstance(v, (list, tuple)) and all(_nonneg_int(m) for m in v)


def _device(v) -> bool:
    return v in ("auto", "cpu", "cuda") or (isinstance(v, str) and v.startswith("cuda:") and v[5:].isdigit())


VALUE_CHECKS: dict = {
    # dotted key: (test, what a valid value is)
    "name": (_optional(lambda v: isinstance(v, str) and v != ""), "a non-empty string or null"),
    "method": (lambda v: isinstance(v, str) and v != "", "a method name (python -m snnlib methods)"),
    "method_args": (lambda v: isinstance(v, dict), "a mapping of the method's keyword arguments"),
    "model": (lambda v: isinstance(v, dict) and isinstance(v.get("name"), str),
              "a mapping with a 'name' (see snnlib.models.MODELS)"),
    "data.name": (lambda v: isinstance(v, str) and v != "", "a dataset name"),
    "data.subset": (_optional(_positive_int), "a positive integer number of samples or null"),
    "data.test_subset": (_optional(_positive_int), "a positive integer number of samples or null"),
    "data.subset_seed": (_seed, f"an integer seed in [0, {MAX_SEED}]"),
    "data.pad_to": (_optional(_positive_int), "a positive integer image size or null"),
    "data.augment": (_optional(lambda v: isinstance(v, bool)), "true, false or null"),
    "data.batch_size": (_positive_int, "a positive integer"),
    "data.test_batch_size": (_positive_int, "a positive integer"),
    "data.num_workers": (_nonneg_int, "a non-negative integer"),
    "T": (_positive_int, "a positive integer number of time steps"),
    "epochs": (_nonneg_int, "a non-negative integer"),
    "max_iters_per_epoch": (_optional(_positive_int), "a positive integer or null (no cap)"),
    "optim.name": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "optim.lr": (_number_at_least(0.0, strict=True), "a positive finite number"),
    "optim.momentum": (_number_at_least(0.0, strict=False), "a non-negative finite number"),
    "optim.weight_decay": (_number_at_least(0.0, strict=False), "a non-negative finite number"),
    "optim.nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "optim.betas": (_betas, "a list of two numbers in [0, 1)"),
    "schedule.name": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "schedule.warmup_iters": (_nonneg_int, "a non-negative integer"),
    "schedule.milestones": (_milestones, "a list of non-negative integer epochs"),
    "schedule.gamma": (_number_at_least(0.0, strict=True), "a positive finite number"),
    "schedule.min_lr": (_number_at_least(0.0, strict=False), "a non-negative finite number"),
    "grad_clip": (_optional(_number_at_least(0.0, strict=True)), "a positive finite gradient norm or null"),
    "seed": (_seed, f"an integer in [0, {MAX_SEED}]"),
    "eval_seed": (_seed, f"an integer in [0, {MAX_SEED}]"),
    "device": (_device, "auto, cpu, cuda or cuda:<index>"),
    "dtype": (lambda v: v in ("float32", "float64"), "'float32' or 'float64'"),
    "deterministic": (lambda v: isinstance(v, bool), "true or false"),
    "threads": (_optional(_positive_int), "a positive integer or null (torch's default)"),
    "flush_denormal": (lambda v: isinstance(v, bool), "true or false"),
    "checkpoint_every": (_optional(_nonneg_int), "a non-negative integer (0 or null: only at epoch ends)"),
    "measure_memory": (lambda v: isinstance(v, bool), "true or false"),
}
"""Every value of ``DEFAULTS`` with its type and range; ``validate_values`` applies them all."""


def _describe(v) -> str:
    hint = ""
    if isinstance(v, str):
        try:
            float(v)
            hint = " (a string: YAML reads numbers like 1e-3 as strings; write 1.0e-3)"
        except ValueError:
            pass
    return f"{v!r} ({type(v).__name__}){hint}"


def validate_values(cfg: dict) -> None:
    """Check every value's type and range (``VALUE_CHECKS``); the first bad one raises a ConfigError."""
    for key, (test, valid) in VALUE_CHECKS.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        if not test(node):
            raise ConfigError(f"config value {key} must be {valid}, got {_describe(node)}")


def parse_set(items: list[str]) -> dict:
    """``["optim.lr=0.05", "T=8"]`` -> nested dict with YAML-parsed values."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, val = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key name in {key!r}")
        try:
            value = yaml.safe_load(val)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value {val!r} is not valid YAML ({problem}); "
                              "quote strings and close brackets, e.g. epochs=3 or model.channels=[8,16]") from None
        node = out
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} was set to a value above, "
                                  "so it cannot also take keys")
        node[parts[-1]] = value
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
            elif where == "" and k in SECTIONS + FREE_SECTIONS and not isinstance(v, dict) \
                    and not (v is None and k == "method_args"):
                raise ConfigError(f"--set {k}={v!r}: {k!r} is a section (a mapping), not a value; set its keys, "
                                  f"e.g. --set {k}.{SECTION_EXAMPLE[k]}=...")
            else:
                base[k] = v
    out = copy.deepcopy(cfg)
    walk(out, overrides, "")
    if out.get("method_args") is None:
        out["method_args"] = {}
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


#: config keys left out of a run's hash: ``protocol`` is documentation; ``flush_denormal`` is how the
#: CPU treats floats below 1e-38, which no method reaches in training (every op's output counted over
#: 100-400 batches of each method found none), so it changes no result; the run record states it
#: (``numerics``). Keeping it out lets records made before the key existed stay valid.
UNHASHED_KEYS = ("protocol", "flush_denormal")


def config_hash(cfg: dict, code_version: str | None = None) -> str:
    """Hash of the resolved config (less ``UNHASHED_KEYS``) and the code version (12 hex digits; the
    code version is left out in a results folder whose records outlive code versions,
    ``provenance.key_code_version``)."""
    cfg = {k: v for k, v in cfg.items() if k not in UNHASHED_KEYS}
    payload = canonical_json({"config": cfg, "code": code_version or key_code_version()})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
