"""The claims ledger: one entry per paper claim, written to results/<notebook>/<scale>/claims.json.

Each entry: ``id`` (e.g. ``saf.grad_equals_ottt_a``), ``statement``, ``measured`` (a number
or a dict whose main number is under ``value``), ``threshold``, ``holds`` (bool), ``source``
(with its reliability tag), ``kind`` ('correctness' claims are asserted by the notebook;
'result' claims are recorded whichever way they come out), and optional ``published``.
"""
from __future__ import annotations

import datetime as _dt

from ..paths import results_dir
from .io import read_json, write_json
from .verdict import FAILS, HOLDS, Verdict

KINDS = ("correctness", "result")


def verdict_of(entry: dict) -> str:
    """The three-way verdict of a ledger entry (entries recorded before ``judge`` existed: from ``holds``)."""
    return entry.get("verdict") or (HOLDS if entry["holds"] else FAILS)


class ClaimFailed(AssertionError):
    """A correctness claim did not hold."""


class Ledger:
    """Collect claims of one notebook at one scale; ``save()`` writes them atomically."""

    def __init__(self, notebook: str, scale: str):
        self.notebook, self.scale = notebook, scale
        self.entries: dict[str, dict] = {}

    @property
    def path(self):
        return results_dir() / self.notebook / self.scale / "claims.json"

    def record(self, id: str, statement: str, measured, threshold: str, holds: bool, source: str,
               *, kind: str = "result", published=None, note: str | None = None) -> dict:
        """Record a claim. ``kind='correctness'`` also raises ``ClaimFailed`` when it does not hold."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if "." not in id:
            raise ValueError(f"claim id must look like 'paper.claim', got {id!r}")
        entry = {"id": id, "statement": statement, "measured": measured, "threshold": threshold,
                 "holds": bool(holds), "source": source, "kind": kind, "scale": self.scale,
                 "notebook": self.notebook}
        if published is not None:
            entry["published"] = published
        if note:
            entry["note"] = note
        self.entries[id] = entry
        self.save()
        if kind == "correctness" and not holds:
            raise ClaimFailed(f"{id}: {statement} -- measured {measured!r}, threshold {threshold}")
        return entry

    def judge(self, id: str, statement: str, verdict: Verdict, threshold: str, source: str, *, budget: str,
              measured=None, published=None, note: str | None = None) -> dict:
        """Record a result claim decided by ``snnlib.experiments.verdict`` (holds / does not hold /
        inconclusive at this budget). The entry keeps the verdict, its statistic, interval and
        number of seeds, and ``budget`` (e.g. "60k images x 3 epochs, batch 128")."""
        if not isinstance(verdict, Verdict):
            raise TypeError(f"verdict must be a snnlib.experiments.verdict.Verdict, got {type(verdict).__name__}")
        m = dict(measured) if isinstance(measured, dict) else {}
        if "value" in m and m["value"] != verdict.estimate:     # value sits beside the verdict's interval
            m["reported_value"] = m.pop("value")
        m["value"] = verdict.estimate
        entry = self.record(id, statement, m, threshold, verdict.holds, source, kind="result",
                            published=published, note=note)
        entry.update(verdict=verdict.verdict, statistic=verdict.statistic, rule=verdict.rule,
                     interval=list(verdict.interval) if verdict.interval is not None else None,
                     n_seeds=verdict.n, budget=budget)
        self.save()
        return entry

    def save(self) -> None:
        write_json(self.path, {"notebook": self.notebook, "scale": self.scale,
                               "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "claims": list(self.entries.values())})

    def table(self):
        import pandas as pd
        rows = []
        for e in self.entries.values():
            m = e["measured"]
            rows.append({"id": e["id"], "measured": m.get("value") if isinstance(m, dict) else m,
                         "threshold": e["threshold"], "holds": e["holds"], "kind": e["kind"]})
        return pd.DataFrame(rows)


def load_claims(scale: str) -> list[dict]:
    """Every claim written at ``scale`` by any notebook."""
    out = []
    for p in sorted(results_dir().glob(f"*/{scale}/claims.json")):
        out += read_json(p)["claims"]
    return out
