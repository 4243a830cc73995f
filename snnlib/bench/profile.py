"""Where a BPTT training step's time goes: ``python -m snnlib.bench.profile [--T 16] [--variants ...]``.

``--steps`` steps of each variant (after ``--warmup`` steps), each under ``torch.profiler``, split into the step's
phases (forward, backward, optimizer: ``record_function`` ranges around the same calls every
trainer makes) and, within forward and backward, into the layers' operators (convolution, pooling,
linear, matmul and their backward) and everything else (the neurons, the loss, copies, autograd
bookkeeping). Self CPU time of each operator on the calling thread, so the parts add up to the step; the
median of each part over the steps.
Each variant runs in its own fresh process; the batch, weights and threads are the bench's.

Writes ``<out>/profile.json``, ``profile.md`` (a table, ms per step) and ``profile.png``
(default out: figures/bench).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ..experiments.plots import style
from ..paths import ROOT
from ..studies.plotting import legend_below
from .nets import loss_of, spec_with
from .report import LABELS
from .steps import make_trainer

PHASES = ("forward", "backward", "optimizer")
PARTS = ("forward: layers", "forward: neurons and the rest", "backward: layers", "backward: neurons and the rest",
         "optimizer")
LAYER_OPS = ("conv", "pool", "addmm", "aten::mm", "aten::linear", "aten::matmul", "aten::bmm")
DEFAULT_VARIANTS = ("snnlib", "plain_loop", "spikingjelly_single", "snntorch", "snnlib_whole")   # the peers within 5% of the fastest at T = 16
NAMES = {**LABELS, "snnlib": "snnlib (time chunks, default)", "snnlib_whole": "snnlib (whole sequence per layer)"}


def is_layer_op(name: str) -> bool:
    """Convolution, pooling, linear and matrix products (forward or backward)."""
    return any(k in name for k in LAYER_OPS)


def split_step(events) -> dict:
    """{part: ms} from profiler events: each operator's self time, by its phase range and kind."""
    parts = dict.fromkeys(PARTS, 0.0)
    for e in events:
        phase, p = None, e.cpu_parent
        while p is not None:
            if p.name in PHASES:
                phase = p.name
            p = p.cpu_parent
        if phase is None or e.name in PHASES:
            continue
        if phase == "optimizer":
            part = "optimizer"
        else:
            part = f"{phase}: " + ("layers" if is_layer_op(e.name) else "neurons and the rest")
        parts[part] += e.self_cpu_time_total / 1e3
    return parts


def profiled_step(trainer, x, y) -> None:
    """zero_grad, forward over T and loss, backward, update, reset: every trainer's step, in ranges."""
    trainer.opt.zero_grad(set_to_none=True)
    with record_function("forward"):
        loss = loss_of(trainer.net(x.unsqueeze(0).expand(trainer.T, *x.shape)), y)
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer"):
        trainer.opt.step()
    trainer.net.reset()


def profile_variant(variant: str, T: int, batch, threads: int, warmup: int, steps: int = 3, seed: int = 0) -> dict:
    """``steps`` profiled steps after ``warmup``; each part's median over them (ms)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x, y = batch
    spec = spec_with()
    spec["channels"], spec["gains"] = tuple(spec["channels"]), tuple(spec["gains"])
    trainer = make_trainer(variant, spec, T, seed)
    for _ in range(warmup):
        profiled_step(trainer, x, y)
    runs, top = [], None
    for _ in range(steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            profiled_step(trainer, x, y)
        events = prof.events()
        runs.append(({e.name: e.cpu_time_total / 1e3 for e in events if e.name in PHASES}, split_step(events)))
        top = top or [{"name": a.key, "self_ms": a.self_cpu_time_total / 1e3, "calls": a.count}
                      for a in sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[:12]]
    med = statistics.median
    return {"variant": variant, "T": T, "batch_size": len(y), "threads": threads, "steps": steps,
            "phases_ms": {k: med(r[0].get(k, 0.0) for r in runs) for k in PHASES},
            "parts_ms": {k: med(r[1][k] for r in runs) for k in PARTS},
            "parts_ms_all": [r[1] for r in runs], "top_ops_first_step": top}


def _batch(batch_size: int):
    path = ROOT / "results" / "bench" / "work" / "batch.pt"
    if path.exists():
        x, y = torch.load(path, weights_only=True)
        if len(y) >= batch_size:
            return x[:batch_size], y[:batch_size]
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch_size, 1, 28, 28, generator=g) * 3 - 0.4, torch.randint(0, 10, (batch_size,), generator=g)


def markdown(rows: list[dict]) -> str:
    T, B = rows[0]["T"], rows[0]["batch_size"]
    lines = [f"Where a BPTT training step's time goes at T = {T}, batch {B}, {rows[0]['threads']} threads "
             f"(`python -m snnlib.bench.profile`; torch.profiler, {rows[0]['steps']} steps after warm-up, each "
             "implementation in its own process; ms of operator self time, median over the steps of each part; layers = convolution, pooling, linear and their "
             "backward; 'neurons and the rest' = every other operator: the neurons, the loss, copies).", "",
             "| implementation | " + " | ".join(PARTS) + " | step |", "|---|" + "---|" * (len(PARTS) + 1)]
    for r in rows:
        total = sum(r["parts_ms"].values())
        lines.append(f"| {NAMES.get(r['variant'], r['variant'])} | " + " | ".join(f"{r['parts_ms'][p]:.0f}" for p in PARTS)
                     + f" | {total:.0f} |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt     # after choosing the backend
    style()
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(rows) + 1.6))
    colors = plt.get_cmap("tab10").colors
    names = [NAMES.get(r["variant"], r["variant"]) for r in rows][::-1]
    left = [0.0] * len(rows)
    for i, part in enumerate(PARTS):
        widths = [r["parts_ms"][part] for r in rows][::-1]
        ax.barh(names, widths, left=left, color=colors[i], label=part)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("ms per training step (operator self time)")
    ax.set_title(f"BPTT step at T = {rows[0]['T']}, batch {rows[0]['batch_size']}")
    legend_below(fig, *ax.get_legend_handles_labels(), ncol=3)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m snnlib.bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS))
    p.add_argument("--out", default=str(ROOT / "figures" / "bench"))
    p.add_argument("--one", help=argparse.SUPPRESS)          # internal: profile one variant, print JSON
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(profile_variant(a.one, a.T, _batch(a.batch_size), a.threads, a.warmup, a.steps)))
        return 0
    rows = []
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for v in a.variants:
        cmd = [sys.executable, "-m", "snnlib.bench.profile", "--one", v, "--T", str(a.T), "--batch-size",
               str(a.batch_size), "--threads", str(a.threads), "--warmup", str(a.warmup), "--steps", str(a.steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            print(f"{v}: failed\n{proc.stderr[-1500:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if not rows:
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(rows, indent=1))
    (out / "profile.md").write_text(markdown(rows))
    figure(rows, out / "profile.png")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
