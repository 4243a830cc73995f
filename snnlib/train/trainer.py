"""The one trainer every method uses.

``train(cfg, run_dir)`` builds data, model and method from a resolved config, trains for
``cfg['epochs']`` epochs with a tqdm progress bar, evaluates after each epoch, checkpoints
atomically every ``checkpoint_every`` iterations and at each epoch end, and resumes from
the checkpoint in ``run_dir`` when one exists: a run killed at any moment and resumed ends
with the same weights and metrics as an uninterrupted one (same seed, same thread count):
the checkpoint holds the model, the optimiser, every RNG state (each rank's), the method's own
state and the partial epoch, and the data loaders draw nothing from the global RNG.
``grad_clip`` clips the total gradient norm before every ``optimizer.step()`` a method takes.
Under DDP the recorded training loss, accuracy and step statistics are those of the global
batch (summed or averaged over ranks), and only rank 0 prints and writes.
It writes ``run_dir/checkpoint.pt`` and ``run_dir/result.json`` (the run record).
"""
from __future__ import annotations

import copy
import datetime as _dt
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import dataset_info, get_dataset
from ..data.loader import make_loader
from ..experiments.config import config_hash, resolve
from ..experiments.io import load_torch, save_torch, write_json
from ..experiments.provenance import code_version, git_commit, machine, package_versions
from ..methods import METHODS, build_method
from ..methods import _import_families as _import_methods
from ..metrics.accuracy import correct as n_correct
from ..metrics.memory import peak_rss_bytes, step_memory
from ..models import build_model
from ..neurons import reset_net
from . import distributed as D
from .setup import (clip_before_step, determinism_state, fit_schedule, lr_at, make_optimizer, numerics_state,
                    resolve_device, rng_state, seed_everything, set_determinism, set_rng_state)

CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def data_info(cfg: dict) -> dict:
    """``dataset_info`` of the config's dataset, with ``size`` adjusted for ``data.pad_to``."""
    info = dict(dataset_info(cfg["data"]["name"]))
    if cfg["data"]["pad_to"]:
        info["size"] = (cfg["data"]["pad_to"], cfg["data"]["pad_to"])
    return info


def build_data(cfg: dict):
    """Train and test datasets of a resolved config."""
    d = cfg["data"]
    kw = {"T": cfg["T"]} if data_info(cfg).get("is_events") else {}
    if d["pad_to"]:
        kw["pad_to"] = d["pad_to"]
    if d.get("mean") is not None or d.get("std") is not None:
        kw["mean"], kw["std"] = d.get("mean"), d.get("std")
    train = get_dataset(d["name"], "train", subset=d["subset"], seed=d["subset_seed"], augment=d["augment"], **kw)
    test = get_dataset(d["name"], "test", subset=d["test_subset"], seed=d["subset_seed"], augment=False, **kw)
    return train, test


def build(cfg: dict, device="cpu", dist_info: D.DistInfo | None = None):
    """Model (on ``device``, in the config dtype, DDP-wrapped when distributed) and its method
    (``flush_denormal`` from the config).

    Needs no dataset files: only the dataset's shape information.
    """
    cfg = resolve(cfg)
    dist_info = dist_info or D.DistInfo()
    device = torch.device(device)
    model = build_model(cfg["model"], data_info(cfg)).to(device=device, dtype=DTYPES[cfg["dtype"]])
    _import_methods()
    ddp_kwargs = getattr(METHODS.get(cfg["method"]), "ddp_kwargs", {}) or {}
    wrapped = D.wrap_ddp(model, dist_info, device, **ddp_kwargs)
    method = build_method(cfg["method"], wrapped, T=cfg["T"], **cfg["method_args"])
    method.flush_denormal = cfg["flush_denormal"]
    return model, method


def _to(x, device, dtype):
    return x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype, non_blocking=True)


def evaluate(method, dataset, cfg: dict, device, dtype, *, max_batches=None) -> dict:
    """Test accuracy, loss and per-layer firing rates; RNG forked and seeded with ``eval_seed``."""
    net = method.net
    was_training = net.training
    net.eval()
    loader = make_loader(dataset, cfg["data"]["test_batch_size"], shuffle=False, max_batches=max_batches)
    correct = total = 0
    loss_sum = 0.0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), method.monitor() as mon, torch.no_grad():
        torch.manual_seed(cfg["eval_seed"])
        for x, y in loader:
            x, y = _to(x, device, dtype), y.to(device)
            out = method.predict(x)
            correct += n_correct(out, y)
            total += len(y)
            loss_sum += float(torch.nn.functional.cross_entropy(out.float(), y, reduction="sum"))
        rates = mon.rates()
    net.train(was_training)
    return {"test_acc": correct / max(total, 1), "test_loss": loss_sum / max(total, 1), "firing_rates": rates,
            "mean_firing_rate": (sum(rates.values()) / len(rates)) if rates else None}


def _aggregate(stats_list: list[dict]) -> dict:
    """Mean of every numeric entry (and numeric entries of nested dicts) over training steps."""
    acc: dict = {}
    for st in stats_list:
        for k, v in st.items():
            if k in ("loss", "correct"):
                continue
            if isinstance(v, dict):
                sub = acc.setdefault(k, {})
                for kk, vv in v.items():
                    if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                        sub.setdefault(kk, []).append(float(vv))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                acc.setdefault(k, []).append(float(v))
    out = {}
    for k, v in acc.items():
        if isinstance(v, dict):
            out[k] = {kk: sum(vv) / len(vv) for kk, vv in v.items()}
        else:
            out[k] = sum(v) / len(v)
    return out


def health_notes(history: list[dict], steps_per_epoch: int, world_size: int = 1) -> list[str]:
    """What went wrong numerically over a run, from its epoch records: unconverged solves
    (step statistics named ``*unconverged``: the fraction of a step's solves that missed the
    method's tolerance) and saturated neurons (``*saturated``: the fraction of neurons at their
    largest rate). Empty when there was nothing to report."""
    unconv: dict[str, float] = {}
    sat: dict[str, list] = {}
    for h in history:
        for path, v in _numeric_leaves(h.get("step_stats") or {}):
            name = path.rsplit(".", 1)[-1]
            if name.endswith("unconverged"):
                unconv[path] = unconv.get(path, 0.0) + v * steps_per_epoch * world_size
            elif name.endswith("saturated"):
                sat.setdefault(path, []).append(v)
    solves = len(history) * steps_per_epoch * world_size
    notes = [f"{round(n)} of {solves} solves unconverged ({path})" for path, n in unconv.items() if round(n) > 0]
    notes += [f"saturated neurons ({path}): {100 * sum(v) / len(v):.2f}% on average, "
              f"{100 * max(v):.2f}% in the worst epoch" for path, v in sat.items() if max(v) > 0]
    return notes


def _numeric_leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _numeric_leaves(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            yield f"{prefix}{k}", float(v)


def final_line(cfg: dict, history: list[dict], steps_per_epoch: int, world_size: int = 1) -> str:
    """The end-of-run summary: final test accuracy and training loss, plus ``health_notes``."""
    if not history:
        return f"[{cfg['method']}] done: no epoch trained"
    h = history[-1]
    line = (f"[{cfg['method']}] done after {h['epoch']} epochs: test acc {h['test_acc']:.4f}, "
            f"train loss {h['train_loss']:.4f}")
    notes = health_notes(history, steps_per_epoch, world_size)
    return line + ("; " + "; ".join(notes) if notes else "")


def train(cfg: dict, run_dir, *, resume: bool = True, progress: bool = True) -> dict:
    """Train one run; returns the run record (also written to ``run_dir/result.json``).

    A run's ``threads`` setting holds for that run only: the caller's torch thread count is restored."""
    threads = torch.get_num_threads()
    try:
        return _train(cfg, run_dir, resume=resume, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: dict, run_dir, *, resume: bool, progress: bool) -> dict:
    cfg = resolve(cfg)
    run_dir = Path(run_dir)
    dist_info = D.init_distributed()
    set_determinism(cfg["deterministic"], cfg["threads"])
    device = resolve_device(cfg["device"], dist_info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dtype = DTYPES[cfg["dtype"]]
    seed_everything(cfg["seed"])

    train_ds, test_ds = build_data(cfg)
    model, method = build(cfg, device, dist_info)
    optimizer = make_optimizer(model.parameters(), cfg["optim"])
    D.sync_grads_without_ddp_forward(method.model, optimizer, dist_info)   # before clipping: hooks run in order
    clip_before_step(optimizer, cfg["grad_clip"])

    bs, E = cfg["data"]["batch_size"], cfg["epochs"]
    probe = make_loader(train_ds, bs, shuffle=True, drop_last=True, max_batches=cfg["max_iters_per_epoch"])
    nb = probe.batch_sampler.num_batches()
    if nb == 0:
        raise ValueError(f"training set of {len(train_ds)} samples gives no full batch of {bs}")
    total_iters = nb * E
    schedule, schedule_note = fit_schedule(cfg["schedule"], total_iters)
    if schedule_note and progress and dist_info.is_main:
        print(f"[{cfg['method']}] {schedule_note}", file=sys.stderr, flush=True)

    state = {"epoch": 0, "batch": 0, "history": [], "partial": None, "elapsed": 0.0}
    ckpt_path = run_dir / CHECKPOINT
    if resume and ckpt_path.exists():
        ck = load_torch(ckpt_path, map_location=device)
        if ck.get("config_hash") != config_hash(cfg):
            raise RuntimeError(f"{ckpt_path} belongs to another config or code version; "
                               "use another run folder or resume=False")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        ranks = ck.get("rng_ranks")
        set_rng_state(ranks[dist_info.rank] if ranks and len(ranks) == dist_info.world_size else ck["rng"])
        method.load_state_dict(ck.get("method") or {})
        state = {k: ck[k] for k in ("epoch", "batch", "history", "partial", "elapsed")}

    def save_checkpoint():
        rng_ranks = D.gather(dist_info, rng_state())      # collective: every rank calls it
        if dist_info.is_main:
            save_torch(ckpt_path, {"config_hash": config_hash(cfg), "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(), "rng": rng_ranks[0],
                                   "rng_ranks": rng_ranks if dist_info.enabled else None,
                                   "method": method.state_dict(), **state})

    started = time.perf_counter()
    base_elapsed = state["elapsed"]
    model.train()
    for epoch in range(state["epoch"], E):
        part = state["partial"] or {"loss_sum": 0.0, "correct": 0, "count": 0, "step_times": [], "stats": []}
        loader = make_loader(train_ds, bs, shuffle=True, seed=cfg["seed"], epoch=epoch, start=state["batch"],
                             drop_last=True, rank=dist_info.rank, world_size=dist_info.world_size,
                             num_workers=cfg["data"]["num_workers"], max_batches=cfg["max_iters_per_epoch"])
        bar = tqdm(loader, total=nb, initial=state["batch"], desc=f"{cfg['method']} epoch {epoch + 1}/{E}",
                   disable=not (progress and dist_info.is_main), file=sys.stderr, mininterval=2.0, leave=True)
        for b, (x, y) in enumerate(bar, start=state["batch"]):
            it = epoch * nb + b
            lr = lr_at(it, total_iters, nb, cfg["optim"]["lr"], schedule)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = _to(x, device, dtype), y.to(device)
            t0 = time.perf_counter()
            st = method.train_step(x, y, optimizer)
            part["step_times"].append(time.perf_counter() - t0)
            extra = {k: v for k, v in st.items() if k not in ("loss", "correct")}
            loss_sum, n_ok, n, extra = D.global_step(dist_info, float(st["loss"]) * len(y),
                                                     int(st.get("correct", 0)), len(y), extra)
            if not math.isfinite(loss_sum):     # on every rank alike: the sum is global
                raise FloatingPointError(f"loss became {loss_sum / n} at epoch {epoch + 1}, batch {b}; "
                                         "lower the learning rate or check the inputs")
            part["loss_sum"] += loss_sum
            part["correct"] += n_ok
            part["count"] += n
            if extra:
                part["stats"].append(extra)
            bar.set_postfix(loss=f"{part['loss_sum'] / part['count']:.3f}",
                            acc=f"{part['correct'] / part['count']:.3f}", refresh=False)
            state["batch"], state["partial"] = b + 1, part
            if cfg["checkpoint_every"] and (b + 1) % cfg["checkpoint_every"] == 0 and b + 1 < nb:
                state["elapsed"] = base_elapsed + time.perf_counter() - started
                save_checkpoint()
        bar.close()
        ev = evaluate(method, test_ds, cfg, device, dtype)
        entry = {"epoch": epoch + 1, "lr": lr, "train_loss": part["loss_sum"] / max(part["count"], 1),
                 "train_acc": part["correct"] / max(part["count"], 1), **ev,
                 "time_per_batch_s": statistics.median(part["step_times"]) if part["step_times"] else None,
                 "epoch_train_time_s": sum(part["step_times"]), "step_stats": _aggregate(part["stats"])}
        state["history"].append(entry)
        state.update(epoch=epoch + 1, batch=0, partial=None,
                     elapsed=base_elapsed + time.perf_counter() - started)
        save_checkpoint()
        if progress and dist_info.is_main:
            print(f"[{cfg['method']}] epoch {epoch + 1}/{E}: test acc {ev['test_acc']:.4f}, "
                  f"train loss {entry['train_loss']:.4f}", file=sys.stderr, flush=True)

    if progress and dist_info.is_main:
        print(final_line(cfg, state["history"], nb, dist_info.world_size), file=sys.stderr, flush=True)

    memory = None
    if cfg["measure_memory"]:
        # Every rank measures a step on its slice of the first batch (the step's collectives need all
        # ranks); the record holds rank 0's: the memory of one process.
        snapshot = copy.deepcopy(model.state_dict())
        x, y = next(iter(make_loader(train_ds, bs, shuffle=True, seed=cfg["seed"], drop_last=True,
                                     rank=dist_info.rank, world_size=dist_info.world_size)))
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            memory = step_memory(method, _to(x, device, dtype), y.to(device))
        model.load_state_dict(snapshot)
        reset_net(model)

    record = {
        "config": cfg, "config_hash": config_hash(cfg), "code_version": code_version(), "git_commit": git_commit(),
        "name": cfg["name"], "method": cfg["method"], "model": cfg["model"]["name"], "dataset": cfg["data"]["name"],
        "T": cfg["T"], "seed": cfg["seed"], "device": str(device), "world_size": dist_info.world_size,
        "packages": package_versions(), "machine": machine(), "determinism": determinism_state(),
        "numerics": numerics_state(method, device),
        "schedule": schedule, "schedule_note": schedule_note, "history": state["history"],
        "final": state["history"][-1] if state["history"] else {},
        "train_memory": memory, "wall_time_s": state["elapsed"], "peak_rss_bytes": peak_rss_bytes(),
        "peak_cuda_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if dist_info.is_main:
        write_json(run_dir / RESULT, record)
    D.barrier(dist_info)
    return record
