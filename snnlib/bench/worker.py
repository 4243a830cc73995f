"""One benchmark measurement per process: ``python -m snnlib.bench.worker TASK ARGS.json OUT.json``.

Tasks (ARGS is a JSON dict; the result is written to OUT as JSON):
    prepare      the batch every task uses (first Fashion-MNIST training images) -> batch.pt
    equality     logits and gradients of every framework against snnlib (float32), firing rates
    steps        training steps of one variant (BPTT framework, plain loop, ANN floor or OTTT) at one T:
                 the orchestrator alternates these processes in rounds
    throughput   BPTT steps of several variants at one T, alternated in rounds (A B C C B A ...)
    memory       peak RSS and saved bytes of one step of one variant at one T (fresh process)
    ottt         OTTT: equality, alternated throughput at one T, saved bytes per step
    ottt_check   OTTT: gradients of every variant against snnlib's (no timing)
    methods      saved-activation memory against T for every snnlib training method
A peer that fails to import is reported in the result (``unavailable``) and skipped.
"""
from __future__ import annotations

import sys
import time
import traceback

import torch

from ..data import get_dataset
from ..experiments.config import load_config
from ..methods import build_method
from ..metrics import FiringRateMonitor
from ..metrics.timing import alternate
from ..paths import ROOT
from ..studies.measure import memory_vs_T
from .equilibrium import nested
from . import stepper
from .nets import DIFFERENCES, build, loss_of
from .ottt import make_ottt
from .steps import make_trainer
from .stepper import _batch, _error, _spec, run_task


def _device(args) -> torch.device:
    dev = args.get("device", "auto")
    return torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else ("cpu" if dev == "auto" else dev))


# ----------------------------------------------------------------------------------- tasks
def prepare(args) -> dict:
    """The first ``batch_size`` Fashion-MNIST training images (normalised), else random images."""
    n = args["batch_size"]
    try:
        ds = get_dataset("fashion_mnist", "train")
        items = [ds[i] for i in range(n)]
        x = torch.stack([xi for xi, _ in items])
        y = torch.tensor([int(yi) for _, yi in items])
        source = "fashion_mnist train[:%d]" % n
    except Exception as e:  # noqa: BLE001 - any data problem falls back to random images
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(n, 1, 28, 28, generator=g) * 3 - 0.4, torch.randint(0, 10, (n,), generator=g)
        source = f"random images (Fashion-MNIST unavailable: {_error(e)})"
    x, y = x.float().contiguous(), y.long()
    torch.save((x, y), args["batch"])
    return {"source": source, "shape": list(x.shape), "x_min": float(x.min()), "x_max": float(x.max())}


def equality(args) -> dict:
    """Same seeded weights, same batch: max |logit difference| and gradient relative errors vs snnlib."""
    spec, T = _spec(args), args["T"]
    x, y = _batch(args)
    xs = x.unsqueeze(0).expand(T, *x.shape)

    def run(framework, **kw):
        net = build(framework, spec, args.get("seed", 0), **kw)
        out = net(xs)
        loss_of(out, y).backward()
        net.reset()
        return out.detach(), [p.grad.detach().clone() for p in net.canonical_params()]

    ref_out, ref_g = run("snnlib")
    rows, unavailable = [], {}
    probe = build("snnlib", spec, args.get("seed", 0))
    with torch.no_grad(), FiringRateMonitor(probe.net) as mon:
        probe(xs)
    comparisons = [("snnlib_torch", "snnlib", {"backend": "torch"}, None)]
    comparisons += [(fw, fw, {}, None) for fw in args["frameworks"] if fw != "snnlib"]
    comparisons += [("norse vs snnlib(detach_reset=False)", "norse", {}, {"detach_reset": False})]
    for label, fw, kw, ref_kw in comparisons:
        try:
            out, g = run(fw, **kw)
        except Exception as e:  # noqa: BLE001
            unavailable[label] = _error(e)
            continue
        r_out, r_g = (ref_out, ref_g) if ref_kw is None else run("snnlib", detach_reset=ref_kw["detach_reset"])
        rel = [float((a - b).norm() / b.norm().clamp_min(1e-30)) for a, b in zip(g, r_g)]
        rows.append({"variant": label, "max_abs_logit_diff": float((out - r_out).abs().max()),
                     "logits_equal": bool(torch.equal(out, r_out)), "grad_rel_err_max": max(rel),
                     "grad_rel_err": rel})
    return {"T": T, "batch_size": len(y), "rows": rows, "unavailable": unavailable,
            "firing_rates": mon.rates(), "differences": DIFFERENCES}


def _alternate(makers: dict, x, y, args, device) -> dict:
    """Build every variant (a failing one is reported, not timed), then ``metrics.timing.alternate``."""
    torch.manual_seed(args.get("seed", 0))
    trainers, unavailable = {}, {}
    for name, make in makers.items():
        try:
            trainers[name] = make()
        except Exception as e:  # noqa: BLE001
            unavailable[name] = _error(e)
    fns = {name: (lambda t=t: t.step(x, y)) for name, t in trainers.items()}
    res = alternate(fns, rounds=args["rounds"], reps=args["steps_per_round"], warmup=args["warmup"], device=device)
    return {**res, "unavailable": unavailable}


def throughput(args) -> dict:
    spec, T, device = _spec(args), args["T"], _device(args)
    x, y = _batch(args, device)

    def maker(v):
        return lambda: _on(make_trainer(v, spec, T, args.get("seed", 0)), device)

    res = _alternate({v: maker(v) for v in args["variants"]}, x, y, args, device)
    return {"T": T, "batch_size": len(y), **res}


def _on(trainer, device):
    if device.type != "cpu":
        trainer.net.to(device)
        trainer.opt = type(trainer.opt)(trainer.net.parameters(), **{"lr": trainer.opt.defaults["lr"]})
        if hasattr(trainer, "method"):
            trainer.method = build_method("bptt", trainer.net.net, T=trainer.T)
    return trainer


def ottt_check(args) -> dict:
    """OTTT variants at one T: loss and gradients of the initial weights against snnlib's."""
    return ottt({**args, "check": True, "time": False})


def ottt(args) -> dict:
    """OTTT variants at one T: gradients vs snnlib's ottt_a, alternated timing, saved bytes."""
    spec, T, device = _spec(args), args["T"], torch.device("cpu")
    x, y = _batch(args)
    out = {"T": T, "batch_size": len(y)}
    if args.get("check", True):
        grads, unavailable = {}, {}
        for v in args["variants"]:
            try:
                m = make_ottt(v, spec, T, args.get("seed", 0))
            except Exception as e:  # noqa: BLE001
                unavailable[v] = _error(e)
                continue
            m.opt = torch.optim.SGD(m.params(), lr=0.0)          # lr 0: gradients of the initial weights
            m.opt.zero_grad = lambda set_to_none=True: None      # keep every step's gradient (online too)
            for p in m.params():
                p.grad = None
            loss = m.step(x, y)
            grads[v] = (loss, [p.grad.detach().clone() for p in m.params()])
        base = {"a": "snnlib_ottt_a", "o": "snnlib_ottt_o"}
        rows = []
        for v, (loss, g) in grads.items():
            ref = base["o" if v.endswith(("_o", "_o_lean")) else "a"]
            if ref not in grads:
                continue
            rel = [float((a - b).norm() / b.norm().clamp_min(1e-30)) for a, b in zip(g, grads[ref][1])]
            rows.append({"variant": v, "reference": ref, "loss": loss, "loss_diff": abs(loss - grads[ref][0]),
                         "grad_rel_err_max": max(rel)})
        out["equality"] = {"rows": rows, "unavailable": unavailable}
    if not args.get("time", True):
        return out
    makers = {v: (lambda v=v: make_ottt(v, spec, T, args.get("seed", 0))) for v in args["variants"]}
    out.update(_alternate(makers, x, y, args, device))
    return out


def methods(args) -> dict:
    """``memory_vs_T`` of every configured snnlib method (saved activations, state and solver buffers)."""
    rows, failed = [], {}
    for method, entry in args["configs"].items():
        try:
            cfg = load_config(ROOT / "configs" / "runs" / f"{entry['config']}.yaml", nested(entry.get("set", {})))
            Ts = entry.get("Ts", args["Ts"])
            t0 = time.perf_counter()
            for r in memory_vs_T({method: cfg}, Ts, batch_size=args["batch_size"], seed=args.get("seed", 0)):
                rows.append({**r, "method": method, "config": entry["config"], "overrides": entry.get("set", {})})
            rows[-1]["seconds"] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            failed[method] = _error(e)
            traceback.print_exc()
    return {"batch_size": args["batch_size"], "rows": rows, "failed": failed}


TASKS = {"prepare": prepare, "equality": equality, "throughput": throughput, "ottt": ottt, "ottt_check": ottt_check,
         "methods": methods, **stepper.TASKS}


def main(argv=None) -> int:
    return run_task(TASKS, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
