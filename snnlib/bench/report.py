"""Tables and figures from ``results/bench/*.json``: ``python -m snnlib.bench.report RESULTS [FIGURES]``.

Ratios are ``peer step time / snnlib step time`` per alternated round (> 1: snnlib is faster),
summarised as the median over rounds with the range [min, max].
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from ..metrics.timing import ratio_summary, round_ratios
from ..experiments.plots import save_figure, style

LABELS = {"snnlib": "snnlib", "snnlib_torch": "snnlib (reference loop)", "spikingjelly": "SpikingJelly",
          "snntorch": "snnTorch", "snntorch_folded": "snnTorch (T folded)", "norse": "Norse",
          "ann_relu": "ANN floor (ReLU, T=1)", "snnlib_ottt_a": "snnlib ottt_a", "snnlib_ottt_a_lean":
          "snnlib ottt_a (lean)", "spikingjelly_ottt_a": "SpikingJelly OTTT (accumulate)",
          "snnlib_ottt_o": "snnlib ottt_o", "snnlib_ottt_o_lean": "snnlib ottt_o (lean)",
          "spikingjelly_ottt_o": "SpikingJelly OTTT (online)"}
SHORT = {"snntorch_folded": "snnTorch folded", "ann_relu": "ANN floor"}
PEERS = ("spikingjelly", "snntorch", "snntorch_folded", "norse")
MB = 1024 ** 2


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def fmt_ratio(s: dict | None) -> str:
    if s is None:
        return "n/a"
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def bptt_rows(thr: list[dict], mem: list[dict] | None) -> list[dict]:
    saved = {}
    for m in mem or []:
        if "error" not in m:
            saved[(m["variant"], m["T"])] = m
    rows = []
    for res in thr:
        if "error" in res:
            rows.append({"T": None, "error": res["error"]})
            continue
        T, B = res["T"], res["batch_size"]
        snn = [r["snnlib"]["wall_s"] for r in res["rounds"] if "snnlib" in r]
        row = {"T": T, "batch_size": B, "snnlib_images_per_s": B / statistics.median(snn) if snn else None,
               "unavailable": res.get("unavailable", {}), "gflops_before": res["gflops_before"],
               "gflops_after": res["gflops_after"]}
        for v in PEERS + ("snnlib_torch",):
            row[f"speedup_vs_{v}"] = ratio_summary(round_ratios(res, v, "snnlib"))
            row[f"cpu_speedup_vs_{v}"] = ratio_summary(round_ratios(res, v, "snnlib", "cpu_s"))
        row["over_ann_floor"] = ratio_summary(round_ratios(res, "snnlib", "ann_relu", scale=T))
        row["ms_per_image_step"] = {v: 1e3 * statistics.median(r[v]["wall_s"] for r in res["rounds"] if v in r)
                                    / (B * (1 if v == "ann_relu" else T))
                                    for v in ("snnlib", "ann_relu") + PEERS if any(v in r for r in res["rounds"])}
        row["peers_over_ann_floor"] = {v: ratio_summary(round_ratios(res, v, "ann_relu", scale=T)) for v in PEERS}
        for v in ("snnlib", "snnlib_torch") + PEERS:
            m = saved.get((v, T))
            row[f"saved_bytes_{v}"] = m["saved_peak_bytes"] if m else None
            row[f"step_rss_bytes_{v}"] = m["step_peak_over_baseline"] if m else None
            row[f"peak_rss_bytes_{v}"] = m["peak_rss"] if m else None
        rows.append(row)
    return rows


def ottt_rows(thr: list[dict] | None, mem: list[dict] | None) -> list[dict]:
    saved = {(m["variant"], m["T"]): m for m in (mem or []) if "error" not in m}
    rows = []
    for res in thr or []:
        if "error" in res:
            continue
        T, B = res["T"], res["batch_size"]
        row = {"T": T, "batch_size": B, "unavailable": res.get("unavailable", {}),
               "gflops_before": res["gflops_before"], "gflops_after": res["gflops_after"]}
        for mode in ("a", "o"):
            for lean in ("", "_lean"):
                row[f"speedup_{mode}{lean}"] = ratio_summary(round_ratios(res, f"spikingjelly_ottt_{mode}",
                                                                    f"snnlib_ottt_{mode}{lean}"))
        for v in ("snnlib_ottt_a", "snnlib_ottt_a_lean", "spikingjelly_ottt_a"):
            times = [r[v]["wall_s"] for r in res["rounds"] if v in r]
            row[f"images_per_s_{v}"] = B / statistics.median(times) if times else None
            m = saved.get((v, T))
            row[f"saved_bytes_{v}"] = m["saved_peak_bytes"] if m else None
            row[f"step_rss_bytes_{v}"] = m["step_peak_over_baseline"] if m else None
        rows.append(row)
    return rows


def _med(s: dict | None) -> str:
    return "n/a" if s is None else f"{s['median']:.2f}x"


def _mb(b) -> str:
    return "n/a" if b is None else f"{b / MB:.1f}"


def markdown(bptt: list[dict], ottt: list[dict], methods: dict | None, eq: dict | None, batch: dict | None) -> str:
    L = []
    bptt = [r for r in bptt if r.get("T") is not None]
    B = bptt[0]["batch_size"] if bptt else "?"
    if bptt:
        L.append(f"BPTT training step, conv SNN on Fashion-MNIST shape, batch {B}, CPU. Speed-up of snnlib = peer "
                 "step time / snnlib step time, median of alternated rounds (range).")
        L.append("")
        L.append("| T | snnlib img/s | vs SpikingJelly | vs snnTorch | vs snnTorch (T folded) | vs Norse | fused LIF vs "
                 "reference loop | snnlib / ANN floor |")
        L.append("|---|---|---|---|---|---|---|---|")
        for r in bptt:
            L.append(f"| {r['T']} | {r['snnlib_images_per_s']:.0f} | {fmt_ratio(r['speedup_vs_spikingjelly'])} | "
                     f"{fmt_ratio(r['speedup_vs_snntorch'])} | {fmt_ratio(r['speedup_vs_snntorch_folded'])} | "
                     f"{fmt_ratio(r['speedup_vs_norse'])} | {fmt_ratio(r['speedup_vs_snnlib_torch'])} | "
                     f"{fmt_ratio(r['over_ann_floor'])} |")
        L.append("")
        L.append("Same rounds, process CPU time instead of wall time (less sensitive to other load): " + "; ".join(
            f"T={r['T']}: " + ", ".join(f"{LABELS[v]} {_med(r[f'cpu_speedup_vs_{v}'])}" for v in PEERS)
            for r in bptt) + ".")
        L.append("")
        L.append("Compute floor: the same layers as an ANN (ReLU) on one image, T = 1. Training time per image and "
                 "time step (ms, median wall): " + "; ".join(
                     f"T={r['T']}: " + ", ".join(f"{SHORT.get(v, LABELS[v])} {ms:.2f}"
                                                 for v, ms in r["ms_per_image_step"].items())
                     for r in bptt) + ".")
        L.append("")
        L.append("Bytes autograd saves in one step (MB; peak of live saved storages, parameters excluded) / the "
                 "step's peak RSS over the process's RSS before it (MB, fresh process, MALLOC_MMAP_THRESHOLD_=131072):")
        L.append("")
        L.append("| T | " + " | ".join(LABELS[v] for v in ("snnlib", "snnlib_torch") + PEERS) + " |")
        L.append("|---|" + "---|" * (2 + len(PEERS)))
        for r in bptt:
            cells = [f"{_mb(r[f'saved_bytes_{v}'])} / {_mb(r[f'step_rss_bytes_{v}'])}"
                     for v in ("snnlib", "snnlib_torch") + PEERS]
            L.append(f"| {r['T']} | " + " | ".join(cells) + " |")
    if ottt:
        L.append("")
        L.append("OTTT (same network, per-step loss, potential detached every step): speed-up of snnlib over "
                 "SpikingJelly's OTTT (`OTTTLIFNode` + `OTTTSequential` + `ottt_online_training`), and saved "
                 "bytes per step (MB).")
        L.append("")
        L.append("| T | ottt_a | ottt_a (lean) | ottt_o | ottt_o (lean) | saved MB snnlib ottt_a / lean / "
                 "SpikingJelly |")
        L.append("|---|---|---|---|---|---|")
        for r in ottt:
            L.append(f"| {r['T']} | {fmt_ratio(r['speedup_a'])} | {fmt_ratio(r['speedup_a_lean'])} | "
                     f"{fmt_ratio(r['speedup_o'])} | {fmt_ratio(r['speedup_o_lean'])} | "
                     f"{_mb(r['saved_bytes_snnlib_ottt_a'])} / {_mb(r['saved_bytes_snnlib_ottt_a_lean'])} / "
                     f"{_mb(r['saved_bytes_spikingjelly_ottt_a'])} |")
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


def checks(bptt: list[dict], ottt: list[dict]) -> list[str]:
    """The issue's 'Done when' lines, evaluated on these numbers."""
    out = []
    ok_rows = [r for r in bptt if r.get("T") is not None]
    if not ok_rows:
        out.append("BPTT comparisons: NOT MEASURED")
    for peer in ("spikingjelly", "snntorch") if ok_rows else ():
        vals = {r["T"]: r[f"speedup_vs_{peer}"] for r in ok_rows}
        holds = all(v is not None and v["median"] >= 1.0 for v in vals.values())
        out.append(f"snnlib BPTT throughput >= {LABELS[peer]} at T={sorted(vals)}: {_verdict(holds)} "
                   f"(" + ", ".join(f"T={T}: {fmt_ratio(v)}" for T, v in vals.items()) + ")")
    pairs = [(r["T"], r["saved_bytes_snnlib"], r["saved_bytes_spikingjelly"]) for r in ok_rows]
    if pairs:
        holds = all(a is not None and b is not None and a <= b for _, a, b in pairs)
        out.append(f"snnlib saved bytes per step <= SpikingJelly's: {_verdict(holds)} ("
                   + ", ".join(f"T={T}: {_mb(a)} vs {_mb(b)} MB" for T, a, b in pairs) + ")")
    if ottt:
        for key, name in (("speedup_a", "ottt_a (reference formulation, default)"), ("speedup_a_lean", "ottt_a (lean)"),
                          ("speedup_o", "ottt_o (reference)"), ("speedup_o_lean", "ottt_o (lean)")):
            vals = {r["T"]: r[key] for r in ottt}
            if all(v is None for v in vals.values()):
                continue
            holds = all(v is not None and v["median"] >= 1.0 for v in vals.values())
            out.append(f"snnlib {name} throughput >= SpikingJelly OTTT: {_verdict(holds)} ("
                       + ", ".join(f"T={T}: {fmt_ratio(v)}" for T, v in vals.items()) + ")")
        for v in ("snnlib_ottt_a", "snnlib_ottt_a_lean"):
            s = [r[f"saved_bytes_{v}"] for r in ottt if r[f"saved_bytes_{v}"] is not None]
            if s:
                flat = max(s) <= 1.05 * min(s)
                out.append(f"{LABELS[v]} saved bytes flat in T: {_verdict(flat)} "
                           f"({', '.join(_mb(b) for b in s)} MB)")
    return out


def figures(bptt, bptt_thr, ottt, methods, fig_dir: Path | None) -> list[str]:
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

    ok = [r for r in bptt_thr if "error" not in r]
    if ok:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        variants = sorted({v for r in ok for rd in r["rounds"] for v in rd}, key=lambda v: list(LABELS).index(v))
        for v in variants:
            Ts, ips = [], []
            for r in ok:
                t = [rd[v]["wall_s"] for rd in r["rounds"] if v in rd]
                if t:
                    Ts.append(r["T"])
                    ips.append(r["batch_size"] / statistics.median(t) / (1 if v != "ann_relu" else r["T"]))
            axes[0].plot(Ts, ips, label=LABELS[v] + (" / T" if v == "ann_relu" else ""), **_line_style(v))
        axes[0].set(xlabel="T (time steps)", ylabel="training images / s (log scale)", yscale="log",
                    title="BPTT throughput (median of rounds)")
        for v in ("snnlib", "snnlib_torch") + PEERS:
            pts = [(r["T"], r[f"saved_bytes_{v}"] / MB) for r in bptt if r.get("T") and r.get(f"saved_bytes_{v}")]
            if pts:
                axes[1].plot(*zip(*pts), label=LABELS[v], **_line_style(v))
        axes[1].set(xlabel="T (time steps)", ylabel="MiB saved for backward", title="Saved activations per step")
        _finish(fig, axes, sorted({r["T"] for r in ok}))
        save(fig, "bptt_throughput_memory")
    if ottt:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for i, v in enumerate(("snnlib_ottt_a", "snnlib_ottt_a_lean", "spikingjelly_ottt_a")):
            pts = [(r["T"], r[f"images_per_s_{v}"]) for r in ottt if r.get(f"images_per_s_{v}")]
            if pts:
                axes[0].plot(*zip(*pts), label=LABELS[v], **_line_style(v, i))
            pts = [(r["T"], r[f"saved_bytes_{v}"] / MB) for r in ottt if r.get(f"saved_bytes_{v}")]
            if pts:
                axes[1].plot(*zip(*pts), label=LABELS[v], **_line_style(v, i))
        bp = [(r["T"], r["saved_bytes_snnlib"] / MB) for r in bptt if r.get("T") and r.get("saved_bytes_snnlib")]
        if bp:
            axes[1].plot(*zip(*bp), marker="s", ls="--", color="grey", label="snnlib BPTT")
        axes[0].set(xlabel="T (time steps)", ylabel="training images / s", title="OTTT throughput")
        axes[1].set(xlabel="T (time steps)", ylabel="MiB saved for backward (live peak)", title="OTTT memory per step")
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
    thr = _load(out / "bptt_throughput.json") or []
    bptt = bptt_rows(thr, _load(out / "bptt_memory.json"))
    ottt = ottt_rows(_load(out / "ottt_throughput.json"), _load(out / "ottt_memory.json"))
    methods, eq, batch = _load(out / "methods_memory.json"), _load(out / "equality.json"), _load(out / "batch.json")
    md = markdown(bptt, ottt, methods, eq, batch)
    done = checks(bptt, ottt)
    eqres = _load(out / "equilibrium.json")
    eq_rows = equilibrium_rows(eqres)
    if eq_rows:
        md += "\n\n" + equilibrium_markdown(eq_rows, eqres)
        done += equilibrium_checks(eq_rows)
    unavailable = {}
    for r in thr + (_load(out / "ottt_throughput.json") or []):
        unavailable.update(r.get("unavailable", {}))
    if eq:
        unavailable.update(eq.get("unavailable", {}))
    probes = [(r["T"], round(r["gflops_before"], 1), round(r["gflops_after"], 1)) for r in bptt if r.get("T")]
    text = md + "\n\nGFLOP/s probe before/after each BPTT timing process: " + ", ".join(
        f"T={T}: {a}/{b}" for T, a, b in probes) + "\n"
    run = _load(out / "run.json")
    if run:
        text += (f"Run started {run['started']}, took {run['seconds']:.0f} s; load average (1, 5, 15 min) "
                 f"{', '.join(f'{v:.1f}' for v in run['load_average_start'])} at the start and "
                 f"{', '.join(f'{v:.1f}' for v in run['load_average_end'])} at the end, on {run['cpus']} CPUs.\n")
    if unavailable:
        text += "\nSkipped (failed to install, import or build): " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()) + "\n"
    text += "\nDone-when checks:\n" + "\n".join(f"- {c}" for c in done) + "\n"
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"bptt": bptt, "ottt": ottt, "equilibrium": eq_rows, "checks": done,
                                                  "unavailable": unavailable}, indent=1))
    print("\n" + text)
    try:
        paths = figures(bptt, thr, ottt, methods, fig_dir)
        print("figures: " + ", ".join(p for p in paths if p.endswith(".png")))
    except Exception as e:  # noqa: BLE001 - a figure problem must not hide the table
        print(f"figures failed: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
