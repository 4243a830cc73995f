"""Why the equilibrium steps are not faster: ``python -m snnlib.bench.limits [--threads 2]``.

Issue 13 asked for IDE F400 >= 4x and MPIS (cpu widths) >= 3x the step speed of commit 5adba91;
``make bench`` measured 2.88x and 1.90x (``figures/bench/equilibrium.md``). This script times the
two kernels that bound those steps, each written every way torch offers, in one process with the
ways alternated per round (median over ``--rounds``):

A. Broyden's products with its per-sample history (IDE F400: B = 128, n = 400; MPIS cpu widths:
   n = 2080), summed over the history sizes of one 30-iteration solve (memory 27):
     split      four one-row batched products per step, reading U and W twice each (snnlib)
     fused      the history interleaved ([B, 2 m, n], rows u_i, w_i), two two-row products per step
                reading it twice in all (the same numbers: the fused result is checked against split)
     elementwise  multiply and sum over n (5adba91's way)
B. The convolution transposes of one MPIS VJP (the calls the VJP makes, captured from the model at
   the cpu widths, batch 128, channels-last): ``conv_transpose2d`` (snnlib), autograd's own kernel
   (``aten.convolution_backward``, grad-input only), and, at stride 1, ``conv2d`` with the flipped
   kernel; every way is checked to compute the same tensor.

Writes ``<out>/limits.json`` and ``limits.md`` (default out: figures/bench). No timing is asserted
anywhere; the numbers are measurements of this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..equilibrium import implicit, transpose
from ..experiments.config import load_yaml, resolve
from ..metrics.timing import alternate
from ..paths import ROOT
from ..train import build
from ..train.setup import make_optimizer

IDE_SHAPE = {"label": "IDE F400", "B": 128, "n": 400}
MPIS_SHAPE = {"label": "MPIS cpu widths", "B": 128, "n": 2080}
MEMORY, ITERATIONS = 27, 30


def history_sizes(iterations: int = ITERATIONS, memory: int = MEMORY) -> list[int]:
    """History size k at each Broyden update of a solve that runs all ``iterations`` (no update
    follows the last evaluation; the memory is min(memory, iterations - 1))."""
    mem = min(memory, max(iterations - 1, 1))
    return [min(i, mem) for i in range(iterations - 1)]


def split_products(U, W, dz, g):
    """(w, y) = (dz + W^T (U dz), g + U^T (W g)) per sample, four one-row products. Shapes:
    U, W [B, k, n]; dz, g [B, 1, n]; returns two [B, 1, n]."""
    w = torch.baddbmm(dz, torch.bmm(dz, U.transpose(1, 2)), W)
    y = torch.baddbmm(g, torch.bmm(g, W.transpose(1, 2)), U)
    return w, y


def fused_products(H, X):
    """The same with the history interleaved: H [B, 2k, n] (rows u_0, w_0, u_1, ...), X [B, 2, n]
    = (g, dz); two two-row products. Returns (w, y) as [B, 1, n] each."""
    B, k2, _ = H.shape
    k = k2 // 2
    P = torch.bmm(X, H.transpose(1, 2)).view(B, 2, k, 2)        # [x, i, (u_i, w_i)]: x . u_i, x . w_i
    C = torch.zeros(B, 2, k, 2, dtype=H.dtype, device=H.device)
    C[:, 0, :, 0] = P[:, 0, :, 1]                                 # y: u_i weighted by w_i . g
    C[:, 1, :, 1] = P[:, 1, :, 0]                                 # w: w_i weighted by u_i . dz
    R = torch.baddbmm(X, C.view(B, 2, k2), H)
    return R[:, 1:2], R[:, 0:1]


def elementwise_products(U, W, dz, g):
    """The same by multiply-and-sum over n (no BLAS)."""
    w = dz + ((U * dz).sum(-1, keepdim=True) * W).sum(1, keepdim=True)
    y = g + ((W * g).sum(-1, keepdim=True) * U).sum(1, keepdim=True)
    return w, y


def _median_seconds(ways: dict, rounds: int, reps: int) -> dict:
    """Median over ``metrics.timing.alternate``'s rounds of each way's seconds per call."""
    res = alternate(ways, rounds=rounds, reps=reps, warmup=1)
    return {name: statistics.median(r[name]["wall_s"] for r in res["rounds"]) for name in ways}


def broyden_products(B: int, n: int, *, rounds: int = 5, reps: int = 3, sizes=None, seed: int = 0) -> dict:
    """Seconds of the history products summed over one solve's updates, per way; and the largest
    difference of the fused and the elementwise results from the split ones (float32)."""
    sizes = history_sizes() if sizes is None else sizes
    gen = torch.Generator().manual_seed(seed)
    kmax = max(sizes)
    U = torch.randn(B, kmax, n, generator=gen)
    W = torch.randn(B, kmax, n, generator=gen) / n
    H = torch.stack((U, W), 2).reshape(B, 2 * kmax, n)           # interleaved copy of the same history
    X = torch.randn(B, 2, n, generator=gen)
    g, dz = X[:, 0:1], X[:, 1:2]
    total = {"split": 0.0, "fused": 0.0, "elementwise": 0.0}
    err = 0.0
    for k in sorted(set(s for s in sizes if s > 0)):
        count = sizes.count(k)
        Uk, Wk, Hk = U[:, :k], W[:, :k], H[:, :2 * k]
        ways = {"split": lambda: split_products(Uk, Wk, dz, g), "fused": lambda: fused_products(Hk, X),
                "elementwise": lambda: elementwise_products(Uk, Wk, dz, g)}
        med = _median_seconds(ways, rounds, reps)
        for name in total:
            total[name] += count * med[name]
        ws, ys = split_products(Uk, Wk, dz, g)
        wf, yf = fused_products(Hk, X)
        we, ye = elementwise_products(Uk, Wk, dz, g)
        scale = float(torch.cat((ws, ys)).abs().max())
        err = max(err, float(torch.cat((ws - wf, ys - yf, ws - we, ys - ye)).abs().max()) / scale)
    return {"B": B, "n": n, "updates": len(sizes), "seconds": total, "max_rel_difference": err}


class _TransposeSpy:
    """Stands in for ``torch.nn.functional`` inside ``snnlib.equilibrium.transpose`` and records the
    (input, weight, options) of every ``conv_transpose2d`` call while ``on``."""

    def __init__(self):
        self.on, self.calls = False, []

    def __getattr__(self, name):
        return getattr(F, name)

    def conv_transpose2d(self, y, w, *args, **kwargs):
        if self.on:
            named = dict(zip(("bias", "stride", "padding", "output_padding", "groups", "dilation"), args))
            self.calls.append((y.detach().clone(), w.detach().clone(), {**named, **kwargs}))
        return F.conv_transpose2d(y, w, *args, **kwargs)


def mpis_transpose_calls(batch: int = 128, seed: int = 0) -> tuple[list, int]:
    """The conv transposes of one VJP of the MPIS model at notebook 01's cpu widths, and the number
    of VJPs in one training step (both captured from a real step on random input)."""
    cfg = resolve(load_yaml(ROOT / "configs" / "runs" / "mpis_fmnist.yaml"),
                  {"model": {"stem_channels": 8, "channels": [16, 16, 32], "bn_init": "default"}})
    torch.manual_seed(seed)
    model, method = build(cfg)
    opt = make_optimizer(model.parameters(), cfg["optim"])
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    spy, count = _TransposeSpy(), [0]
    solve = implicit.BACKWARDS.pop(method.backward)

    def counted(problem, **kw):
        inner = problem.vjp

        def vjp(v):
            spy.on = count[0] == 0          # the first VJP builds and applies every transpose once
            count[0] += 1
            try:
                return inner(v)
            finally:
                spy.on = False
        problem.vjp = vjp
        return solve(problem, **kw)

    implicit.BACKWARDS.register(method.backward)(counted)
    saved, transpose.F = transpose.F, spy
    try:
        method.train_step(x, y, opt)
    finally:
        transpose.F = saved
        implicit.BACKWARDS.pop(method.backward)
        implicit.BACKWARDS.register(method.backward)(solve)
    return spy.calls, count[0]


def _flops(y, w) -> float:
    """Multiply-adds x 2 of the transpose of a convolution with kernel ``w`` [Co, Ci, kh, kw] applied to
    y [B, Co, h, w]: every input entry meets Ci kh kw weights."""
    return 2.0 * y.numel() * w.shape[1] * w.shape[2] * w.shape[3]


def transpose_ways(y, w, kw) -> dict:
    """Every way to compute conv_transpose2d(y, w, **kw) (equal results; checked by the caller)."""
    stride, padding = kw.get("stride", 1), kw.get("padding", 0)
    out = F.conv_transpose2d(y, w, **kw)
    like = torch.empty(out.shape, dtype=out.dtype).contiguous(memory_format=torch.channels_last)
    st = [stride] * 2 if isinstance(stride, int) else list(stride)
    pd = [padding] * 2 if isinstance(padding, int) else list(padding)
    ways = {"conv_transpose2d": lambda: F.conv_transpose2d(y, w, **kw),
            "convolution_backward": lambda: torch.ops.aten.convolution_backward(
                y, like, w, None, st, pd, [1, 1], False, [0, 0], kw.get("groups", 1), [True, False, False])[0]}
    if st == [1, 1] and kw.get("groups", 1) == 1 and all(2 * p == k - 1 for p, k in zip(pd, w.shape[2:])):
        wf = w.flip(2, 3).transpose(0, 1).contiguous(memory_format=torch.channels_last)
        ways["conv2d, flipped kernel"] = lambda: F.conv2d(y, wf, padding=pd)
    return ways


def conv_transposes(calls, *, rounds: int = 5, reps: int = 2) -> dict:
    """Seconds per VJP of the captured transposes, per way (a way missing for a call falls back to
    conv_transpose2d for that call), each call's GFLOP/s, and the largest relative difference."""
    rows, totals, err = [], {}, 0.0
    for y, w, kw in calls:
        if kw.get("bias") is not None or tuple(kw.get("dilation", (1, 1))) not in ((1, 1), 1):
            raise ValueError("only bias-free, undilated transposes are timed (the VJPs have no other)")
        kw = {k: v for k, v in kw.items() if k not in ("bias", "dilation")}
        ways = transpose_ways(y, w, kw)
        ref = ways["conv_transpose2d"]()
        for fn in ways.values():
            err = max(err, float((fn() - ref).abs().max()) / (float(ref.abs().max()) + 1e-30))
        med = _median_seconds(ways, rounds, reps)
        fl = _flops(y, w)
        rows.append({"input": list(y.shape), "weight": list(w.shape), "stride": kw.get("stride"),
                     "seconds": med, "gflops": {k: fl / v / 1e9 for k, v in med.items()}})
        for name in ("conv_transpose2d", "convolution_backward", "conv2d, flipped kernel"):
            totals[name] = totals.get(name, 0.0) + med.get(name, med["conv_transpose2d"])
    best = sum(min(r["seconds"].values()) for r in rows)
    return {"calls": rows, "seconds_per_vjp": totals, "best_per_call_seconds_per_vjp": best,
            "max_rel_difference": err}


def load_equilibrium_bench(path: Path) -> dict | None:
    """Per case of the last ``make bench`` run in this checkout (``results/bench/equilibrium.json``):
    label and the median over rounds of each phase (ms) of the new and the old tree; None if absent."""
    if not path.exists():
        return None
    out = {}
    for case in json.loads(path.read_text()).get("cases", []):
        rounds = [r for r in case.get("rounds", []) if "new" in r and "old" in r]
        if not rounds:
            continue
        phases = {}
        for tree in ("new", "old"):
            keys = rounds[0][tree]["median"]
            phases[tree] = {("step" if k == "wall_s" else k): 1e3 * statistics.median(r[tree]["median"][k] for r in rounds)
                            for k in keys}
        nsteps = [st.get("backward_nstep") for r in rounds for st in r["new"].get("solver", [])]
        nsteps = [n for n in nsteps if n]
        out[case["case"]] = {"label": case["label"], "phases_new": phases["new"], "phases_old": phases["old"],
                             "vjps": statistics.median(nsteps) if nsteps else None,
                             "threads": case.get("threads")}
    return out


def render(res: dict) -> str:
    """``limits.md``: the tables and what they imply for issue 13's targets."""
    L = ["# What bounds the equilibrium steps (issue 13's speed targets)", "",
         f"`python -m snnlib.bench.limits` on {res['date']}, {res['threads']} thread(s), torch {res['torch']}, "
         f"load average {res['load']:.2f} at the start. Median of {res['rounds']} alternated rounds; "
         "every way computes the same numbers (largest relative difference in each table).", "",
         "## A. Broyden's products with the per-sample history (one 30-iteration solve, memory 27)", "",
         "| case | split: 4 one-row products (snnlib) | fused: 2 two-row products | elementwise (5adba91) | max rel. difference |",
         "|---|---|---|---|---|"]
    for c in res["broyden"]:
        s = c["seconds"]
        L.append(f"| {c['label']} (B = {c['B']}, n = {c['n']}) | {s['split'] * 1e3:.1f} ms | {s['fused'] * 1e3:.1f} ms "
                 f"| {s['elementwise'] * 1e3:.1f} ms | {c['max_rel_difference']:.1e} |")
    t = res["transposes"]
    L += ["", f"## B. The convolution transposes of one MPIS VJP (cpu widths, batch 128, channels-last; "
          f"{res['mpis_iterations']} VJPs per step)", "",
          "| input | weight | stride | conv_transpose2d (snnlib) | convolution_backward | conv2d, flipped kernel |",
          "|---|---|---|---|---|---|"]
    for r in t["calls"]:
        cells = []
        for name in ("conv_transpose2d", "convolution_backward", "conv2d, flipped kernel"):
            v = r["seconds"].get(name)
            cells.append("–" if v is None else f"{v * 1e3:.2f} ms ({r['gflops'][name]:.0f} GFLOP/s)")
        L.append(f"| {r['input']} | {r['weight']} | {r['stride']} | " + " | ".join(cells) + " |")
    tot = t["seconds_per_vjp"]
    L.append("| **per VJP** | | | " + " | ".join(f"**{tot[k] * 1e3:.1f} ms**" for k in
                                                  ("conv_transpose2d", "convolution_backward", "conv2d, flipped kernel")) + " |")
    L += ["", f"Largest relative difference between the ways: {t['max_rel_difference']:.1e}.", ""]
    L += ["## What this implies", ""] + [f"- {line}" for line in res["implications"]]
    return "\n".join(L) + "\n"


def implications(res: dict, bench: dict | None) -> list[str]:
    """Plain statements computed from the measurements (and the committed bench's phases)."""
    out = []
    ide = res["broyden"][0]
    s = ide["seconds"]
    best = min(s, key=s.get)
    out.append(f"IDE F400: of the ways to form Broyden's history products the fastest here is `{best}` "
               f"({s[best] * 1e3:.1f} ms a solve; split {s['split'] * 1e3:.1f} ms). Batched products on this CPU cost "
               "per row of the small operand, so fusing the four products into two two-row ones does not halve the time.")
    t = res["transposes"]
    best_vjp = t["best_per_call_seconds_per_vjp"]
    out.append(f"MPIS: the fastest way per call gives {best_vjp * 1e3:.1f} ms of transposes per VJP against "
               f"{t['seconds_per_vjp']['conv_transpose2d'] * 1e3:.1f} ms for conv_transpose2d; "
               f"x {res['mpis_iterations']} VJPs = {best_vjp * res['mpis_iterations'] * 1e3:.0f} ms a step "
               f"(at {res['threads']} thread(s)).")
    mp = (bench or {}).get("mpis_cpu")
    if mp and mp.get("vjps") and mp.get("threads") == res["threads"]:
        per = mp["phases_new"]["vjp"] / mp["vjps"]
        conv = t["seconds_per_vjp"]["conv_transpose2d"] * 1e3
        out.append(f"MPIS: in `make bench` a VJP took {per:.1f} ms ({mp['phases_new']['vjp']:.0f} ms / {mp['vjps']:.0f} VJPs, "
                   f"{mp['threads']} threads); its convolution transposes take {conv:.1f} ms of that here, so "
                   f"{max(per - conv, 0):.1f} ms ({max(1 - conv / per, 0):.0%}) is the rest of the VJP (gates, BatchNorm "
                   "transposes, layout copies): the part a faster VJP could still remove.")
    if not bench:
        out.append("The step budgets need a `make bench` run in this checkout (results/bench/equilibrium.json).")
    else:
        for key, target in (("ide_f400", 4.0), ("mpis_cpu", 3.0)):
            case = bench.get(key)
            if not case:
                continue
            new, old = case["phases_new"], case["phases_old"]
            budget = old["step"] / target
            rest = new["step"] - new["solver"]
            out.append(f"{case['label']}: {target:.0f}x needs a step of {budget:.0f} ms (5adba91: {old['step']:.0f} ms); "
                       f"without its solver algebra the step is still {rest:.0f} ms "
                       f"({'over' if rest > budget else 'under'} the budget), so the solver may take at most "
                       f"{max(budget - rest, 0):.0f} ms (it takes {new['solver']:.0f} ms)"
                       + (f"; the products alone (split, {res['threads']} thread(s)) take {s['split'] * 1e3:.0f} ms"
                          if key == "ide_f400" else "")
                       + ".")
    return out


def run(*, threads: int = 2, rounds: int = 5, out: Path | None = None, bench_json: Path | None = None) -> dict:
    torch.set_num_threads(threads)
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": threads, "rounds": rounds,
           "torch": torch.__version__, "load": os.getloadavg()[0], "broyden": []}
    with torch.no_grad():
        for case in (IDE_SHAPE, MPIS_SHAPE):
            res["broyden"].append({"label": case["label"], **broyden_products(case["B"], case["n"], rounds=rounds)})
    calls, iters = mpis_transpose_calls()
    with torch.no_grad():
        res["transposes"] = conv_transposes(calls, rounds=rounds)
    res["mpis_iterations"] = iters
    bench = load_equilibrium_bench(bench_json or ROOT / "results" / "bench" / "equilibrium.json")
    res["implications"] = implications(res, bench)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "limits.json").write_text(json.dumps(res, indent=1))
        (out / "limits.md").write_text(render(res))
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m snnlib.bench.limits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "figures" / "bench")
    a = p.parse_args(argv)
    res = run(threads=a.threads, rounds=a.rounds, out=a.out)
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
