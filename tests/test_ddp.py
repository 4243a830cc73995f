"""DistributedDataParallel (torchrun, gloo on CPU): two ranks train and record as one process does
on the global batch, and only rank 0 prints. float64, so the two agree to rounding (1e-10)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snnlib.experiments.io import load_torch
from snnlib.train.distributed import DistInfo, global_step, mean_over_ranks

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


MODELS = {
    "bptt": ({"name": "conv_snn", "channels": [4, 8], "bn": True, "neuron": {"leak": 0.5}}, 2, {}),
    # runs the bare module (no DDP forward): the trainer averages its gradients; a dense solve, so
    # half batches give the same implicit gradient as the whole batch
    "ide": ({"name": "ide_fc", "hidden": 16, "dropout": 0.0}, 4, {"backward": "exact"}),
}


@pytest.mark.parametrize("method", list(MODELS))
def test_two_ranks_record_the_global_batch_like_one_process_and_only_rank_0_prints(tmp_path, method):
    model, T, method_args = MODELS[method]
    cfg = {"name": "ddp", "method": method, "dtype": "float64", "model": model, "T": T, "method_args": method_args,
           "data": {"name": "synthetic", "batch_size": 32, "test_batch_size": 256, "test_subset": 256},
           "epochs": 2, "max_iters_per_epoch": 3, "optim": {"name": "sgd", "lr": 0.1},
           "checkpoint_every": 2, "threads": 1, "measure_memory": method == "bptt"}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    train = ["-m", "snnlib", "train", str(cfg_path), "--run-dir"]
    subprocess.run([PY] + train + [str(tmp_path / "one"), "--quiet"], check=True, env=_env(), cwd=ROOT, timeout=600)
    torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run(torchrun + train + [str(tmp_path / "two")], env=_env(), cwd=ROOT, timeout=300,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr

    a, b = load_torch(tmp_path / "one" / "checkpoint.pt")["model"], load_torch(tmp_path / "two" / "checkpoint.pt")["model"]
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()}
    assert max(diffs.values()) < 1e-10, diffs
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    rec = json.loads((tmp_path / "two" / "result.json").read_text())
    assert rec["world_size"] == 2 and len(rec["history"]) == 2
    for h1, h2 in zip(one["history"], rec["history"]):
        assert abs(h1["train_loss"] - h2["train_loss"]) < 1e-10
        assert abs(h1["train_acc"] - h2["train_acc"]) < 1e-10
        assert abs(h1["test_loss"] - h2["test_loss"]) < 1e-10 and h1["test_acc"] == h2["test_acc"]
    if cfg["measure_memory"]:
        assert rec["train_memory"]["saved_peak_bytes"] > 0       # measured on every rank, no hang

    out = two.stdout + two.stderr
    assert out.count(f"[{method}] epoch 1/2:") == 1 and out.count(f"[{method}] epoch 2/2:") == 1
    assert out.count(f"[{method}] done after 2 epochs") == 1
    assert out.count("test accuracy") == 1


def test_step_statistics_are_averaged_over_ranks():
    r0 = {"state_bytes": 10, "solver": {"unconverged": 1.0, "name": "broyden"}, "only0": 4.0}
    r1 = {"state_bytes": 20, "solver": {"unconverged": 0.0, "name": "broyden"}, "rates": {"l1": 0.5}}
    assert mean_over_ranks([r0, r1]) == {"state_bytes": 15.0, "solver": {"unconverged": 0.5, "name": "broyden"},
                                         "only0": 4.0, "rates": {"l1": 0.5}}
    assert mean_over_ranks([r0]) is r0
    assert global_step(DistInfo(), 3.5, 2, 4, r0) == (3.5, 2, 4, r0)    # one process: untouched
