"""Executors: run_many hands its runs to local processes or submitit, re-attaches after an interruption,
never submits a finished run again, and gives the records an in-process run gives."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from snnlib.pipeline import executors as X
from snnlib.pipeline.runs import run_dir_for, run_many
from snnlib.experiments.config import ConfigError
from snnlib.experiments.io import load_torch, read_json, write_json

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(seed, iters=3, epochs=1):
    return {
        "name": f"exec{seed}", "method": "bptt", "seed": seed,
        "model": {"name": "conv_snn", "channels": [4, 8], "neuron": {"leak": 0.5}},
        "data": {"name": "synthetic", "batch_size": 32, "test_batch_size": 256, "test_subset": 256},
        "T": 2, "epochs": epochs, "max_iters_per_epoch": iters, "optim": {"name": "sgd", "lr": 0.1},
        "checkpoint_every": 2, "threads": 1, "measure_memory": False,
    }


#: the sweep: run 0 is long enough to be killed mid-training
SWEEP = [tiny_cfg(0, iters=40, epochs=2), tiny_cfg(1), tiny_cfg(2), tiny_cfg(3)]


def metrics(rec):
    """Everything in the history but the timings."""
    return [{k: v for k, v in h.items() if "time" not in k} for h in rec["history"]]


@pytest.fixture(scope="module")
def inline_records(tmp_path_factory):
    """The sweep trained in this process, the default executor."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNNLIB_RESULTS", str(tmp_path_factory.mktemp("inline")))
        mp.delenv("SNNLIB_EXECUTOR", raising=False)
        return run_many(SWEEP, progress=False)


@pytest.fixture
def cluster_env(tmp_path, monkeypatch):
    """Results in tmp, quick polling through a SNNLIB_CLUSTER file, no SNNLIB_* settings from outside."""
    for var in ["SNNLIB_EXECUTOR", *X.ENV.values()]:
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "cluster.yaml").write_text("poll_s: 0.2\n")
    monkeypatch.setenv("SNNLIB_CLUSTER", str(tmp_path / "cluster.yaml"))
    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


# ---- choosing an executor and its settings ------------------------------------------------------

def test_the_executor_comes_from_the_environment_and_defaults_to_inline(monkeypatch):
    monkeypatch.delenv("SNNLIB_EXECUTOR", raising=False)
    assert X.executor_name() == "inline"
    monkeypatch.setenv("SNNLIB_EXECUTOR", "slurm")
    assert X.executor_name() == "slurm"
    assert X.executor_name("local") == "local"
    monkeypatch.setenv("SNNLIB_EXECUTOR", "slurn")
    with pytest.raises(ConfigError, match="Did you mean 'slurm'"):
        X.executor_name()


def test_cluster_settings_come_from_yaml_then_environment(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("partition: gpu\ntime_min: 120\ngpus_per_run: 2\nsetup: [module load cuda]\n")
    s = X.load_settings(path, env={"SNNLIB_SLURM_TIME": "30", "SNNLIB_MEM_GB": "16"})
    assert (s.partition, s.time_min, s.gpus_per_run, s.mem_gb, s.setup) == ("gpu", 30, 2, 16, ("module load cuda",))
    assert X.load_settings(env={}) == X.ClusterSettings()
    path.write_text("partiton: gpu\n")
    with pytest.raises(ConfigError, match="Did you mean 'partition'"):
        X.load_settings(path, env={})
    with pytest.raises(ConfigError, match="gpus_per_run must be a non-negative integer"):
        X.load_settings(env={"SNNLIB_GPUS_PER_RUN": "two"})
    with pytest.raises(ConfigError, match="time_min must be a positive number of minutes"):
        X.ClusterSettings(time_min=0)


def test_a_run_with_several_gpus_is_launched_with_torchrun(monkeypatch):
    one = X.train_command("cfg.yaml", "runs/a", 1, python="py")
    assert one == ["py", "-m", "snnlib", "train", "cfg.yaml", "--quiet", "--run-dir", "runs/a"]
    four = X.train_command("cfg.yaml", "runs/a", 4, python="py")
    assert four == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", *one[1:]]
    with pytest.raises(ValueError, match="positive number of processes"):
        X.train_command("cfg.yaml", "runs/a", 0)
    called, code = [], [0]
    monkeypatch.setattr(X.subprocess, "run",
                        lambda cmd: called.append(cmd) or subprocess.CompletedProcess(cmd, code[0]))
    assert X.TrainJob()("cfg.yaml", "runs/a", 4) == "runs/a"    # what a Slurm job with 4 GPUs executes
    assert X.TrainJob()("cfg.yaml", "runs/a", 1) == "runs/a"    # and with one GPU or none
    assert called == [X.train_command("cfg.yaml", "runs/a", 4), X.train_command("cfg.yaml", "runs/a", 1)]
    code[0] = 2                                                  # a run that fails
    with pytest.raises(RuntimeError, match="exited with code 2"):
        X.TrainJob()("cfg.yaml", "runs/a", 1)


def test_slurm_options_reach_the_sbatch_script(tmp_path):
    slurm = pytest.importorskip("submitit.slurm.slurm")
    s = X.ClusterSettings(partition="gpu", time_min=90, gpus_per_run=4, cpus_per_run=16, mem_gb=32, account="snn")
    text = slurm._make_sbatch_string(command="true", folder=tmp_path, **X.slurm_parameters(s, "snnlib-a"))
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=4", "--cpus-per-task=16", "--mem=32768M",
                 "--account=snn", "--ntasks-per-node=1", "--job-name=snnlib-a"):
        assert f"#SBATCH {line}\n" in text


def test_executors_without_their_means_fail_clearly(monkeypatch):
    monkeypatch.setattr(X.shutil, "which", lambda name: None)
    pytest.importorskip("submitit")
    with pytest.raises(ConfigError, match="no 'sbatch'"):
        X.make_backend("slurm", X.ClusterSettings())
    monkeypatch.setattr(X.torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="gpus_per_run=2 but this machine shows 0 GPUs"):
        X.make_backend("local", X.ClusterSettings(gpus_per_run=2))
    rec = {"executor": "slurm", "job_id": "42", "run_dir": "runs/a"}
    with pytest.raises(RuntimeError, match="Slurm job 42 is recorded there"):
        X._checker(rec, X.make_backend("local", X.ClusterSettings()), X.ClusterSettings(), {})


def test_local_processes_share_out_the_gpus_in_slots_of_gpus_per_run(tmp_path, monkeypatch):
    monkeypatch.setattr(X.torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    started = []

    class FakePopen:
        pid = os.getpid()

        def __init__(self, cmd, **kw):
            started.append((cmd, kw["env"]["CUDA_VISIBLE_DEVICES"]))

    monkeypatch.setattr(X.subprocess, "Popen", FakePopen)
    backend = X.make_backend("local", X.ClusterSettings(gpus_per_run=2))
    assert backend.capacity == 2 and backend.slots == [["4", "5"], ["6", "7"]]
    info = backend.submit(tmp_path / "cfg.yaml", tmp_path, [{"devices": ["4", "5"]}])
    assert info["devices"] == ["6", "7"]
    assert started == [(X.train_command(tmp_path / "cfg.yaml", tmp_path, 2), "6,7")]


# ---- running sweeps ----------------------------------------------------------------------------

def _children(pid):
    """Processes whose parent is ``pid``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError):
                pass
    return out


def _wait_for(cond, what, timeout=120):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow   # about 30 CPU-seconds (six processes import torch): ~20 s on an idle 2-core machine
def test_an_interrupted_submitit_sweep_resumes_without_resubmitting_and_matches_inline(cluster_env, inline_records):
    pytest.importorskip("submitit")
    rds = [run_dir_for(c) for c in SWEEP]
    (cluster_env / "sweep.json").write_text(json.dumps(SWEEP))
    code = ("import json, sys; from snnlib.pipeline.runs import run_many; "
            "run_many(json.load(open(sys.argv[1])), executor='submitit-local')")
    log = open(cluster_env / "orchestrator.log", "wb")
    orch = subprocess.Popen([PY, "-c", code, str(cluster_env / "sweep.json")], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ), cwd=ROOT, start_new_session=True)
    try:
        _wait_for(lambda: all(X.read_record(rd) for rd in rds), "every run to be submitted")
        # kill run 0's job mid-training, then the orchestrator itself
        ck = rds[0] / "checkpoint.pt"
        _wait_for(lambda: ck.exists() and load_torch(ck)["epoch"] < 2, "run 0's first checkpoint")
        controller = int(X.read_record(rds[0])["job_id"])
        for pid in _children(controller):
            os.kill(pid, signal.SIGKILL)
        orch.kill()
        orch.wait()
    finally:
        if orch.poll() is None:
            os.killpg(orch.pid, signal.SIGKILL)
        log.close()
    assert not (rds[0] / "result.json").exists(), "run 0 finished before it could be killed"
    assert all(X.submissions(rd) == 1 for rd in rds)

    records = run_many(SWEEP, executor="submitit-local", progress=False)
    assert [X.submissions(rd) for rd in rds] == [2, 1, 1, 1]      # only the killed run went again
    assert all(X.read_record(rd)["state"] == "FINISHED" for rd in rds)
    assert [metrics(r) for r in records] == [metrics(r) for r in inline_records]

    again = run_many(SWEEP, executor="submitit-local", progress=False)
    assert [X.submissions(rd) for rd in rds] == [2, 1, 1, 1]      # finished runs are never submitted again
    assert [metrics(r) for r in again] == [metrics(r) for r in inline_records]


def test_local_processes_resubmit_a_run_whose_recorded_job_is_gone(cluster_env, inline_records):
    cfg = SWEEP[1]
    rd = run_dir_for(cfg)
    dead = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    write_json(rd / X.RECORD, {"executor": "local", "state": "RUNNING", "job_id": str(pid), "pid": pid,
                               "submissions": [{"executor": "local", "job_id": str(pid), "at": "earlier"}]})
    (rec,) = run_many([cfg], executor="local", progress=False)
    job = read_json(rd / X.RECORD)
    assert X.submissions(rd) == 2 and job["state"] == "FINISHED" and job["job_id"] != str(pid)
    assert job["command"][1:4] == ["-m", "snnlib", "train"]
    assert metrics(rec) == metrics(inline_records[1])


# ---- a finished run whose checkpoint is gone (the full scale commits records only) -----------------

def test_a_record_without_its_checkpoint_is_retrained_to_the_same_weights(tmp_path, monkeypatch):
    from snnlib.pipeline.runs import ensure_checkpoint
    from snnlib.studies.measure import load_trained
    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path))
    rec = run_many([tiny_cfg(7, iters=4)], progress=False)[0]
    ckpt = run_dir_for(rec["config"]) / "checkpoint.pt"
    weights = load_torch(ckpt)["model"]
    ckpt.unlink()
    model, _, _ = load_trained(rec)                       # restores it on the way
    assert ckpt.exists() and sorted(p.name for p in tmp_path.joinpath("runs").iterdir()) == [ckpt.parent.name]
    restored = load_torch(ckpt)["model"]
    assert all(torch.equal(weights[k], restored[k]) for k in weights)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())

    ckpt.unlink()
    forged = {**rec, "history": [{**h, "test_acc": h["test_acc"] + 0.01} for h in rec["history"]]}
    with pytest.raises(RuntimeError, match="did not reproduce the record"):
        ensure_checkpoint(forged, progress=False)
    assert not ckpt.exists() and len(list(tmp_path.joinpath("runs").iterdir())) == 1   # scratch folder gone
