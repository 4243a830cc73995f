"""One timed equilibrium training process: ``python snnlib/bench/equilibrium.py ARGS.json OUT.json``.

Run by path with ``PYTHONPATH`` naming the code tree to measure (the working tree, or the old
commit extracted by ``python -m snnlib.bench``), so the same measurement times both. It uses
only APIs both trees have (``load_config``, ``train.build``, ``make_optimizer``,
``set_determinism``, ``BACKWARDS``) and splits each training step into phases by wrapping them
at run time:

    simulate    the no-grad T-step simulation (``FeedbackSNN.simulate``)
    rate_map    the one differentiable evaluation of f (``FeedbackSNN.rate_map``)
    vjp         vector-Jacobian products of the backward solve (``problem.vjp``)
    solver      the rest of the backward solve (the solver's own algebra, or SPIDE's spiking backward)
    backprop    ``loss.backward()`` outside the solve (through f, the stem and the readout)
    optimizer   ``optimizer.step()``
    other       the remainder of ``train_step`` (stem, drive, readout, loss, zero_grad, reset)

ARGS: {"root" (where configs/runs is), "config", "set" (dotted overrides), "batch", "batch_size", "T", "warmup", "steps", "threads",
"seed"}; top-level config keys this tree does not know (e.g. documentation) are dropped. OUT: per-step wall seconds and phases, step statistics, the determinism setting in force,
the first step's loss and gradient norm (to check that both trees compute the same step).
Each step records its wall time and the CPU time of this process (all threads): on a machine
shared with other jobs the CPU time does not count the waits for a core.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":      # run by path: drop this folder from sys.path so nothing here shadows a module
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import snnlib  # noqa: E402
from snnlib.equilibrium import implicit as _implicit  # noqa: E402
from snnlib.experiments.config import DEFAULTS, load_yaml, resolve  # noqa: E402
from snnlib.train import build  # noqa: E402
from snnlib.train.setup import make_optimizer, set_determinism  # noqa: E402

PHASES = ("simulate", "rate_map", "vjp", "solver", "backprop", "optimizer", "other")


def nested(dotted: dict) -> dict:
    """{"model.channels": [4, 8]} -> {"model": {"channels": [4, 8]}}."""
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


class PhaseClock:
    """Seconds spent in named phases; ``wrap(name, fn)`` times every call of ``fn``."""

    def __init__(self):
        self.t = dict.fromkeys(("simulate", "rate_map", "vjp", "solve", "backward", "optimizer"), 0.0)

    def wrap(self, name, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.t[name] += time.perf_counter() - t0
        return timed

    def reset(self):
        for k in self.t:
            self.t[k] = 0.0

    def split(self, step_s: float) -> dict:
        """The phases of one step (see the module docstring); they sum to ``step_s``."""
        t = self.t
        out = {"simulate": t["simulate"], "rate_map": t["rate_map"], "vjp": t["vjp"],
               "solver": t["solve"] - t["vjp"], "backprop": t["backward"] - t["solve"], "optimizer": t["optimizer"]}
        out["other"] = step_s - sum(out.values())
        return out


def instrument(model, method, optimizer, clock: PhaseClock) -> None:
    """Wrap the phases of ``method.train_step`` (this process only)."""
    snn = model.snn
    snn.simulate = clock.wrap("simulate", snn.simulate)
    snn.rate_map = clock.wrap("rate_map", snn.rate_map)
    optimizer.step = clock.wrap("optimizer", optimizer.step)
    torch.Tensor.backward = clock.wrap("backward", torch.Tensor.backward)
    name = method.backward
    registry = _implicit.BACKWARDS
    if name in registry:
        solve = registry.pop(name)          # a dict in older trees, a snnlib.registry.Registry now

        def timed_solve(problem, **kw):
            problem.vjp = clock.wrap("vjp", problem.vjp)
            return solve(problem, **kw)

        timed = clock.wrap("solve", timed_solve)
        if isinstance(registry, dict):
            registry[name] = timed
        else:
            registry.register(name)(timed)


def run(args: dict) -> dict:
    root = Path(args["root"])
    threads = int(args.get("threads") or torch.get_num_threads())
    set_determinism(True, threads)          # as the trainer does (this tree's own setting)
    det = {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
           "fill_uninitialized_memory": bool(torch.utils.deterministic.fill_uninitialized_memory),
           "threads": torch.get_num_threads()}
    raw = load_yaml(root / "configs" / "runs" / f"{args['config']}.yaml")
    dropped = sorted(k for k in raw if k not in DEFAULTS)      # keys newer than this tree (documentation)
    cfg = resolve({k: v for k, v in raw.items() if k in DEFAULTS}, nested(args.get("set", {})))
    torch.manual_seed(args.get("seed", 0))
    model, method = build(cfg)
    optimizer = make_optimizer(model.parameters(), cfg["optim"])
    x, y = torch.load(args["batch"], weights_only=True)
    B = args["batch_size"]
    if len(y) < B:
        raise ValueError(f"the prepared batch has {len(y)} samples, {B} requested")
    x, y = x[:B], y[:B]
    clock = PhaseClock()
    instrument(model, method, optimizer, clock)
    first = None
    for i in range(args["warmup"] + args["steps"]):
        if i == args["warmup"]:
            timed, stats = [], []
        clock.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        st = method.train_step(x, y, optimizer)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if first is None:
            gn = [p.grad.norm() for p in model.parameters() if p.grad is not None]
            first = {"loss": float(st["loss"]), "grad_norm": float(torch.stack(gn).norm()) if gn else 0.0}
        if i >= args["warmup"]:
            timed.append({"wall_s": wall, "cpu_s": cpu, **clock.split(wall)})
            stats.append({k: v for k, v in (st.get("solver") or {}).items() if isinstance(v, (int, float))})
    med = {k: statistics.median(s[k] for s in timed) for k in timed[0]}
    return {"config": args["config"], "set": args.get("set", {}), "batch_size": B, "T": cfg["T"],
            "backward": method.backward, "code": str(Path(snnlib.__file__).resolve().parent), "steps": timed,
            "median": med, "solver": stats, "first_step": first, "determinism": det,
            "dropped_config_keys": dropped}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python snnlib/bench/equilibrium.py ARGS.json OUT.json", file=sys.stderr)
        return 2
    args = json.loads(Path(argv[0]).read_text())
    torch.manual_seed(args.get("seed", 0))
    t0 = time.perf_counter()
    result = run(args)
    result.update(seconds=time.perf_counter() - t0, torch=torch.__version__)
    Path(argv[1]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
