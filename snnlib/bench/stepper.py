"""The light benchmark tasks, one per fresh process: ``python -m snnlib.bench.stepper TASK ARGS.json OUT.json``.

    steps    training steps of one variant (a BPTT framework, the plain loop, the ANN floor or an
             OTTT variant) at one T: the orchestrator alternates these processes in rounds
    memory   peak RSS and saved bytes of one step of one variant at one T

It imports torch, the benchmark networks and the training methods only (no studies, plots or
data loaders); ``snnlib.bench.worker`` runs the other tasks. ``python -m snnlib.bench`` forks the
timing processes from a server that has imported these once (``snnlib/bench/zygote.py``) and
starts every memory process as a new interpreter.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from ..metrics import SavedTensorTracker
from ..metrics.memory import peak_rss_bytes
from ..metrics.timing import current_rss_bytes, gflops_probe, timed
from .nets import spec_with
from .ottt import make_ottt
from .steps import make_trainer


def _spec(args) -> dict:
    spec = spec_with(**args.get("spec", {}))
    spec["channels"], spec["gains"] = tuple(spec["channels"]), tuple(spec["gains"])
    return spec


def _batch(args, device="cpu"):
    x, y = torch.load(args["batch"], weights_only=True)
    B = args["batch_size"]
    if len(y) < B:
        raise ValueError(f"the prepared batch has {len(y)} samples, {B} requested")
    return x[:B].to(device), y[:B].to(device)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()[:400]


def _make_step_variant(v: str, spec: dict, T: int, seed: int):
    if v.startswith(("snnlib_ottt", "spikingjelly_ottt")):
        return make_ottt(v, spec, T, seed)
    return make_trainer(v, spec, T, seed)


def steps(args) -> dict:
    """One variant at one T in this fresh process: ``warmup`` steps, then ``steps`` timed steps."""
    spec, T, v = _spec(args), args["T"], args["variant"]
    x, y = _batch(args)
    try:
        tr = _make_step_variant(v, spec, T, args.get("seed", 0))
    except Exception as e:  # noqa: BLE001 - a peer that does not build is reported, not timed
        return {"variant": v, "T": T, "unavailable": _error(e)}
    gflops = gflops_probe()
    for _ in range(args["warmup"]):
        tr.step(x, y)
    m = timed(lambda: tr.step(x, y), args["steps"])
    walls, cpus = [w for w, _ in m], [c for _, c in m]
    return {"variant": v, "T": T, "batch_size": len(y), "round": args.get("round"), "gflops": gflops,
            "wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "wall_all": walls}


def _saved_bytes(step, params) -> dict:
    with SavedTensorTracker(exclude=params) as tr:
        step()
    return tr.summary()


def memory(args) -> dict:
    """Fresh process: RSS before the step, peak RSS after one step and the bytes autograd saved in it."""
    spec, T, v = _spec(args), args["T"], args["variant"]
    x, y = _batch(args)
    if v.startswith(("snnlib_ottt", "spikingjelly_ottt")):
        tr = make_ottt(v, spec, T, args.get("seed", 0))
        params = tr.params()
    else:
        tr = make_trainer(v, spec, T, args.get("seed", 0))
        params = list(tr.net.parameters())
    rss_before = current_rss_bytes()
    peak_before = peak_rss_bytes()
    t0 = time.perf_counter()
    saved = _saved_bytes(lambda: tr.step(x, y), params)   # the tracker only keeps small bookkeeping
    step_s = time.perf_counter() - t0
    peak = peak_rss_bytes()
    return {"variant": v, "T": T, "batch_size": len(y), "rss_before_step": rss_before,
            "peak_rss_before_step": peak_before, "peak_rss": peak, "step_peak_over_baseline": peak - rss_before,
            "step_s_under_malloc_setting": step_s, **saved}


TASKS = {"steps": steps, "memory": memory}


def run_task(tasks: dict, argv) -> int:
    """``TASK ARGS.json OUT.json``: thread count and seed from ARGS, the result (with its time) to OUT."""
    if len(argv) != 3 or argv[0] not in tasks:
        print(f"usage: python -m snnlib.bench.worker {{{','.join(tasks)}}} ARGS.json OUT.json", file=sys.stderr)
        return 2
    task, args = argv[0], json.loads(Path(argv[1]).read_text())
    if args.get("threads"):
        torch.set_num_threads(int(args["threads"]))
    torch.manual_seed(args.get("seed", 0))
    t0 = time.perf_counter()
    result = tasks[task](args)
    result.update(task=task, seconds=time.perf_counter() - t0, torch=torch.__version__,
                  torch_threads=torch.get_num_threads(), pid=os.getpid())
    Path(argv[2]).write_text(json.dumps(result, indent=1))
    return 0


def main(argv=None) -> int:
    return run_task(TASKS, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
