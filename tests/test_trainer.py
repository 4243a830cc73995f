"""The trainer: run records, checkpoints that resume exactly, DDP equal to one process."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from snnlib.experiments.io import load_torch
from snnlib.train import train

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(**over):
    cfg = {
        "name": "tiny", "method": "bptt",
        "model": {"name": "conv_snn", "channels": [4, 8], "neuron": {"leak": 0.5}},
        "data": {"name": "synthetic", "batch_size": 32, "test_batch_size": 256},
        "T": 2, "epochs": 2, "max_iters_per_epoch": 6, "optim": {"name": "sgd", "lr": 0.1},
        "checkpoint_every": 2, "threads": 1, "measure_memory": False,
    }
    for k, v in over.items():
        cfg[k] = v
    return cfg


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("WORLD_SIZE", None)
    return env


def _weights(run_dir):
    return load_torch(Path(run_dir) / "checkpoint.pt")["model"]


def _metrics(run_dir):
    hist = json.loads((Path(run_dir) / "result.json").read_text())["history"]
    return [(h["epoch"], h["train_loss"], h["train_acc"], h["test_acc"], h["test_loss"]) for h in hist]


def test_run_writes_record_and_a_weights_only_checkpoint(tmp_path):
    rec = train(tiny_cfg(epochs=1, measure_memory=True), tmp_path, progress=False)
    saved = json.loads((tmp_path / "result.json").read_text())
    for key in ("config", "config_hash", "seed", "history", "wall_time_s", "peak_rss_bytes", "packages",
                "git_commit", "code_version", "train_memory"):
        assert key in saved
    h = saved["history"][0]
    assert 0.0 <= h["test_acc"] <= 1.0 and h["firing_rates"] and h["time_per_batch_s"] > 0
    assert saved["train_memory"]["saved_peak_bytes"] > 0
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["batch"] == 0
    assert rec["history"][0]["test_acc"] == h["test_acc"]


def test_a_runs_thread_setting_does_not_leak_into_the_next_run(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rec = train(tiny_cfg(epochs=1, max_iters_per_epoch=2, threads=1), tmp_path, progress=False)
        assert rec["machine"]["torch_threads"] == 1        # the run itself used its setting
        assert torch.get_num_threads() == 2                 # and the caller's count is back
    finally:
        torch.set_num_threads(before)


def test_learning_happens(tmp_path):
    rec = train(tiny_cfg(epochs=3, max_iters_per_epoch=None), tmp_path, progress=False)
    assert rec["history"][-1]["test_acc"] > 0.5   # 10 classes: chance is 0.1


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(tmp_path):
    cfg = tiny_cfg(epochs=3, max_iters_per_epoch=12, checkpoint_every=3)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd = [PY, "-m", "snnlib", "train", str(cfg_path), "--quiet", "--run-dir"]

    subprocess.run(cmd + [str(tmp_path / "straight")], check=True, env=_env(), cwd=ROOT, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + [str(killed)], env=_env(), cwd=ROOT)
    ck_path = killed / "checkpoint.pt"
    deadline = time.time() + 300
    mid_epoch = False
    while time.time() < deadline and proc.poll() is None:
        if ck_path.exists():
            ck = load_torch(ck_path)
            if ck["epoch"] >= 1 and ck["batch"] > 0:     # second epoch, mid-way
                mid_epoch = True
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert mid_epoch, "the run finished before it could be killed mid-epoch"
    assert not (killed / "result.json").exists()
    at_kill = load_torch(ck_path)
    assert at_kill["batch"] > 0 or at_kill["epoch"] >= 1

    subprocess.run(cmd + [str(killed)], check=True, env=_env(), cwd=ROOT, timeout=600)
    a, b = _weights(tmp_path / "straight"), _weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(tmp_path / "straight") == _metrics(killed)


def test_torchrun_two_processes_match_one_process_on_the_global_batch(tmp_path):
    cfg = tiny_cfg(epochs=1, max_iters_per_epoch=5, dtype="float64",
                   model={"name": "conv_snn", "channels": [4, 8], "bn": True, "neuron": {"leak": 0.5}})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    subprocess.run([PY, "-m", "snnlib", "train", str(cfg_path), "--quiet", "--run-dir", str(tmp_path / "one")],
                   check=True, env=_env(), cwd=ROOT, timeout=600)
    torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run(torchrun + ["-m", "snnlib", "train", str(cfg_path), "--quiet", "--run-dir", str(tmp_path / "two")],
                   check=True, env=_env(), cwd=ROOT, timeout=600)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    diffs = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()}
    assert max(diffs.values()) < 1e-5, diffs
    rec = json.loads((tmp_path / "two" / "result.json").read_text())
    assert rec["world_size"] == 2


def test_nan_inputs_and_bad_shapes_get_clear_errors():
    from snnlib.train import build
    _, method = build(tiny_cfg())
    opt = torch.optim.SGD(method.net.parameters(), lr=0.1)
    x = torch.rand(4, 1, 28, 28)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        method.train_step(x, torch.zeros(4, dtype=torch.long), opt)
    with pytest.raises(ValueError, match="batch size mismatch"):
        method.train_step(torch.rand(4, 1, 28, 28), torch.zeros(3, dtype=torch.long), opt)
    with pytest.raises(TypeError, match="labels"):
        method.train_step(torch.rand(4, 1, 28, 28), torch.zeros(4), opt)


def test_global_batchnorm_is_batchnorm_in_one_process():
    from snnlib.train.sync_batchnorm import convert_batchnorm
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)).double()
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    ref = net(x)
    conv = convert_batchnorm(net)
    assert type(conv[1]).__name__ == "GlobalBatchNorm" and conv[1].weight.dtype == torch.float64
    assert torch.allclose(conv(x), ref)
