"""Run records -> one tidy table (method, dataset, T, seed, epoch, metric, value)."""
from __future__ import annotations

import pandas as pd

from ..paths import results_dir
from .io import write_text

EPOCH_METRICS = ("train_loss", "train_acc", "test_acc", "test_loss", "time_per_batch_s", "mean_firing_rate")
FINAL_MEMORY = ("saved_peak_bytes", "state_bytes", "solver_bytes", "total_bytes")
COLUMNS = ["method", "dataset", "T", "seed", "epoch", "metric", "value", "name", "model"]


def tidy(records: list[dict]) -> pd.DataFrame:
    """Long table: one row per (run, epoch, metric). Memory and wall time sit at the last epoch."""
    rows = []
    for r in records:
        base = {"method": r["method"], "dataset": r["dataset"], "T": r["T"], "seed": r["seed"],
                "name": r.get("name") or r["method"], "model": r["model"]}
        for h in r["history"]:
            for m in EPOCH_METRICS:
                if h.get(m) is not None:
                    rows.append({**base, "epoch": h["epoch"], "metric": m, "value": float(h[m])})
            for layer, rate in (h.get("firing_rates") or {}).items():
                rows.append({**base, "epoch": h["epoch"], "metric": f"rate:{layer}", "value": float(rate)})
        last = r["history"][-1]["epoch"] if r["history"] else 0
        for m in FINAL_MEMORY:
            if r.get("train_memory") and r["train_memory"].get(m) is not None:
                rows.append({**base, "epoch": last, "metric": m, "value": float(r["train_memory"][m])})
        rows.append({**base, "epoch": last, "metric": "wall_time_s", "value": float(r["wall_time_s"])})
    return pd.DataFrame(rows, columns=COLUMNS)


def final(df: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """The last epoch's value of ``metric`` per run."""
    d = df[df.metric == metric]
    idx = d.groupby(["name", "method", "dataset", "T", "seed"])["epoch"].idxmax()
    return d.loc[idx].reset_index(drop=True)


def save_runs(records: list[dict], notebook: str, scale: str, *, append: bool = True) -> pd.DataFrame:
    """Write the tidy table of a notebook's runs to ``results/<notebook>/<scale>/runs.csv``
    (merged with what the notebook saved before unless ``append=False``); ``05_summary`` reads them all."""
    path = results_dir() / notebook / scale / "runs.csv"
    df = tidy(records)
    df.insert(0, "notebook", notebook)
    if append and path.exists():
        df = pd.concat([pd.read_csv(path), df]).drop_duplicates(
            subset=["notebook", "name", "method", "dataset", "T", "seed", "epoch", "metric"], keep="last")
    write_text(path, df.to_csv(index=False))
    return df


def load_runs(scale: str) -> pd.DataFrame:
    """Every notebook's saved runs at ``scale`` as one tidy table (empty when none)."""
    parts = [pd.read_csv(p) for p in sorted(results_dir().glob(f"*/{scale}/runs.csv"))]
    if not parts:
        return pd.DataFrame(columns=["notebook"] + COLUMNS)
    return pd.concat(parts, ignore_index=True)
