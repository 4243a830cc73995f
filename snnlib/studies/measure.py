"""Measurements shared by the studies: a deterministic batch, training memory against T,
finished runs reloaded, evaluated under several seeds, and their counted energy."""
from __future__ import annotations

import copy

import torch

from ..data.loader import make_loader
from ..experiments.config import resolve
from ..experiments.io import load_torch
from ..pipeline.runs import ensure_checkpoint, run_dir_for
from ..metrics.energy import EnergyCounter
from ..metrics.memory import step_memory
from ..train import build
from ..train.trainer import DTYPES, build_data, evaluate


def example_batch(cfg: dict, batch_size: int, seed: int = 0):
    """The first ``batch_size`` training samples of the config's dataset, shuffled by ``seed``:
    ``(x, y)`` with x ``[B, C, H, W]`` (static) or ``[B, T, C, H, W]`` (events)."""
    cfg = resolve(cfg)
    train, _ = build_data(cfg)
    x, y = next(iter(make_loader(train, batch_size, shuffle=True, seed=seed, drop_last=True)))
    return x, y


def _frames(x: torch.Tensor, T: int) -> torch.Tensor:
    """Event input ``[B, T', ...]`` repeated/cut to ``T`` frames; static input unchanged."""
    if x.dim() != 5 or x.shape[1] == T:
        return x
    reps = -(-T // x.shape[1])
    return x.repeat(1, reps, 1, 1, 1)[:, :T]


def memory_vs_T(variants: dict[str, dict], Ts, *, batch=None, batch_size: int = 32, seed: int = 0) -> list[dict]:
    """``step_memory`` (bytes) of one training step of every variant config at every T.

    ``variants``: label -> run config (each built with ``torch.manual_seed(seed)`` for every T,
    so only T changes). ``batch``: ``(x, y)``; default: ``example_batch`` of the first config.
    Rows: ``{"variant", "T", "method", "saved_peak_bytes", "state_bytes", "solver_bytes", "total_bytes", ...}``.
    """
    if not variants:
        raise ValueError("memory_vs_T needs at least one variant config")
    if batch is None:
        batch = example_batch(next(iter(variants.values())), batch_size, seed)
    x, y = batch
    rows = []
    for label, cfg in variants.items():
        base = resolve(cfg)
        dtype = torch.float32 if base["dtype"] == "float32" else torch.float64
        for T in Ts:
            c = copy.deepcopy(base)
            c["T"] = int(T)
            torch.manual_seed(seed)
            _, method = build(c, "cpu")
            torch.manual_seed(seed)
            m = step_memory(method, _frames(x, int(T)).to(dtype), y)
            rows.append({"variant": label, "T": int(T), "method": c["method"], **{k: int(v) for k, v in m.items()}})
    return rows


def load_trained(record: dict, device="cpu"):
    """``(model, method, cfg)`` of a finished run: built from ``record['config']``, weights from its
    checkpoint (``torch.load(weights_only=True)``; a run whose record exists without its checkpoint is
    retrained to restore it, ``ensure_checkpoint``), in eval mode."""
    cfg = record["config"]
    if not (run_dir_for(cfg) / "result.json").exists():
        raise FileNotFoundError(f"run {cfg.get('name')!r} has not finished ({run_dir_for(cfg)}); train it with "
                                "run(cfg) first")
    path = ensure_checkpoint(record)
    model, method = build(cfg, device)
    model.load_state_dict(load_torch(path, map_location=device)["model"])
    model.eval()
    return model, method, cfg


def evaluate_seeds(record: dict, seeds, *, test_subset: int | None = None, device="cpu") -> list[dict]:
    """Test accuracy of a finished run under each evaluation seed: ``[{"eval_seed", "test_acc"}]``.
    ``test_subset``: a seeded subset of the test set (None: the run's own test set)."""
    model, method, cfg = load_trained(record, device)
    cfg = {**cfg, "data": {**cfg["data"], "test_subset": test_subset or cfg["data"]["test_subset"]}}
    _, test = build_data(cfg)
    out = []
    for s in seeds:
        ev = evaluate(method, test, {**cfg, "eval_seed": int(s)}, torch.device(device), DTYPES[cfg["dtype"]])
        out.append({"eval_seed": int(s), "test_acc": ev["test_acc"]})
    return out


def energy_of_run(record: dict, *, samples: int = 256, eval_seed: int | None = None, T: int | None = None,
                  part_fn=None, device="cpu") -> dict:
    """Counted operations and energy per sample of a finished run on ``samples`` test images.

    The method's own ``predict`` runs under an ``EnergyCounter``; ``T`` overrides its number of
    steps (e.g. a T = 1 backbone run for T passes). Returns ``{"table", "summary", "samples", "T"}``.
    """
    model, method, cfg = load_trained(record, device)
    if T is not None:
        method.T = int(T)
    _, test = build_data({**cfg, "data": {**cfg["data"], "test_subset": samples}})
    x, _ = next(iter(make_loader(test, samples, shuffle=False)))
    x = x.to(device=device, dtype=DTYPES[cfg["dtype"]])
    with torch.random.fork_rng(devices=[]), EnergyCounter(model, part_fn) as ec:
        torch.manual_seed(cfg["eval_seed"] if eval_seed is None else eval_seed)
        method.predict(x)
    n = x.shape[0]
    return {"table": ec.table(n).to_dict("records"), "summary": ec.summary(n), "samples": n, "T": method.T}
