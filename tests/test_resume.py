"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-identical to an uninterrupted one,
for every training method, including those that draw random numbers while training (dropout,
Bernoulli spike encoding).

Each method trains a tiny net on synthetic data for 2 epochs of 4 batches with a checkpoint every
2 batches. The run to be killed is this file run as a script: it wraps the trainer's learning-rate
lookup, which starts every iteration, and sends SIGKILL to its own process when iteration
``KILL_AT`` (epoch 2, batch 4) begins, i.e. after the mid-epoch checkpoint of epoch 2 (batch 2)
was written and one more batch was trained past it. The test process then resumes the run from
its checkpoint (a fresh trainer: nothing but the run folder carries over) and trains an
uninterrupted one to compare with.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snnlib.experiments.io import load_torch
from snnlib.train import trainer as trainer_module
from snnlib.train import train

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]
NB, EPOCHS, EVERY = 4, 2, 2
KILL_AT = NB + 3                  # global iteration (0-based) at whose start the process dies
TIMING = ("time_per_batch_s", "epoch_train_time_s")

FEEDBACK = {"dropout": 0.2}
CASES = {
    "bptt": {"model": {"name": "conv_snn", "channels": [4, 8], "neuron": {"leak": 0.5}}, "T": 2},
    "ide": {"model": {"name": "ide_fc", "hidden": 16, **FEEDBACK}, "T": 4,
            "method_args": {"max_iter": 8, "solver_options": {"memory": 8}}},
    "spide": {"model": {"name": "spide_fc", "hidden": [16], **FEEDBACK}, "T": 4,
              "method_args": {"T_b": 8, "scale": 10.0}},
    "mpis": {"model": {"name": "mpis", "stem_channels": None, "channels": [2, 2, 4], "down_at": 1, "streams": 2,
                       **FEEDBACK}, "T": 3, "method_args": {"max_iter": 6}},
    "ottt_o": {"model": {"name": "online_conv", "cfg": [4, "M", 8, "M"], "dropout": 0.2}, "T": 2,
               "method_args": {"formulation": "lean"}},
    "saf_e": {"model": {"name": "online_conv", "cfg": [4, "M", 8, "M"], "dropout": 0.2}, "T": 2},
    "single_step": {"model": {"name": "min_latency", "variant": "cnn", "depths": [2], "dims": [8],
                              "patch_size": 7, "windows": 4, "encoding": "bernoulli"}, "T": 1,
                    "method_args": {"grad_clip": 5.0}, "optim": {"name": "adam", "lr": 0.005}},
}


def case_cfg(method: str) -> dict:
    c = CASES[method]
    return {"name": f"resume_{method}", "method": method, "model": c["model"], "T": c["T"],
            "method_args": c.get("method_args", {}),
            "data": {"name": "synthetic", "subset": 128, "test_subset": 64, "batch_size": 16, "test_batch_size": 64},
            "epochs": EPOCHS, "max_iters_per_epoch": NB, "checkpoint_every": EVERY,
            "optim": c.get("optim", {"name": "sgd", "lr": 0.05, "momentum": 0.9}),
            "threads": 1, "measure_memory": False, "seed": 3}


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("WORLD_SIZE", None)
    return env


def _record(run_dir):
    rec = json.loads((Path(run_dir) / "result.json").read_text())
    return [{k: v for k, v in h.items() if k not in TIMING} for h in rec["history"]]


@pytest.mark.parametrize("method", list(CASES))
def test_a_run_killed_mid_epoch_resumes_bit_identical(tmp_path, method):
    cfg = case_cfg(method)
    straight = tmp_path / "straight"
    train(cfg, straight, progress=False)

    killed = tmp_path / "killed"
    cmd = [PY, __file__, json.dumps(cfg), str(killed), str(KILL_AT)]
    first = subprocess.run(cmd, env=_env(), cwd=ROOT, timeout=300, capture_output=True, text=True)
    assert first.returncode == -signal.SIGKILL, first.stderr
    ck = load_torch(killed / "checkpoint.pt")
    assert (ck["epoch"], ck["batch"]) == (1, EVERY)          # killed in epoch 2, past its mid-epoch checkpoint
    assert not (killed / "result.json").exists()

    train(cfg, killed, progress=False)                      # resumes from the checkpoint
    a, b = load_torch(straight / "checkpoint.pt")["model"], load_torch(killed / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _record(straight) == _record(killed)


def test_the_training_data_loader_takes_nothing_from_the_global_rng():
    from snnlib.data import get_dataset
    from snnlib.data.loader import make_loader
    ds = get_dataset("synthetic", "train", subset=64)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    x, _ = next(iter(make_loader(ds, 16, shuffle=True, seed=1, epoch=2, start=1)))
    assert torch.equal(torch.get_rng_state(), before)
    assert x.shape == (16, 1, 28, 28)


def _harness(cfg_json: str, run_dir: str, kill_at: str) -> None:
    """Train ``cfg_json`` in ``run_dir``; SIGKILL this process when global iteration ``kill_at`` begins."""
    lr_at = trainer_module.lr_at

    def lr_or_die(it, *args, **kwargs):
        if it == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        return lr_at(it, *args, **kwargs)

    trainer_module.lr_at = lr_or_die
    train(json.loads(cfg_json), run_dir, progress=False)


if __name__ == "__main__":
    _harness(*sys.argv[1:])
