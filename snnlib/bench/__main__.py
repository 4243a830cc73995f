"""``python -m snnlib.bench``: snnlib against SpikingJelly, snnTorch and Norse (``make bench``),
and the equilibrium methods (IDE, MPIS, SPIDE) against the library at an older commit.

Runs every measurement in its own fresh child process (this process never imports torch): timing
processes are forked from servers that imported torch and the bench once (``snnlib/bench/zygote.py``;
a new interpreter spends 5-10 s on those imports, more than most measured steps), the others
(memory, equality, methods) start a new interpreter (``snnlib.bench.stepper`` / ``worker``). Writes ``results/bench/*.json``, a table of ratios (``results/bench/summary.md``,
also printed) and figures under ``figures/bench/``.

    python -m snnlib.bench                       # the full suite (configs/bench/default.yaml)
    python -m snnlib.bench --config configs/bench/quick.yaml --out /tmp/bench   # seconds, for tests
    python -m snnlib.bench --only bptt memory    # some sections (report always runs)
    python -m snnlib.bench.profile               # where a T = 16 step's time goes -> figures/bench/profile.*

Section ``equilibrium``: training steps of IDE, MPIS and SPIDE timed in processes that alternate
the working tree and the library at ``equilibrium.old_commit`` (extracted with ``git archive``
into ``<results>/old-<commit>/``; skipped, with the reason, without git or that commit), each
step split into phases by ``snnlib/bench/equilibrium.py``. A case's ``set`` overrides the config
for both trees, ``set_new`` / ``set_old`` for one tree only (options the other tree lacks).
"""
from __future__ import annotations

import argparse
import json
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

from ..paths import ROOT, results_dir

SECTIONS = ("equality", "bptt", "memory", "ottt", "methods", "equilibrium")
EQ_SCRIPT = ROOT / "snnlib" / "bench" / "equilibrium.py"
LIGHT_TASKS = ("steps", "memory")      # snnlib.bench.stepper: torch and the benchmark networks only
ZYGOTE = ROOT / "snnlib" / "bench" / "zygote.py"
#: What a fork server imports once for the timing processes (each fresh process would spend seconds on
#: it): torch, torch._dynamo (optimizers import it on first construction), the bench modules and every
#: method family (``build_method`` imports them all). Peer frameworks are imported by each child, except
#: Norse (seconds of TorchScript at import), whose variants have a server of their own that preloads it.
LIGHT_PRELOAD = ("torch", "torch._dynamo", "snnlib.bench.stepper", "snnlib.methods.bptt", "snnlib.methods.online",
                 "snnlib.methods.implicit", "snnlib.methods.spide", "snnlib.methods.single_step")
PEER_PRELOAD = {"norse": ("norse.torch",)}
#: The same for ``snnlib/bench/equilibrium.py`` in either code tree (modules both trees have).
TREE_PRELOAD = ("torch", "torch._dynamo", "snnlib.equilibrium.implicit", "snnlib.experiments.config", "snnlib.train",
                "snnlib.train.setup")


class Zygote:
    """A ``snnlib/bench/zygote.py`` fork server: ``run(request)`` runs one request in a fresh forked
    child and returns its exit code (or "timeout"). Started on first use, restarted if it dies."""

    def __init__(self, preload, env: dict, log: Path):
        self.preload, self.env, self.log = list(preload), env, log
        self.proc = None

    def _start(self):
        with open(self.log, "a") as lf:
            self.proc = subprocess.Popen([sys.executable, str(ZYGOTE), *self.preload], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=lf, env=self.env, cwd=ROOT, text=True)
        ready = json.loads(self.proc.stdout.readline() or "{}")
        if not ready.get("ready"):
            self.close()
            raise RuntimeError(f"fork server did not start: {ready.get('error', 'see ' + str(self.log))}")

    def run(self, request: dict):
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            return "fork server died"
        return json.loads(line)["rc"]

    def close(self):
        if self.proc is not None:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait()
            self.proc = None


class Runner:
    """Starts worker processes, one per measurement, and keeps their JSON results."""

    def __init__(self, cfg: dict, out: Path, log=print):
        self.cfg, self.out, self.log = cfg, out, log
        self.work = out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.batch = self.work / "batch.pt"
        self.t0 = time.perf_counter()
        self._n = 0
        self._zygotes: dict = {}

    def zygote(self, key: str, preload, env: dict) -> Zygote:
        """The fork server named ``key`` (one per preload list, environment and code tree)."""
        if key not in self._zygotes:
            self._zygotes[key] = Zygote(preload, env, self.work / f"zygote_{key}.log")
        return self._zygotes[key]

    def close(self):
        for z in self._zygotes.values():
            z.close()

    def _env(self, memory: bool) -> dict:
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env.pop("MALLOC_MMAP_THRESHOLD_", None)        # never when timing
        if memory:
            env["MALLOC_MMAP_THRESHOLD_"] = str(self.cfg["memory"]["malloc_mmap_threshold"])
        return env

    def _files(self, task: str, args: dict):
        self._n += 1
        stem = self.work / f"{self._n:03d}_{task}"
        argf, outf, logf = stem.with_suffix(".args.json"), stem.with_suffix(".out.json"), stem.with_suffix(".log")
        base = {"batch": str(self.batch), "seed": self.cfg["seed"], "spec": self.cfg.get("spec", {}),
                "threads": self.cfg["threads"], "batch_size": self.cfg["batch_size"]}
        argf.write_text(json.dumps({**base, **args}))
        outf.unlink(missing_ok=True)
        return argf, outf, logf

    def _command(self, task, argf, outf):
        module = "snnlib.bench.stepper" if task in LIGHT_TASKS else "snnlib.bench.worker"
        return [sys.executable, "-m", module, task, str(argf), str(outf)]

    @staticmethod
    def _collect(proc_rc, outf: Path, logf: Path) -> dict:
        if proc_rc == 0 and outf.exists():
            return json.loads(outf.read_text())
        tail = logf.read_text()[-1500:] if logf.exists() else ""
        return {"error": f"worker exited with {proc_rc}", "log_tail": tail}

    def _timing_zygote(self, variant: str) -> Zygote:
        peer = next((p for p in PEER_PRELOAD if variant.startswith(p)), None)
        return self.zygote(f"timing_{peer or 'base'}", LIGHT_PRELOAD + PEER_PRELOAD.get(peer, ()), self._env(False))

    def run(self, task: str, args: dict, memory: bool = False) -> dict:
        """One measurement in a fresh process. Timing processes (task ``steps``) are forked from a
        server that has imported torch and the bench (``Zygote``); everything else, memory processes
        included, starts a new interpreter (a forked child's RSS would count library pages the
        parent mapped as they are touched, so its step peak would not compare with a fresh one's)."""
        argf, outf, logf = self._files(task, args)
        if task == "steps" and not memory:
            rc = self._timing_zygote(args["variant"]).run(
                {"call": "snnlib.bench.stepper:main", "argv": [task, str(argf), str(outf)], "log": str(logf),
                 "cwd": str(ROOT), "timeout_s": self.cfg["timeout_s"]})
        else:
            with open(logf, "w") as lf:
                try:
                    p = subprocess.run(self._command(task, argf, outf), env=self._env(memory), cwd=ROOT, stdout=lf,
                                       stderr=subprocess.STDOUT, timeout=self.cfg["timeout_s"])
                    rc = p.returncode
                except subprocess.TimeoutExpired:
                    rc = "timeout"
        res = self._collect(rc, outf, logf)
        self.log(f"  [{self.elapsed():6.0f} s] {task} {_label(args)}" + (f"  FAILED: {res['error']}" if "error" in res else ""))
        return res

    def run_tree(self, label: str, args: dict, code_root: Path) -> dict:
        """``snnlib/bench/equilibrium.py`` in a fresh process importing ``snnlib`` from ``code_root``."""
        argf, outf, logf = self._files(label, args)
        env = self._env(False)
        env["PYTHONPATH"] = str(code_root)
        z = self.zygote(f"tree_{Path(code_root).name}", TREE_PRELOAD, env)
        rc = z.run({"script": str(EQ_SCRIPT), "argv": [str(argf), str(outf)], "log": str(logf), "cwd": str(ROOT),
                    "timeout_s": self.cfg["timeout_s"]})
        res = self._collect(rc, outf, logf)
        took = f" {res['median']['wall_s']:.3f} s/step" if "median" in res else ""
        self.log(f"  [{self.elapsed():6.0f} s] {label}{took}" + (f"  FAILED: {res['error']}" if "error" in res else ""))
        return res

    def run_parallel(self, task: str, arg_list: list[dict], parallel: int, memory: bool = True) -> list[dict]:
        """Several fresh processes, ``parallel`` at a time (memory runs: 1 thread each)."""
        pending = list(enumerate(arg_list))
        running, results = [], [None] * len(arg_list)
        while pending or running:
            while pending and len(running) < parallel:
                i, a = pending.pop(0)
                argf, outf, logf = self._files(task, {**a, "threads": 1})
                lf = open(logf, "w")
                p = subprocess.Popen(self._command(task, argf, outf), env=self._env(memory), cwd=ROOT, stdout=lf,
                                     stderr=subprocess.STDOUT)
                running.append((i, a, p, lf, outf, logf, time.perf_counter()))
            time.sleep(0.2)
            still = []
            for i, a, p, lf, outf, logf, t in running:
                if p.poll() is None and time.perf_counter() - t > self.cfg["timeout_s"]:
                    p.kill()
                    p.wait()
                if p.poll() is None:
                    still.append((i, a, p, lf, outf, logf, t))
                    continue
                lf.close()
                results[i] = self._collect(p.returncode, outf, logf)
                self.log(f"  [{self.elapsed():6.0f} s] {task} {_label(a)}"
                         + (f"  FAILED: {results[i]['error']}" if "error" in results[i] else ""))
            running = still
        return results

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def _label(args: dict) -> str:
    keys = ("variant", "T", "round")
    return " ".join(f"{k}={args[k]}" for k in keys if k in args)


def old_tree(out: Path, commit: str) -> tuple[Path | None, str | None]:
    """The ``snnlib`` package at ``commit`` under ``out/old-<commit>/`` (extracted once, then reused):
    (folder for PYTHONPATH, None), or (None, why it is unavailable)."""
    dest = out / f"old-{commit}"
    if (dest / "snnlib" / "__init__.py").exists():
        return dest, None
    if shutil.which("git") is None:
        return None, "git is not installed"
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
                      capture_output=True).returncode != 0:
        return None, f"commit {commit} is not in the history of {ROOT} (a shallow clone or a source archive?)"
    p = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "snnlib"], capture_output=True)
    if p.returncode != 0:
        return None, f"git archive {commit} failed: {p.stderr.decode(errors='replace').strip()[:200]}"
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest, None


def equilibrium_section(r: Runner, cfg: dict, out: Path, log=print) -> dict:
    """Every case in alternated rounds: new, old | old, new | ... (one process per measurement)."""
    e = cfg["equilibrium"]
    old, reason = old_tree(out, str(e["old_commit"]))
    if reason:
        log(f"  equilibrium: the old implementation is skipped: {reason}")
    trees = {"new": ROOT} if old is None else {"new": ROOT, "old": old}
    cases = []
    for name, case in e["cases"].items():
        args = {"root": str(ROOT), "config": case["config"], "set": case.get("set", {}),
                "batch_size": case["batch_size"], "warmup": case.get("warmup", e["warmup"]),
                "steps": case.get("steps", e["steps"]), "threads": e.get("threads", cfg["threads"])}
        per_tree = {impl: {**args, "set": {**args["set"], **case.get(f"set_{impl}", {})}} for impl in trees}
        rounds = []
        for i in range(case.get("rounds", e["rounds"])):
            order = list(trees) if i % 2 == 0 else list(reversed(list(trees)))
            rounds.append({impl: r.run_tree(f"eq_{name}_{impl}", per_tree[impl], trees[impl]) for impl in order})
        cases.append({"case": name, "label": case.get("label", name), **args,
                      **{f"set_{impl}": case[f"set_{impl}"] for impl in trees if f"set_{impl}" in case},
                      "rounds": rounds})
    return {"old_commit": e["old_commit"], "old_code": str(old) if old else None, "old_skipped": reason,
            "cases": cases}


def alternated_processes(r: Runner, variants: list[str], Ts: list[int], sec: dict) -> list[dict]:
    """Every (variant, T) timed in its own fresh process, ``sec['rounds']`` times: round k runs the
    variants in order at each T (reversed on odd rounds, so a drift of the machine hits all alike)."""
    out = []
    for k in range(sec["rounds"]):
        for T in Ts:
            order = variants if k % 2 == 0 else variants[::-1]
            for v in order:
                res = r.run("steps", {"variant": v, "T": T, "round": k, "warmup": sec["warmup"],
                                      "steps": sec["steps_per_process"]})
                out.append({"variant": v, "T": T, "round": k, **res})
    return out


def load_bench_config(path) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    missing = [k for k in ("batch_size", "Ts", "seed", "threads", "bptt", "memory", "ottt", "methods", "equality",
                           "timeout_s") if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    return cfg


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def run_suite(cfg: dict, out: Path, only=None, log=print) -> dict:
    """Run the sections of ``cfg`` (all, or ``only``) and write their JSON under ``out``."""
    only = set(only or SECTIONS)
    r = Runner(cfg, out, log)
    Ts = cfg["Ts"]
    log(f"snnlib.bench: {', '.join(s for s in SECTIONS if s in only)}; T in {Ts}, batch {cfg['batch_size']}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    eq_sizes = [c["batch_size"] for c in cfg.get("equilibrium", {}).get("cases", {}).values()]
    prep = r.run("prepare", {"batch_size": max(cfg["batch_size"], cfg["equality"]["batch_size"],
                                               cfg["methods"]["batch_size"], *eq_sizes)})
    write_json(out / "batch.json", prep)
    if "equality" in only:
        e = cfg["equality"]
        frameworks = [v for v in cfg["bptt"]["variants"] if v not in ("snnlib_torch", "ann_relu")]
        write_json(out / "equality.json", r.run("equality", {"T": e["T"], "batch_size": e["batch_size"],
                                                             "frameworks": frameworks}))
    if "bptt" in only:
        b = cfg["bptt"]
        write_json(out / "bptt_steps.json", alternated_processes(r, b["variants"], Ts, b))
    if "memory" in only:
        m = cfg["memory"]
        jobs = [{"variant": v, "T": T} for T in Ts for v in m["variants"]]
        jobs.append({"variant": "ann_relu", "T": 1})
        write_json(out / "bptt_memory.json", r.run_parallel("memory", jobs, m["parallel"]))
    if "ottt" in only:
        o = cfg["ottt"]
        write_json(out / "ottt_check.json", r.run("ottt_check", {"T": Ts[0], "variants": o["variants"]}))
        write_json(out / "ottt_steps.json", alternated_processes(r, o["variants"], Ts, o))
        jobs = [{"variant": v, "T": T} for T in Ts for v in o["memory_variants"]]
        write_json(out / "ottt_memory.json", r.run_parallel("memory", jobs, cfg["memory"]["parallel"]))
    if "methods" in only:
        mm = cfg["methods"]
        write_json(out / "methods_memory.json",
                   r.run("methods", {"batch_size": mm["batch_size"], "Ts": mm["Ts"], "configs": mm["configs"],
                                     "threads": 1}))
    if "equilibrium" in only and "equilibrium" in cfg:
        write_json(out / "equilibrium.json", equilibrium_section(r, cfg, out, log))
    r.close()
    return {"seconds": r.elapsed()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m snnlib.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "bench" / "default.yaml"))
    p.add_argument("--out", default=None, help="results folder (default: results/bench)")
    p.add_argument("--figures", default=None, help="figures folder (default: figures/bench)")
    p.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    p.add_argument("--report-only", action="store_true", help="redo the table and figures from existing results")
    a = p.parse_args(argv)
    cfg = load_bench_config(a.config)
    out = Path(a.out) if a.out else results_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not a.report_only:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        load_start = os.getloadavg()
        run_suite(cfg, out, a.only)
        write_json(out / "run.json", {"started": started, "seconds": time.perf_counter() - t0,
                                      "load_average_start": load_start, "load_average_end": os.getloadavg(),
                                      "cpus": os.cpu_count(), "config": cfg, "sections": a.only or list(SECTIONS)})
    cmd = [sys.executable, "-m", "snnlib.bench.report", str(out)] + ([a.figures] if a.figures else [])
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"\nsnnlib.bench finished in {time.perf_counter() - t0:.0f} s (load average now "
          f"{os.getloadavg()[0]:.1f}); results in {out}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
