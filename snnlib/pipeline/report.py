"""``figures/REPORT.md``: every claim of every paper with what we measured and the verdict."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from ..paths import ROOT, figures_dir
from ..experiments.claims import load_claims, verdict_of
from ..experiments.verdict import FAILS, HOLDS, INCONCLUSIVE
from ..experiments.io import read_json, write_json, write_text
from ..experiments.provenance import git_commit, machine
from ..experiments.tables import load_runs

#: claim-id prefix -> paper heading, in report order
PAPERS = {
    "bptt": "BPTT baseline (00_quickstart)",
    "ide": "IDE: implicit differentiation on the equilibrium state (NeurIPS 2021)",
    "mpis": "MPIS-SNN: multi-parallel implicit streams (ECCV 2024)",
    "spide": "SPIDE: purely spike-based implicit differentiation (Neural Networks 2023)",
    "ottt": "OTTT: online training through time (NeurIPS 2022)",
    "saf": "SAF: spike accumulation forwarding (TMLR 2024)",
    "minlat": "Minimum-latency single-step SNN (ACML 2023)",
}


def _fmt(v) -> str:
    if isinstance(v, dict):
        main = v.get("value")
        rest = ", ".join(f"{k}={_fmt(x)}" for k, x in v.items() if k != "value" and not isinstance(x, (dict, list)))
        return f"{_fmt(main)}" + (f" ({rest})" if rest else "")
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if v is None:
        return "n/a"
    return str(v).replace("|", "/")


def _published(p) -> str:
    """A published number for the report: ``{"value", "unit", "tag", "source", ...}`` (extra numeric
    keys shown in brackets), a mapping of such records or numbers by name, or a plain number."""
    if p is None or p == {} or p == "":
        return "–"
    if not isinstance(p, dict):
        return _fmt(p)
    if "value" not in p:
        named = "; ".join(f"{k}: {_published(v)}" for k, v in p.items() if k not in ("tag", "source"))
        return named + (f" [{p['tag']}]" if p.get("tag") else "") + (f" {p['source']}" if p.get("source") else "")
    unit = p.get("unit", "")
    text = _fmt(p["value"]) + ((" " + unit) if unit and unit != "%" else unit)
    extra = ", ".join(f"{k}={_fmt(v)}" for k, v in p.items()
                      if k not in ("value", "unit", "tag", "source", "note") and not isinstance(v, (dict, list)))
    if extra:
        text += f" ({extra})"
    if p.get("tag"):
        text += f" [{p['tag']}]"
    if p.get("source"):
        text += f" {p['source']}"
    return text.replace("|", "/")


def verdict_counts(claims: list[dict]) -> str:
    """'N of M claims hold here' with the numbers that do not hold and that are inconclusive."""
    v = [verdict_of(c) for c in claims]
    text = f"{v.count(HOLDS)} of {len(v)} claims hold here"
    plural = {FAILS: "do not hold"}          # "2 do not hold", "1 does not hold"
    rest = [f"{v.count(x)} {x if v.count(x) == 1 else plural.get(x, x)}" for x in (FAILS, INCONCLUSIVE)
            if v.count(x)]
    return text + (f" ({', '.join(rest)})" if rest else "") + "."


#: the scale whose budgets are made to decide what the one-hour cpu scale leaves open
DECIDING_SCALE = "full"


def _verdict_cell(c: dict) -> str:
    """The verdict, bold unless it holds; the interval, seeds and budget when it was judged; an
    inconclusive verdict below the full scale points to it."""
    v = verdict_of(c)
    text = v if v == HOLDS else f"**{v}**"
    if c.get("kind") == "correctness":
        return text + " (asserted)"
    if c.get("statistic") == "deterministic":
        return text + " (deterministic)"
    if "interval" in c:
        ci = c["interval"]
        ci_text = f"95% CI [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "no interval"
        text += f" ({c['statistic']} {_fmt(c['measured'].get('value'))}, {ci_text}, {c['n_seeds']} seeds; {c['budget']})"
    if v == INCONCLUSIVE and c.get("scale") in ("smoke", "cpu"):
        text += f"; the `{DECIDING_SCALE}` scale (5 seeds, the whole split) is made to decide it"
    return text


def claims_markdown(claims: list[dict]) -> str:
    groups: dict[str, list[dict]] = {}
    for c in claims:
        groups.setdefault(c["id"].split(".", 1)[0], []).append(c)
    order = [k for k in PAPERS if k in groups] + sorted(k for k in groups if k not in PAPERS)
    out = []
    for key in order:
        cs = sorted(groups[key], key=lambda c: c["id"])
        out.append(f"## {PAPERS.get(key, key)}\n")
        out.append(verdict_counts(cs) + "\n")
        out.append("| claim | statement | measured | threshold | verdict | published | source |")
        out.append("|---|---|---|---|---|---|---|")
        for c in cs:
            verdict = _verdict_cell(c)
            out.append(f"| `{c['id']}` | {_fmt(c['statement'])} | {_fmt(c['measured'])} | {_fmt(c['threshold'])} | "
                       f"{verdict} | {_published(c.get('published'))} | {_fmt(c['source'])} |")
            if c.get("note"):
                out.append(f"| | *note:* {_fmt(c['note'])} | | | | | |")
        out.append("")
    return "\n".join(out)


def figure_links(scale: str) -> str:
    """Markdown list of every PNG figure under figures[/<scale>]/<notebook>/, grouped by notebook."""
    base = figures_dir(scale)
    out = []
    for d in sorted(p for p in base.glob("*") if p.is_dir()):
        pngs = sorted(d.glob("*.png"))
        if pngs:
            links = ", ".join(f"[{p.stem}]({p.relative_to(base).as_posix()})" for p in pngs)
            out.append(f"- **{d.name}**: {links}")
    return ("\n## Figures\n\n" + "\n".join(out) + "\n") if out else ""


def paper_counts(claims: list[dict]) -> dict[str, dict[str, int]]:
    """Per paper (claim-id prefix): how many claims hold, do not hold, are inconclusive."""
    out: dict[str, dict[str, int]] = {}
    for c in claims:
        row = out.setdefault(c["id"].split(".", 1)[0], {HOLDS: 0, FAILS: 0, INCONCLUSIVE: 0})
        row[verdict_of(c)] += 1
    return out


#: the committed scales whose verdict counts the README shows side by side
README_SCALES = ("cpu", "full")
README_BEGIN, README_END = "<!-- verdicts:begin -->", "<!-- verdicts:end -->"


def verdict_table(counts: dict[str, dict]) -> str:
    """Markdown: one row per paper, holds / does not hold / inconclusive per scale (``counts``: scale ->
    ``{"papers": paper_counts, "date", "commit"}``); a scale without a report shows "not run yet"."""
    scales = [s for s in README_SCALES]
    head = "| paper | " + " | ".join(f"{s}: holds / does not hold / inconclusive" for s in scales) + " |"
    out = [head, "|---|" + "---|" * len(scales)]
    keys = [k for k in PAPERS if any(k in counts.get(s, {}).get("papers", {}) for s in scales)]
    for k in keys:
        cells = []
        for s in scales:
            row = counts.get(s, {}).get("papers", {}).get(k)
            cells.append(f"{row[HOLDS]} / {row[FAILS]} / {row[INCONCLUSIVE]}" if row else "–")
        out.append(f"| {PAPERS[k]} | " + " | ".join(cells) + " |")
    notes = [f"{s}: " + (f"{counts[s]['date']}, commit `{counts[s]['commit']}`" if s in counts else "not run yet")
             for s in scales]
    return "\n".join(out) + "\n\n(" + "; ".join(notes) + ")\n"


def update_verdict_summary(scale: str, claims: list[dict], date: str) -> None:
    """Record ``scale``'s counts in ``figures/verdicts.json`` and rewrite the README's verdict table
    (between its markers) when the figures are the repository's own."""
    if not claims or scale not in README_SCALES or figures_dir("cpu").resolve() != (ROOT / "figures").resolve():
        return
    store = ROOT / "figures" / "verdicts.json"
    counts = read_json(store) if store.exists() else {}
    counts[scale] = {"papers": paper_counts(claims), "date": date, "commit": git_commit() or "unknown"}
    write_json(store, counts)
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_BEGIN in text and README_END in text:
        a, b = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
        write_text(readme, text[:a] + "\n" + verdict_table(counts) + text[b:])


#: a run group whose test accuracy rose by less than this in its last epoch (mean over seeds) is near a plateau
PLATEAU_GAIN_PTS = 0.5


def training_length_markdown(runs) -> str:
    """How far each group of runs (notebook, run name) was from a plateau: its epochs, seeds, final
    test accuracy and the change of test accuracy in its last epoch (mean over seeds, points).

    ``runs``: the tidy table of ``load_runs`` (columns notebook, name, seed, epoch, metric, value).
    A run of one epoch gives no epoch-to-epoch evidence; the table says so rather than guessing."""
    acc = runs[runs["metric"] == "test_acc"]
    if acc.empty:
        return ""
    rows, near, multi = [], 0, 0
    for (nb, name), g in acc.groupby(["notebook", "name"], sort=True):
        per_seed = g.pivot_table(index="seed", columns="epoch", values="value", aggfunc="last")
        epochs = int(per_seed.columns.max())
        final = 100 * per_seed[epochs].mean()
        if epochs > 1 and epochs - 1 in per_seed.columns:
            multi += 1
            gain = 100 * (per_seed[epochs] - per_seed[epochs - 1]).mean()
            near += abs(gain) < PLATEAU_GAIN_PTS
            trend = "near a plateau" if abs(gain) < PLATEAU_GAIN_PTS else "still rising" if gain > 0 else "falling"
            change = f"{gain:+.2f} ({trend})"
        else:
            change = "n/a (one epoch)"
        rows.append(f"| `{nb}` | `{name}` | {epochs} | {len(per_seed)} | {final:.2f} | {change} |")
    head = ("## Training length: how far from a plateau\n\n"
            f"Each run group's test accuracy in its last epoch minus the epoch before (mean over seeds, "
            f"points; near a plateau when below {PLATEAU_GAIN_PTS}). {multi} of {len(rows)} groups trained "
            f"more than one epoch, {near} of those ended near a plateau; a verdict on a run still rising "
            "is a verdict at this budget.\n\n"
            "| notebook | run | epochs | seeds | final test accuracy (%) | change in the last epoch (points) |\n"
            "|---|---|---|---|---|---|\n")
    return head + "\n".join(rows) + "\n\n"


def write_report(scale: str, *, extra: str = "") -> Path:
    """Write ``REPORT.md`` for ``scale`` from every notebook's claims ledger and the figures on disk;
    returns its path."""
    claims = load_claims(scale)
    path = figures_dir(scale) / "REPORT.md"
    notes_link = Path(os.path.relpath(ROOT / "docs" / "papers" / "README.md", path.parent)).as_posix()
    m = machine()
    date = os.environ.get("SNNLIB_REPORT_DATE") or _dt.date.today().isoformat()
    head = [f"# snnlib report: which claims hold here ({scale} scale)", "",
            f"- commit: `{git_commit() or 'unknown'}`",
            f"- date: {date}",
            f"- machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, "
            f"GPU: {m['cuda'] or 'none'}",
            f"- scale: `{scale}` (configs/<notebook>/{scale}.yaml)", "",
            "Each claim: the paper's statement, what we measured, the threshold it is judged by, and the "
            "verdict. *Correctness* claims (asserted) test the implementation; *result* claims are recorded "
            "whichever way they come out. Published numbers carry their reliability tag "
            "(paper-abstract, ref-readme, ref-code, openreview, derived, unverified; legend and sources: "
            f"[docs/papers/]({notes_link})).", ""]
    body = claims_markdown(claims)
    summary = f"**At {scale} scale: {verdict_counts(claims)}**\n"
    figs = figure_links(scale)
    length = training_length_markdown(load_runs(scale))
    write_text(path, "\n".join(head) + summary + "\n" + extra + body + length + figs)
    update_verdict_summary(scale, claims, date)
    return path
