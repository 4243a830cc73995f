"""Tables and figures from ``results/bench/*.json``: ``python -m snnlib.bench.report RESULTS [FIGURES]``.

BPTT and OTTT: every (variant, T) was timed in its own fresh process, once per alternated round
(``bptt_steps.json``, ``ottt_steps.json``: one entry per process with the median wall and CPU
seconds of its timed steps). Ratios are ``other step time / snnlib step time`` within a round
(> 1: snnlib is faster), summarised as the median over rounds with the range [min, max]. The
fastest other implementation at a T is the one with the smallest median step time there.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from ..metrics.timing import ratio_summary, round_ratios
from ..experiments.plots import save_figure, style

LABELS = {"snnlib": "snnlib", "snnlib_torch": "snnlib (reference loop)", "plain_loop": "plain PyTorch loop",
          "spikingjelly": "SpikingJelly (multi-step)", "spikingjelly_single": "SpikingJelly (single-step)",
          "snntorch": "snnTorch (tutorial loop)", "snntorch_folded": "snnTorch (T folded)",
          "norse": "Norse (cells, T folded)", "norse_per_step": "Norse (SequentialState loop)",
          "ann_relu": "ANN floor (ReLU, T=1)", "snnlib_ottt_a": "snnlib ottt_a", "snnlib_ottt_a_lean":
          "snnlib ottt_a (lean)", "spikingjelly_ottt_a": "SpikingJelly OTTT (accumulate)",
          "snnlib_ottt_o": "snnlib ottt_o", "snnlib_ottt_o_lean": "snnlib ottt_o (lean)",
          "spikingjelly_ottt_o": "SpikingJelly OTTT (online)"}
#: which idiom each peer variant is: the one its documentation teaches, or a faster one it supports
IDIOM = {"plain_loop": "plain", "spikingjelly": "fastest", "spikingjelly_single": "taught",
         "snntorch": "taught", "snntorch_folded": "fastest", "norse": "fastest", "norse_per_step": "taught"}
OTHERS = ("plain_loop", "spikingjelly", "spikingjelly_single", "snntorch", "snntorch_folded", "norse",
          "norse_per_step")
MB = 1024 ** 2


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def fmt_ratio(s: dict | None) -> str:
    if s is None:
        return "n/a"
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def as_rounds(steps: list[dict] | None) -> list[dict]:
    """Per-process results -> one dict per T: ``{"T", "batch_size", "rounds": [{variant: {"wall_s",
    "cpu_s"}}], "gflops", "unavailable", "errors"}`` (``round_ratios`` pairs variants within a round)."""
    by_T: dict = {}
    for e in steps or []:
        d = by_T.setdefault(e["T"], {"T": e["T"], "batch_size": None, "rounds": {}, "gflops": [],
                                     "unavailable": {}, "errors": {}})
        if "unavailable" in e:
            d["unavailable"][e["variant"]] = e["unavailable"]
        elif "error" in e:
            d["errors"][e["variant"]] = e["error"] + " " + e.get("log_tail", "")[-300:]
        else:
            d["batch_size"] = e["batch_size"]
            d["gflops"].append(e["gflops"])
            d["rounds"].setdefault(e["round"], {})[e["variant"]] = {"wall_s": e["wall_s"], "cpu_s": e["cpu_s"]}
    out = []
    for T in sorted(by_T):
        d = by_T[T]
        d["rounds"] = [d["rounds"][k] for k in sorted(d["rounds"])]
        out.append(d)
    return out


def _step_stats(res: dict, v: str) -> dict | None:
    t = [r[v]["wall_s"] for r in res["rounds"] if v in r]
    return {"median": statistics.median(t), "min": min(t), "max": max(t), "n": len(t)} if t else None


def _memory_index(mem: list[dict] | None) -> dict:
    return {(m["variant"], m["T"]): m for m in (mem or []) if "error" not in m}


def bptt_rows(steps: list[dict] | None, mem: list[dict] | None) -> list[dict]:
    """One row per T: step times of every variant, snnlib's speed-up over each other implementation and
    over the fastest, the compute floor (T x the ANN step), peak step memory and saved bytes."""
    saved = _memory_index(mem)
    floor = {m["T"]: m for m in (mem or []) if m.get("variant") == "ann_relu" and "error" not in m}
    rows = []
    for res in as_rounds(steps):
        T, B = res["T"], res["batch_size"]
        if B is None:
            rows.append({"T": T, "error": "no variant ran", "unavailable": res["unavailable"], "errors": res["errors"]})
            continue
        step = {v: _step_stats(res, v) for v in ("snnlib",) + OTHERS + ("ann_relu",)}
        step = {v: s for v, s in step.items() if s is not None}
        others = [v for v in OTHERS if v in step]
        fastest = min(others, key=lambda v: step[v]["median"]) if others else None
        row = {"T": T, "batch_size": B, "step_s": step, "unavailable": res["unavailable"], "errors": res["errors"],
               "gflops": res["gflops"], "fastest_other": fastest,
               "snnlib_images_per_s": B / step["snnlib"]["median"] if "snnlib" in step else None,
               "speedup_vs": {v: ratio_summary(round_ratios(res, v, "snnlib")) for v in others},
               "cpu_speedup_vs": {v: ratio_summary(round_ratios(res, v, "snnlib", "cpu_s")) for v in others},
               "over_ann_floor": {v: ratio_summary(round_ratios(res, v, "ann_relu", scale=T))
                                  for v in ("snnlib",) + tuple(others) if "ann_relu" in step}}
        row["speedup_vs_fastest"] = row["speedup_vs"].get(fastest) if fastest else None
        row["memory"] = {v: {"step_peak_bytes": m["step_peak_over_baseline"], "saved_bytes": m["saved_peak_bytes"]}
                         for v in ("snnlib", "snnlib_torch") + OTHERS if (m := saved.get((v, T)))}
        if 1 in floor:
            row["memory"]["ann_relu"] = {"step_peak_bytes": floor[1]["step_peak_over_baseline"],
                                         "saved_bytes": floor[1]["saved_peak_bytes"]}
        rows.append(row)
    return rows


def ottt_rows(steps: list[dict] | None, mem: list[dict] | None) -> list[dict]:
    """One row per T: step times of the OTTT variants, snnlib's speed-up over SpikingJelly's OTTT
    (ottt_a against its accumulating mode, ottt_o against its online mode) and memory."""
    saved = _memory_index(mem)
    rows = []
    for res in as_rounds(steps):
        T, B = res["T"], res["batch_size"]
        if B is None:
            continue
        step = {v: s for v in LABELS if v.startswith(("snnlib_ottt", "spikingjelly_ottt"))
                if (s := _step_stats(res, v)) is not None}
        row = {"T": T, "batch_size": B, "step_s": step, "unavailable": res["unavailable"], "errors": res["errors"],
               "speedup": {}}
        for v in step:
            if v.startswith("snnlib_ottt"):
                peer = "spikingjelly_ottt_" + v.split("_")[2]
                row["speedup"][v] = ratio_summary(round_ratios(res, peer, v))
        row["memory"] = {v: {"step_peak_bytes": m["step_peak_over_baseline"], "saved_bytes": m["saved_peak_bytes"]}
                         for v in step if (m := saved.get((v, T)))}
        rows.append(row)
    return rows


def _mb(b) -> str:
    return "n/a" if b is None else f"{b / MB:.0f}"


def _ms_range(s: dict | None) -> str:
    return "n/a" if s is None else f"{1e3 * s['median']:.0f} ({1e3 * s['min']:.0f}-{1e3 * s['max']:.0f})"


def markdown(bptt: list[dict], ottt: list[dict], methods: dict | None, eq: dict | None, batch: dict | None) -> str:
    L = []
    bptt = [r for r in bptt if "error" not in r]
    if bptt:
        B = bptt[0]["batch_size"]
        rounds = max(s["n"] for r in bptt for s in r["step_s"].values())
        L += [f"BPTT training step (forward over T, loss, backward, SGD update), conv SNN on Fashion-MNIST shape, "
              f"batch {B}, CPU. Every (implementation, T) ran in its own fresh process, once in each of {rounds} "
              "alternated rounds; speed-up = the other's step time / snnlib's step time in the same round, median "
              "(range). The compute floor is T x the step of the same layers as an ANN (ReLU) on one image.", "",
              "| T | snnlib img/s | fastest other | snnlib vs fastest | snnlib / floor | fastest / floor |",
              "|---|---|---|---|---|---|"]
        for r in bptt:
            f = r["fastest_other"]
            fl = r["over_ann_floor"]
            L.append(f"| {r['T']} | {_rate(r['snnlib_images_per_s'])} | {LABELS.get(f, 'n/a')} | "
                     f"{fmt_ratio(r['speedup_vs_fastest'])} | {fmt_ratio(fl.get('snnlib'))} | "
                     f"{fmt_ratio(fl.get(f))} |")
        cols = ["snnlib"] + [v for v in OTHERS if any(v in r["step_s"] for r in bptt)]
        L += ["", "Step time, ms: median (range) over rounds; in brackets snnlib's speed-up over it. Idiom: "
              "'taught' = as the framework's documentation teaches, 'fastest' = a faster idiom it supports.", "",
              "| T | " + " | ".join(LABELS[v] + (f" [{IDIOM[v]}]" if v in IDIOM else "") for v in cols)
              + " | ANN floor x T |", "|---|" + "---|" * (len(cols) + 1)]
        for r in bptt:
            cells = []
            for v in cols:
                c = _ms_range(r["step_s"].get(v))
                if v != "snnlib" and r["speedup_vs"].get(v):
                    c += f" [{r['speedup_vs'][v]['median']:.2f}x]"
                cells.append(c)
            ann = r["step_s"].get("ann_relu")
            floor = "n/a" if ann is None else f"{1e3 * r['T'] * ann['median']:.0f}"
            L.append(f"| {r['T']} | " + " | ".join(cells) + f" | {floor} |")
        L += ["", "The same processes, ratios of process CPU time instead of wall time (less sensitive to other load "
              "on the machine): " + "; ".join(f"T={r['T']}: " + ", ".join(
                  f"{LABELS[v]} {s['median']:.2f}x" for v, s in r["cpu_speedup_vs"].items() if s) for r in bptt) + "."]
        mcols = [v for v in ("snnlib",) + OTHERS if any(v in r["memory"] for r in bptt)]
        if mcols:
            L += ["", "Peak step memory: the step's peak RSS over the process's RSS before it, MB (fresh process, "
                  "one step, MALLOC_MMAP_THRESHOLD_=131072, 1 thread) / bytes autograd saved, MB (peak of live "
                  "saved storages, parameters excluded):", "",
                  "| T | " + " | ".join(LABELS[v] for v in mcols) + " |", "|---|" + "---|" * len(mcols)]
            for r in bptt:
                L.append(f"| {r['T']} | " + " | ".join(
                    f"{_mb(m['step_peak_bytes'])} / {_mb(m['saved_bytes'])}" if (m := r["memory"].get(v)) else "n/a"
                    for v in mcols) + " |")
    if ottt:
        vs = [v for v in LABELS if any(v in r["step_s"] for r in ottt)]
        L += ["", "OTTT (same network, per-step loss, potential detached every step), each (variant, T) in its own "
              "process per alternated round: step time, ms, median (range); snnlib's speed-up over SpikingJelly's "
              "OTTT (`OTTTLIFNode` + `OTTTSequential` + `ottt_online_training`) in the same round; peak step "
              "memory / saved bytes, MB.", "",
              "| T | " + " | ".join(LABELS[v] for v in vs) + " | speed-up | memory (" + ", ".join(
                  LABELS[v] for v in vs) + ") |", "|---|" + "---|" * (len(vs) + 2)]
        for r in ottt:
            sp = "; ".join(f"{LABELS[v].replace('snnlib ', '')}: {fmt_ratio(s)}" for v, s in r["speedup"].items())
            mem = ", ".join(f"{_mb(m['step_peak_bytes'])} / {_mb(m['saved_bytes'])}" if (m := r["memory"].get(v))
                            else "n/a" for v in vs)
            L.append(f"| {r['T']} | " + " | ".join(_ms_range(r["step_s"].get(v)) for v in vs) + f" | {sp} | {mem} |")
    if methods and methods.get("rows"):
        L.append("")
        L.append(f"Training memory against T of every snnlib method (MB: saved activations + neuron state + "
                 f"solver buffers, batch {methods['batch_size']}, one step):")
        L.append("")
        Ts = sorted({r["T"] for r in methods["rows"]})
        L.append("| method (config) | " + " | ".join(f"T={T}" for T in Ts) + " |")
        L.append("|---|" + "---|" * len(Ts))
        by = {}
        for r in methods["rows"]:
            by.setdefault((r["method"], r["config"]), {})[r["T"]] = r["total_bytes"]
        for (meth, conf), d in by.items():
            L.append(f"| {meth} ({conf}) | " + " | ".join(_mb(d.get(T)) for T in Ts) + " |")
        for meth, err in methods.get("failed", {}).items():
            L.append(f"| {meth} | failed: {err} |")
    if eq and "rows" in eq:
        L.append("")
        L.append("Equality (same seeded weights, same batch, float32): " + "; ".join(
            f"{r['variant']}: logits {'identical' if r['logits_equal'] else 'max diff %.1e' % r['max_abs_logit_diff']}"
            f", gradients within {r['grad_rel_err_max']:.1e}" for r in eq["rows"]) + ". Firing rates: "
            + ", ".join(f"{k} {v:.2f}" for k, v in eq.get("firing_rates", {}).items()) + ".")
    if batch:
        L.append(f"Data: {batch.get('source')}.")
    return "\n".join(L)


EQ_PHASES = ("simulate", "rate_map", "vjp", "solver", "backprop", "optimizer", "other")
EQ_TARGETS = {"mpis_cpu": 3.0, "ide_f400": 4.0}      # the done-when speed-ups over the old commit


def equilibrium_rows(eq: dict | None) -> list[dict]:
    """Per case: step time of each implementation (median of its processes' medians), the speed-up
    old / new per alternated round, median phases, backward iterations, determinism, and how far the
    first step's loss and gradient norm of the two implementations are apart."""
    rows = []
    for c in (eq or {}).get("cases", []):
        row = {"case": c["case"], "label": c.get("label", c["case"]), "config": c["config"], "set": c.get("set", {}),
               "set_new": c.get("set_new", {}), "set_old": c.get("set_old", {}), "batch_size": c["batch_size"],
               "errors": {}}
        per = {}
        for rd in c["rounds"]:
            for impl, res in rd.items():
                if "error" in res:
                    row["errors"][impl] = res["error"] + " " + res.get("log_tail", "")[-300:]
                    continue
                per.setdefault(impl, []).append(res)
        for impl, results in per.items():
            row[f"{impl}_step_s"] = statistics.median(r["median"]["wall_s"] for r in results)
            row[f"{impl}_phases_s"] = {k: statistics.median(r["median"][k] for r in results) for k in EQ_PHASES}
            row[f"{impl}_images_per_s"] = c["batch_size"] / row[f"{impl}_step_s"]
            row[f"{impl}_determinism"] = results[0]["determinism"]
            nsteps = [s["backward_nstep"] for r in results for s in r["solver"] if "backward_nstep" in s]
            row[f"{impl}_backward_nstep"] = statistics.median(nsteps) if nsteps else None
            row["T"] = results[0]["T"]
        ratios = [rd["old"]["median"]["wall_s"] / rd["new"]["median"]["wall_s"] for rd in c["rounds"]
                  if "median" in rd.get("old", {}) and "median" in rd.get("new", {})]
        row["speedup"] = ratio_summary(ratios)
        cpu = [rd["old"]["median"]["cpu_s"] / rd["new"]["median"]["cpu_s"] for rd in c["rounds"]
               if "cpu_s" in rd.get("old", {}).get("median", {}) and "cpu_s" in rd.get("new", {}).get("median", {})]
        row["cpu_speedup"] = ratio_summary(cpu)
        for ph in ("vjp", "solver"):
            rr = [rd["old"]["median"][ph] / rd["new"]["median"][ph] for rd in c["rounds"]
                  if "median" in rd.get("old", {}) and "median" in rd.get("new", {}) and rd["new"]["median"][ph] > 0]
            row[f"{ph}_speedup"] = ratio_summary(rr)
        if "new" in per and "old" in per:
            a, b = per["new"][0]["first_step"], per["old"][0]["first_step"]
            row["first_step_loss_diff"] = abs(a["loss"] - b["loss"])
            row["first_step_grad_norm_rel_diff"] = abs(a["grad_norm"] - b["grad_norm"]) / max(b["grad_norm"], 1e-30)
        rows.append(row)
    return rows


def _ms(v) -> str:
    return "n/a" if v is None else f"{1e3 * v:.0f}"


def _rate(v) -> str:
    return "n/a" if v is None else (f"{v:.0f}" if v >= 10 else f"{v:.2f}")


def equilibrium_markdown(rows: list[dict], eq: dict) -> str:
    L = [f"Equilibrium methods: one training step (forward simulation, rate map, implicit backward, optimiser) "
         f"of this tree against the library at {eq.get('old_commit')} ({'skipped: ' + eq['old_skipped'] if eq.get('old_skipped') else 'extracted with git archive'}). "
         "Processes alternate new, old | old, new; speed-up = old step time / new step time per round, median (range); "
         "by CPU time: the same ratio of the processes' CPU seconds per step (all threads), which does not count "
         "waits for a core on a shared machine.",
         "", "| case | T, batch | new img/s | old img/s | speed-up | speed-up (CPU time) | VJPs old/new | "
         "solver algebra old/new | backward iterations |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ni, oi = r.get("new_images_per_s"), r.get("old_images_per_s")
        L.append(f"| {r['label']} | {r.get('T', '?')}, {r['batch_size']} | {_rate(ni)} | "
                 f"{_rate(oi)} | {fmt_ratio(r['speedup'])} | {fmt_ratio(r.get('cpu_speedup'))} | "
                 f"{fmt_ratio(r['vjp_speedup'])} | {fmt_ratio(r['solver_speedup'])} | {r.get('new_backward_nstep')} |")
    L += ["", "Phases of a step (ms, median; new / old):", "",
          "| case | " + " | ".join(EQ_PHASES) + " | step |", "|---|" + "---|" * (len(EQ_PHASES) + 1)]
    for r in rows:
        n, o = r.get("new_phases_s", {}), r.get("old_phases_s", {})
        L.append(f"| {r['label']} | " + " | ".join(f"{_ms(n.get(k))} / {_ms(o.get(k))}" for k in EQ_PHASES)
                 + f" | {_ms(r.get('new_step_s'))} / {_ms(r.get('old_step_s'))} |")
    L.append("")
    for r in rows:
        parts = [f"{impl}: deterministic algorithms {d['deterministic_algorithms']}, fill_uninitialized_memory "
                 f"{d['fill_uninitialized_memory']}, {d['threads']} threads"
                 for impl in ("new", "old") if (d := r.get(f"{impl}_determinism"))]
        same = ""
        if "first_step_loss_diff" in r:
            same = (f"; first step: |loss new - old| {r['first_step_loss_diff']:.1e}, gradient norm relative "
                    f"difference {r['first_step_grad_norm_rel_diff']:.1e}")
        errs = "; FAILED: " + "; ".join(f"{k}: {v}" for k, v in r["errors"].items()) if r["errors"] else ""
        only = "".join(f"; {impl} tree only: " + ", ".join(f"{k}={v}" for k, v in r[f"set_{impl}"].items())
                       for impl in ("new", "old") if r.get(f"set_{impl}"))
        L.append(f"- {r['label']}: " + "; ".join(parts) + only + same + errs)
    return "\n".join(L)


def equilibrium_checks(rows: list[dict]) -> list[str]:
    out = []
    by = {r["case"]: r for r in rows}
    for case, target in EQ_TARGETS.items():
        r = by.get(case)
        if r is None or r["speedup"] is None:
            out.append(f"{case} at least {target:g}x faster per step than the old commit: NOT MEASURED")
            continue
        cpu = f"; by CPU time {fmt_ratio(r['cpu_speedup'])}" if r.get("cpu_speedup") else ""
        out.append(f"{r['label']} at least {target:g}x faster per step than the old commit: "
                   f"{_verdict(r['speedup']['median'] >= target)} ({fmt_ratio(r['speedup'])}{cpu})")
    return out


def _verdict(holds: bool) -> str:
    return "HOLDS" if holds else "DOES NOT HOLD"


#: the issue's done-when targets
TARGET_SPEEDUP, TARGET_OTTT_SPEEDUP, TARGET_FLOOR, FLOOR_T = 1.3, 1.3, 1.5, 16


def checks(bptt: list[dict], ottt: list[dict]) -> list[str]:
    """The issue's 'Done when' lines, evaluated on these numbers (medians of alternated rounds)."""
    out = []
    ok = [r for r in bptt if "error" not in r]
    if not ok:
        out.append("BPTT comparisons: NOT MEASURED")
    else:
        vals = {r["T"]: (r["fastest_other"], r["speedup_vs_fastest"]) for r in ok}
        holds = all(s is not None and s["median"] >= TARGET_SPEEDUP for _, s in vals.values())
        out.append(f"snnlib BPTT >= {TARGET_SPEEDUP}x the fastest other implementation at T={sorted(vals)}: "
                   f"{_verdict(holds)} (" + ", ".join(f"T={T}: {fmt_ratio(s)} vs {LABELS.get(f, f)}"
                                                     for T, (f, s) in vals.items()) + ")")
        worse = []
        for r in ok:
            mine = r["memory"].get("snnlib")
            for v, m in r["memory"].items():
                if v in OTHERS and (mine is None or m["step_peak_bytes"] < mine["step_peak_bytes"]):
                    worse.append(f"T={r['T']}: {LABELS[v]} {_mb(m['step_peak_bytes'])} MB < snnlib "
                                 f"{_mb(mine['step_peak_bytes']) if mine else 'n/a'} MB")
        measured = any(r["memory"] for r in ok)
        out.append("snnlib peak step memory <= every other implementation's: "
                   + ("NOT MEASURED" if not measured else _verdict(not worse) + (f" ({'; '.join(worse)})" if worse else "")))
        at = [r for r in ok if r["T"] == FLOOR_T]
        if at and at[0]["over_ann_floor"].get("snnlib"):
            s = at[0]["over_ann_floor"]["snnlib"]
            out.append(f"snnlib step <= {TARGET_FLOOR}x the compute floor at T={FLOOR_T}: "
                       f"{_verdict(s['median'] <= TARGET_FLOOR)} ({fmt_ratio(s)})")
        else:
            out.append(f"snnlib step <= {TARGET_FLOOR}x the compute floor at T={FLOOR_T}: NOT MEASURED")
    vals = {r["T"]: r["speedup"].get("snnlib_ottt_a") for r in ottt}
    if vals and any(v is not None for v in vals.values()):
        holds = all(v is not None and v["median"] >= TARGET_OTTT_SPEEDUP for v in vals.values())
        out.append(f"snnlib ottt_a (reference formulation) >= {TARGET_OTTT_SPEEDUP}x SpikingJelly's OTTT at "
                   f"T={sorted(vals)}: {_verdict(holds)} (" + ", ".join(f"T={T}: {fmt_ratio(v)}"
                                                                        for T, v in vals.items()) + ")")
    else:
        out.append("snnlib ottt_a against SpikingJelly's OTTT: NOT MEASURED")
    return out


def figures(bptt, ottt, methods, fig_dir: Path | None) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    style()
    paths = []

    def save(fig, name):
        if fig_dir is None:
            paths.extend(save_figure(fig, "bench", name, "cpu"))
        else:
            fig_dir.mkdir(parents=True, exist_ok=True)
            for ext in ("png", "pdf"):
                fig.savefig(fig_dir / f"{name}.{ext}")
                paths.append(str(fig_dir / f"{name}.{ext}"))
        plt.close(fig)

    ok = [r for r in bptt if "error" not in r]
    if ok:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for v in ("snnlib",) + OTHERS + ("ann_relu",):
            pts = [(r["T"], r["batch_size"] / r["step_s"][v]["median"] / (r["T"] if v == "ann_relu" else 1))
                   for r in ok if v in r["step_s"]]
            style_v = dict(_line_style(v), lw=2.5 if v == "snnlib" else 1.2)
            if pts:
                axes[0].plot(*zip(*pts), label=LABELS[v] if v != "ann_relu" else "compute floor (ANN / T)",
                             **style_v)
            pts = [(r["T"], r["memory"][v]["step_peak_bytes"] / MB) for r in ok if v in r["memory"]]
            if pts and v != "ann_relu":
                axes[1].plot(*zip(*pts), label=LABELS[v], **style_v)
        axes[0].set(xlabel="T (time steps, log scale)", ylabel="training images / s (log scale)", xscale="log",
                    yscale="log", title="BPTT step throughput (median of rounds)")
        axes[1].set(xlabel="T (time steps, log scale)", ylabel="MiB, peak RSS of the step over its start (log scale)",
                    xscale="log", yscale="log", title="Peak step memory")
        _finish(fig, axes, sorted({r["T"] for r in ok}), below=False)
        save(fig, "bptt_throughput_memory")
    if ottt:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for i, v in enumerate([k for k in LABELS if k.startswith(("snnlib_ottt", "spikingjelly_ottt"))]):
            pts = [(r["T"], r["batch_size"] / r["step_s"][v]["median"]) for r in ottt if v in r["step_s"]]
            if pts:
                axes[0].plot(*zip(*pts), label=LABELS[v], **_line_style(v, i))
            pts = [(r["T"], r["memory"][v]["step_peak_bytes"] / MB) for r in ottt if v in r["memory"]]
            if pts:
                axes[1].plot(*zip(*pts), label=LABELS[v], **_line_style(v, i))
        axes[0].set(xlabel="T (time steps)", ylabel="training images / s", title="OTTT throughput")
        axes[1].set(xlabel="T (time steps)", ylabel="MiB, peak RSS of the step over its start",
                    title="OTTT peak step memory")
        _finish(fig, axes, sorted({r["T"] for r in ottt}))
        save(fig, "ottt")
    if methods and methods.get("rows"):
        fig, ax = plt.subplots(figsize=(6, 4))
        by = {}
        for r in methods["rows"]:
            by.setdefault(r["method"], []).append((r["T"], r["total_bytes"] / MB))
        for i, (m, pts) in enumerate(by.items()):
            pts.sort()
            ax.plot(*zip(*pts), label=m, **_line_style(m, i))
        ax.set(xlabel="T (time steps)", ylabel="MiB (saved + state + solver), log scale", yscale="log",
               title=f"Training memory vs T (batch {methods['batch_size']})")
        _finish(fig, [ax], sorted({r["T"] for r in methods["rows"]}), below=False)
        save(fig, "methods_memory")
    return paths


_MARKERS, _DASHES = "osD^vP*Xhp", ["-", "--", ":", "-."]


def _line_style(name: str, i: int | None = None) -> dict:
    """Marker, line style and colour of one series, fixed by its name (or position ``i``), so that
    lines lying on top of each other stay visible."""
    i = (list(LABELS).index(name) if name in LABELS else 0) if i is None else i
    return {"marker": _MARKERS[i % len(_MARKERS)], "ls": _DASHES[i % len(_DASHES)], "color": f"C{i % 10}",
            "markersize": 7, "mfc": "none", "mew": 1.5}


def _finish(fig, axes, Ts, below: bool = True) -> None:
    """Ticks at the measured T; one legend for every labelled series, below the panels (``below``)
    or right of the last axes, never over the data."""
    labels, handles = [], []
    for ax in axes:
        ax.set_xticks(Ts, [str(t) for t in Ts])
        ax.minorticks_off()
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                labels.append(lab)
                handles.append(h)
    fig.tight_layout()
    if below:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)),
                   frameon=False)
    else:
        axes[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0])
    fig_dir = Path(argv[1]) if len(argv) > 1 else None
    bptt = bptt_rows(_load(out / "bptt_steps.json"), _load(out / "bptt_memory.json"))
    ottt = ottt_rows(_load(out / "ottt_steps.json"), _load(out / "ottt_memory.json"))
    methods, eq, batch = _load(out / "methods_memory.json"), _load(out / "equality.json"), _load(out / "batch.json")
    md = markdown(bptt, ottt, methods, eq, batch)
    check = _load(out / "ottt_check.json")
    if check and check.get("equality"):
        md += "\n\nOTTT gradients against snnlib's (initial weights, T = %d): " % check["T"] + "; ".join(
            f"{r['variant']} vs {r['reference']}: loss difference {r['loss_diff']:.1e}, gradients within "
            f"{r['grad_rel_err_max']:.1e}" for r in check["equality"]["rows"]) + "."
    done = checks(bptt, ottt)
    eqres = _load(out / "equilibrium.json")
    eq_rows = equilibrium_rows(eqres)
    if eq_rows:
        md += "\n\n" + equilibrium_markdown(eq_rows, eqres)
        done += equilibrium_checks(eq_rows)
    unavailable, failed = {}, {}
    for r in bptt + ottt:
        unavailable.update(r.get("unavailable", {}))
        failed.update({f"{k} (T={r['T']})": v for k, v in r.get("errors", {}).items()})
    if eq:
        unavailable.update(eq.get("unavailable", {}))
    probes = [(r["T"], min(r["gflops"]), max(r["gflops"])) for r in bptt if r.get("gflops")]
    text = md + "\n\nGFLOP/s probe at the start of each BPTT timing process (min-max): " + ", ".join(
        f"T={T}: {a:.1f}-{b:.1f}" for T, a, b in probes) + "\n"
    run = _load(out / "run.json")
    if run:
        text += (f"Run started {run['started']}, took {run['seconds']:.0f} s; load average (1, 5, 15 min) "
                 f"{', '.join(f'{v:.1f}' for v in run['load_average_start'])} at the start and "
                 f"{', '.join(f'{v:.1f}' for v in run['load_average_end'])} at the end, on {run['cpus']} CPUs.\n")
    if unavailable:
        text += "\nSkipped (failed to install, import or build): " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()) + "\n"
    if failed:
        text += "\nFailed processes: " + "; ".join(f"{k}: {v}" for k, v in failed.items()) + "\n"
    text += "\nDone-when checks:\n" + "\n".join(f"- {c}" for c in done) + "\n"
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"bptt": bptt, "ottt": ottt, "equilibrium": eq_rows, "checks": done,
                                                  "unavailable": unavailable}, indent=1))
    print("\n" + text)
    try:
        paths = figures(bptt, ottt, methods, fig_dir)
        print("figures: " + ", ".join(p for p in paths if p.endswith(".png")))
    except Exception as e:  # noqa: BLE001 - a figure problem must not hide the table
        print(f"figures failed: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
