"""Run-or-load: every run is keyed by the hash of its resolved config and the code version.

``run(cfg)`` returns the stored record when ``results/runs/<name>-<hash>/result.json``
exists, resumes from the run's checkpoint when it was interrupted, and trains otherwise.
``run_many`` trains in this process by default; ``SNNLIB_EXECUTOR`` hands its runs to local
processes or a Slurm cluster instead (see ``snnlib.pipeline.executors``).
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..paths import results_dir
from ..train import train
from ..experiments.config import config_hash, load_yaml, resolve
from .executors import executor_name, submit_runs
from ..experiments.io import read_json


def run_dir_for(cfg: dict) -> Path:
    cfg = resolve(cfg)
    label = cfg["name"] or f"{cfg['method']}-{cfg['model']['name']}"
    return results_dir() / "runs" / f"{label}-{config_hash(cfg)}"


def is_done(cfg: dict) -> bool:
    return (run_dir_for(cfg) / "result.json").exists()


def run(cfg, overrides: dict | None = None, *, progress: bool = True, force: bool = False) -> dict:
    """Train (or load) one run. ``cfg`` is a dict or a YAML path."""
    if isinstance(cfg, (str, Path)):
        cfg = load_yaml(cfg)
    cfg = resolve(cfg, overrides)
    rd = run_dir_for(cfg)
    result = rd / "result.json"
    if result.exists() and not force:
        return read_json(result)
    return train(cfg, rd, progress=progress, resume=not force)


#: per-epoch values a retrained run must reproduce exactly to stand in for the stored one
REPRODUCED = ("train_loss", "test_loss", "test_acc")


def ensure_checkpoint(record: dict, *, progress: bool = True) -> Path:
    """The checkpoint of the finished run ``record``, retrained when it is absent.

    The full scale commits run records, not checkpoints; a measurement that needs the weights (on
    another machine, or after a clean checkout) gets them by training the run's config again in a
    scratch folder: training is deterministic on CPU, so the retrained run must reproduce every
    epoch's ``REPRODUCED`` values of the record exactly; then its checkpoint is moved into the run's
    folder. Otherwise a RuntimeError names the difference (the record stays as it is)."""
    rd = run_dir_for(record["config"])
    path = rd / "checkpoint.pt"
    if path.exists():
        return path
    with tempfile.TemporaryDirectory(dir=rd.parent, prefix=f".{rd.name}-retrain-") as scratch:
        if progress:
            print(f"[{record.get('name')}] no checkpoint in {rd}: retraining seed={record.get('seed')} to restore it",
                  file=sys.stderr, flush=True)
        again = train(record["config"], Path(scratch), resume=False, progress=progress)
        mine = [{k: h.get(k) for k in REPRODUCED} for h in record["history"]]
        theirs = [{k: h.get(k) for k in REPRODUCED} for h in again["history"]]
        if mine != theirs:
            raise RuntimeError(f"retraining {rd.name} to restore its checkpoint did not reproduce the record "
                               f"(per epoch {REPRODUCED}: stored {mine}, retrained {theirs}); the weights of the "
                               "record are lost: delete the run folder to train it anew")
        rd.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(scratch) / "checkpoint.pt"), path)
    return path


def run_many(cfgs: list[dict], *, progress: bool = True, label: str = "runs", executor: str | None = None) -> list[dict]:
    """Run a list of configs, printing which run is going; returns their records in order.

    ``executor`` (default ``$SNNLIB_EXECUTOR``, else 'inline'): 'inline' trains them here one
    after the other with an estimate of what is left; 'local', 'slurm' or 'submitit-local'
    submit the unfinished ones and wait for all (``snnlib.pipeline.executors``).
    """
    name = executor_name(executor)
    if name != "inline":
        resolved = [resolve(c) for c in cfgs]
        tasks = {}
        for cfg in resolved:   # one job per run folder, however often a config is listed
            tasks.setdefault(run_dir_for(cfg), cfg)
        submit_runs([(cfg, rd) for rd, cfg in tasks.items()], name, progress=progress, label=label)
        return [read_json(run_dir_for(cfg) / "result.json") for cfg in resolved]
    records, t0, trained = [], time.perf_counter(), 0
    n = len(cfgs)
    for i, cfg in enumerate(cfgs):
        cfg = resolve(cfg)
        done = is_done(cfg)
        if progress:
            left = ""
            if trained:
                per = (time.perf_counter() - t0) / trained
                todo = sum(not is_done(c) for c in cfgs[i:])
                left = f", about {per * todo / 60:.1f} min left"
            tag = "cached" if done else "training"
            print(f"[{label} {i + 1}/{n}] {cfg['name'] or cfg['method']} seed={cfg['seed']} T={cfg['T']}: {tag}{left}",
                  file=sys.stderr, flush=True)
        records.append(run(cfg, progress=progress))
        trained += 0 if done else 1
    return records
