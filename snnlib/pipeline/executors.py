"""Where the runs of ``run_many`` train: in this process, in local processes, or on a Slurm cluster.

``SNNLIB_EXECUTOR`` (or ``make reproduce EXECUTOR=...``) picks one of ``EXECUTORS``:

- ``inline`` (default): one run after the other in the calling process.
- ``local``: ``python -m snnlib train`` subprocesses, ``parallel`` at a time (each on its own GPUs).
- ``slurm``: one Slurm job per run through ``submitit`` (imported only by the submitit executors).
- ``submitit-local``: ``submitit.LocalExecutor``, the Slurm code path on this machine (tests).

Cluster settings (``ClusterSettings``) come from the YAML file named by ``SNNLIB_CLUSTER``,
then ``SNNLIB_*`` variables (``ENV``). A run with ``gpus_per_run`` > 1 trains under torchrun
on its allocation. Every submission is recorded in ``<run_dir>/job.json`` (executor, job id,
state, every submission), so a resumed ``run_many`` re-attaches to jobs still pending or
running, resubmits jobs that ended without a result (the trainer resumes from the
checkpoint), and never submits a run whose ``result.json`` carries the run's config hash.
(A kill between a submission and its record, milliseconds, can submit a run twice; both
jobs compute the same deterministic run and write it atomically.)
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..paths import ROOT
from ..experiments.config import ConfigError, config_hash, load_config, load_yaml, suggest
from ..experiments.io import jsonable, read_json, write_json, write_text

EXECUTORS = ("inline", "local", "slurm", "submitit-local")
RECORD = "job.json"
CONFIG = "config.yaml"

#: setting -> environment variable (overrides the SNNLIB_CLUSTER YAML file)
ENV = {
    "partition": "SNNLIB_SLURM_PARTITION",
    "time_min": "SNNLIB_SLURM_TIME",
    "gpus_per_run": "SNNLIB_GPUS_PER_RUN",
    "cpus_per_run": "SNNLIB_CPUS_PER_RUN",
    "mem_gb": "SNNLIB_MEM_GB",
    "account": "SNNLIB_SLURM_ACCOUNT",
    "parallel": "SNNLIB_PARALLEL",
}


@dataclass(frozen=True)
class ClusterSettings:
    """How runs are submitted. ``time_min`` also bounds a ``submitit-local`` job."""
    partition: str | None = None       # Slurm partition (None: the cluster's default)
    time_min: int = 240                # wall-time limit of one job, minutes
    gpus_per_run: int = 0              # GPUs per run; > 1 launches the run with torchrun
    cpus_per_run: int | None = None    # CPU cores per run (Slurm cpus-per-task)
    mem_gb: float | None = None        # memory per run (Slurm --mem)
    account: str | None = None         # Slurm account
    parallel: int | None = None        # local: runs at once (default: GPUs // gpus_per_run, else 1)
    setup: tuple = ()                  # shell lines run before each Slurm job (module load ...)
    retries: int = 1                   # resubmissions of a job that ends without a result (it resumes)
    poll_s: float = 5.0                # seconds between state checks

    def __post_init__(self):
        def check(name, ok, what):
            v = getattr(self, name)
            if v is not None and not ok(v):
                raise ConfigError(f"cluster setting {name} must be {what}, got {v!r}")
        whole = lambda lo: (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo)  # noqa: E731
        check("partition", lambda v: isinstance(v, str) and v, "a partition name")
        check("account", lambda v: isinstance(v, str) and v, "an account name")
        check("time_min", whole(1), "a positive number of minutes")
        check("gpus_per_run", whole(0), "a non-negative integer")
        check("cpus_per_run", whole(1), "a positive integer")
        check("parallel", whole(1), "a positive integer")
        check("retries", whole(0), "a non-negative integer")
        check("mem_gb", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
              "a positive number")
        check("poll_s", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
              "a positive number of seconds")
        if not isinstance(self.setup, (list, tuple)) or not all(isinstance(s, str) for s in self.setup):
            raise ConfigError(f"cluster setting setup must be a list of shell lines, got {self.setup!r}")
        object.__setattr__(self, "setup", tuple(self.setup))


def executor_name(name: str | None = None) -> str:
    """``name``, else ``$SNNLIB_EXECUTOR``, else 'inline'; a clear error when unknown."""
    name = name if name is not None else os.environ.get("SNNLIB_EXECUTOR", "")
    name = name.strip() or "inline"
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r} (SNNLIB_EXECUTOR).{suggest(name, EXECUTORS)} "
                          f"Choose one of {', '.join(EXECUTORS)}")
    return name


def load_settings(path=None, env=None) -> ClusterSettings:
    """Settings from the YAML file ``path`` (default ``$SNNLIB_CLUSTER``), then the ``ENV`` variables."""
    env = os.environ if env is None else env
    path = path or env.get("SNNLIB_CLUSTER")
    given = dict(load_yaml(path)) if path else {}
    names = [f.name for f in dataclasses.fields(ClusterSettings)]
    for k in given:
        if k not in names:
            raise ConfigError(f"unknown cluster setting {k!r} in {path}.{suggest(k, names)} "
                              f"Valid settings: {', '.join(names)}")
    for key, var in ENV.items():
        if env.get(var, "").strip():
            given[key] = env[var].strip() if key in ("partition", "account") else yaml.safe_load(env[var])
    return ClusterSettings(**given)


def train_command(cfg_path, run_dir, nproc: int = 1, python: str | None = None) -> list[str]:
    """The command that trains one run: ``python -m snnlib train``, under torchrun when ``nproc`` > 1."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive number of processes, got {nproc!r}")
    python = python or sys.executable
    args = ["-m", "snnlib", "train", str(cfg_path), "--quiet", "--run-dir", str(run_dir)]
    if nproc == 1:
        return [python, *args]
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def slurm_parameters(settings: ClusterSettings, job_name: str = "snnlib") -> dict:
    """``SlurmExecutor.update_parameters`` keywords of one run: one task holding all its GPUs."""
    p = {"job_name": job_name, "time": settings.time_min, "nodes": 1, "ntasks_per_node": 1}
    if settings.partition:
        p["partition"] = settings.partition
    if settings.account:
        p["account"] = settings.account
    if settings.gpus_per_run:
        p["gpus_per_node"] = settings.gpus_per_run
    if settings.cpus_per_run:
        p["cpus_per_task"] = settings.cpus_per_run
    if settings.mem_gb:
        p["mem"] = f"{int(settings.mem_gb * 1024)}M"
    if settings.setup:
        p["setup"] = list(settings.setup)
    return p


class TrainJob:
    """What a submitit job runs: ``python -m snnlib train`` on one run (under torchrun when it has several
    GPUs) in a child process; requeued on preemption or timeout (the run resumes from its checkpoint)."""

    def __call__(self, cfg_path: str, run_dir: str, nproc: int = 1) -> str:
        cmd = train_command(cfg_path, run_dir, nproc)
        code = subprocess.run(cmd).returncode
        if code:
            raise RuntimeError(f"{' '.join(cmd)} exited with code {code} (message above)")
        return str(run_dir)

    def checkpoint(self, *args, **kwargs):
        import submitit   # optional dependency, needed only inside submitit jobs
        return submitit.helpers.DelayedSubmission(TrainJob(), *args, **kwargs)


# ---- records and process checks -------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_record(run_dir) -> dict | None:
    """The job record of a run folder, or None."""
    p = Path(run_dir) / RECORD
    return read_json(p) if p.exists() else None


def submissions(run_dir) -> int:
    """How many times the run in ``run_dir`` was submitted to an executor."""
    rec = read_record(run_dir)
    return len(rec["submissions"]) if rec else 0


def _update_record(run_dir, **fields) -> dict:
    rec = read_record(run_dir) or {"submissions": []}
    rec.update(fields)
    rec["updated_at"] = _now()
    write_json(Path(run_dir) / RECORD, rec)
    return rec


def _proc_start(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot), None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _pid_alive(pid: int, start: str | None) -> bool:
    """Process ``pid`` runs and is the one recorded (same start time), not a reused pid."""
    if Path("/proc").is_dir():
        now = _proc_start(pid)
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- backends ------------------------------------------------------------------------------

class _Backend:
    """Submits one run and reports the state of a recorded job: a scheduler state, or None once it ended."""
    name = ""
    capacity: int | None = None   # runs at once; None: the scheduler decides

    def __init__(self, settings: ClusterSettings):
        self.settings = settings
        self.live: dict = {}   # job id -> the Popen or submitit Job behind it, when this process has one

    def submit(self, cfg_path: Path, run_dir: Path, running: list[dict]) -> dict:
        raise NotImplementedError

    def state(self, rec: dict) -> str | None:
        proc = self.live.get(rec["job_id"])
        if proc is not None:
            return "RUNNING" if proc.poll() is None else None
        if not rec.get("pid"):
            return None
        if rec.get("host", socket.gethostname()) != socket.gethostname():
            raise RuntimeError(f"{rec.get('run_dir')}: its {rec.get('executor')} job {rec['job_id']} runs on host "
                               f"{rec['host']}: resume there, or delete {RECORD} if that job is gone")
        return "RUNNING" if _pid_alive(int(rec["pid"]), rec.get("pid_start")) else None

    def release(self, rec: dict) -> None:
        self.live.pop(rec.get("job_id"), None)


class _LocalBackend(_Backend):
    name = "local"

    def __init__(self, settings: ClusterSettings):
        super().__init__(settings)
        g, n_gpus = settings.gpus_per_run, torch.cuda.device_count()
        if g > n_gpus:
            raise ConfigError(f"gpus_per_run={g} but this machine shows {n_gpus} GPUs")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        ids = [d.strip() for d in visible.split(",")][:n_gpus] if visible else [str(d) for d in range(n_gpus)]
        self.slots = [ids[i * g:(i + 1) * g] for i in range(n_gpus // g)] if g else []
        self.capacity = settings.parallel or max(len(self.slots), 1)
        if self.slots:
            self.capacity = min(self.capacity, len(self.slots))

    def submit(self, cfg_path, run_dir, running):
        env, devices = dict(os.environ), None
        if self.slots:
            busy = {d for rec in running for d in (rec.get("devices") or [])}
            devices = next(s for s in self.slots if not busy & set(s))
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        log = Path(run_dir) / "job.log"
        cmd = train_command(cfg_path, run_dir, max(self.settings.gpus_per_run, 1))
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.live[str(proc.pid)] = proc
        return {"job_id": str(proc.pid), "pid": proc.pid, "pid_start": _proc_start(proc.pid),
                "devices": devices, "log": str(log), "command": cmd}


class _SubmititBackend(_Backend):
    def __init__(self, settings: ClusterSettings, name: str):
        super().__init__(settings)
        self.name = name
        import submitit   # optional heavy dependency: only these executors need it
        self.submitit = submitit
        if name == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("SNNLIB_EXECUTOR=slurm but there is no 'sbatch' here: run on a Slurm login node")
        self.capacity = settings.parallel if name == "submitit-local" else None

    def _executor(self, folder: Path, label: str):
        s = self.settings
        if self.name == "slurm":
            ex = self.submitit.SlurmExecutor(folder=folder)
            ex.update_parameters(**slurm_parameters(s, label))
        else:
            ex = self.submitit.LocalExecutor(folder=folder)
            ex.update_parameters(timeout_min=s.time_min, gpus_per_node=s.gpus_per_run)
        return ex

    def submit(self, cfg_path, run_dir, running):
        folder = Path(run_dir) / "submitit"
        nproc = max(self.settings.gpus_per_run, 1)
        ex = self._executor(folder, f"snnlib-{Path(run_dir).name}")
        job = ex.submit(TrainJob(), str(cfg_path), str(run_dir), nproc)
        self.live[str(job.job_id)] = job
        rec = {"job_id": str(job.job_id), "log": str(job.paths.stderr), "folder": str(folder),
               "command": train_command(cfg_path, run_dir, nproc)}
        if self.name == "submitit-local":   # the job id is the pid of submitit's controller process
            rec.update(pid=int(job.job_id), pid_start=_proc_start(int(job.job_id)))
        return rec

    def state(self, rec: dict) -> str | None:
        if rec.get("executor") != "slurm":
            job = self.live.get(rec["job_id"])
            if job is not None:
                return None if job.done() else "RUNNING"
            return super().state(rec)
        if rec["job_id"] not in self.live:
            self.live[rec["job_id"]] = self.submitit.SlurmJob(folder=rec["folder"], job_id=rec["job_id"])
        job = self.live[rec["job_id"]]
        return None if job.done() else job.state


def make_backend(name: str, settings: ClusterSettings) -> _Backend:
    name = executor_name(name)
    if name == "inline":
        raise ValueError("the inline executor trains in this process and has no backend")
    if name == "local":
        return _LocalBackend(settings)
    return _SubmititBackend(settings, name)


def _checker(rec: dict, backend: _Backend, settings: ClusterSettings, cache: dict) -> _Backend:
    """The backend that can check a recorded job: the record's own executor decides."""
    if rec.get("executor") != "slurm" or backend.name == "slurm":
        return backend   # local kinds: a pid check, the same from any executor on this machine
    if "slurm" not in cache:
        if shutil.which("sacct") is None:
            raise RuntimeError(f"{rec.get('run_dir')}: Slurm job {rec['job_id']} is recorded there but "
                               "there is no 'sacct' to check it: resume on the cluster with "
                               f"SNNLIB_EXECUTOR=slurm, or delete {RECORD} if that job is gone")
        cache["slurm"] = _SubmititBackend(settings, "slurm")
    return cache["slurm"]


# ---- the scheduler ---------------------------------------------------------------------------

def _result(cfg: dict, run_dir: Path) -> str:
    """'done' when result.json belongs to this config and code version, 'stale' when it does not, else ''."""
    p = run_dir / "result.json"
    if not p.exists():
        return ""
    return "done" if read_json(p).get("config_hash") == config_hash(cfg) else "stale"


def _stale_error(cfg: dict, run_dir: Path) -> str:
    return (f"{run_dir / 'result.json'} does not carry config hash {config_hash(cfg)}: the library code changed "
            "while the run was queued (run again: changed code gives new run folders), or the folder was copied")


def _write_config(cfg: dict, run_dir: Path) -> Path:
    """The resolved config as YAML for ``python -m snnlib train``; checked to load back identically."""
    path = run_dir / CONFIG
    write_text(path, yaml.safe_dump(jsonable(cfg), sort_keys=False))
    if config_hash(load_config(path)) != config_hash(cfg):
        raise RuntimeError(f"{path} does not load back to the same config (a value YAML cannot carry?)")
    return path


ENDED = ("FINISHED", "FAILED")


def submit_runs(tasks: list[tuple[dict, Path]], name: str, settings: ClusterSettings | None = None, *,
                progress: bool = True, label: str = "runs") -> None:
    """Bring every ``(resolved cfg, run_dir)`` to a finished ``result.json`` through executor ``name``.

    Finished runs are skipped, recorded live jobs re-attached, the rest submitted (at most
    ``capacity`` at once); a job that ends without a result is resubmitted ``settings.retries``
    times. Raises once every job has ended if any run is still without a result.
    """
    settings = settings or load_settings()
    backend, cache = make_backend(name, settings), {}

    def say(i, msg):
        if progress:
            print(f"[{label} {i + 1}/{len(tasks)}] {tasks[i][1].name}: {msg}", file=sys.stderr, flush=True)

    def update(i, **fields):
        rec = _update_record(tasks[i][1], **fields)
        rec["run_dir"] = str(tasks[i][1])
        return rec

    queue, running, failed, retried = [], [], [], [0] * len(tasks)
    for i, (cfg, rd) in enumerate(tasks):
        got = _result(cfg, rd)
        if got == "stale":
            raise RuntimeError(_stale_error(cfg, rd) + "; delete that folder to rerun it")
        rec = read_record(rd)
        if got:
            if rec and rec.get("state") not in ENDED:     # it finished while nobody was watching
                update(i, state="FINISHED")
            say(i, "cached")
            continue
        if rec and rec.get("job_id") and rec.get("state") not in ENDED:
            rec["run_dir"] = str(rd)
            if _checker(rec, backend, settings, cache).state(rec) is not None:
                say(i, f"re-attached to {rec['executor']} job {rec['job_id']}")
                running.append((i, rec))
                continue
        queue.append(i)

    while queue or running:
        while queue and (backend.capacity is None or len(running) < backend.capacity):
            i = queue.pop(0)
            cfg, rd = tasks[i]
            rd.mkdir(parents=True, exist_ok=True)
            info = backend.submit(_write_config(cfg, rd), rd, [r for _, r in running])
            prev = (read_record(rd) or {}).get("submissions", [])
            write_json(rd / RECORD, {"executor": backend.name, "state": "SUBMITTED", "config_hash": config_hash(cfg),
                                     "host": socket.gethostname(), **info, "updated_at": _now(),
                                     "submissions": prev + [{"executor": backend.name, "job_id": info["job_id"],
                                                             "at": _now()}]})
            say(i, f"submitted to {backend.name} as job {info['job_id']}")
            running.append((i, {**read_record(rd), "run_dir": str(rd)}))
        still = []
        for i, rec in running:
            cfg, rd = tasks[i]
            checker = _checker(rec, backend, settings, cache)
            state, got = checker.state(rec), _result(cfg, rd)
            if state is not None and not got:
                if state != rec["state"]:
                    rec = update(i, state=state)
                still.append((i, rec))
                continue
            checker.release(rec)
            if got == "done":
                update(i, state="FINISHED")
                say(i, "finished")
            elif not got and retried[i] < settings.retries:
                retried[i] += 1
                update(i, state="FAILED")
                say(i, f"ended without a result (see {rec.get('log')}); resubmitting, it resumes from its checkpoint")
                queue.append(i)
            else:
                update(i, state="FAILED")
                why = _stale_error(cfg, rd) if got == "stale" else f"it ended without a result, see {rec.get('log')}"
                say(i, f"FAILED: {why}")
                failed.append(f"{rd}: {why}")
        running = still
        if running or queue:
            time.sleep(settings.poll_s)
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed; run again to resume them from their checkpoints:\n  "
                           + "\n  ".join(failed))


__all__ = ["EXECUTORS", "ENV", "ClusterSettings", "executor_name", "load_settings", "train_command",
           "slurm_parameters", "TrainJob", "read_record", "submissions", "submit_runs", "make_backend"]
