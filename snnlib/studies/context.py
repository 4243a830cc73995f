"""``Study``: one notebook's ledger, figures, runs, configs and data, with its scale given once.

    nb = Study("01_ide_mpis", SCALE)
    cfg = nb.config("ide_fmnist_f400", {"epochs": 1})     # configs/runs/<base>.yaml + overrides
    records = nb.runs([cfg])                             # train or load; saved to the run table
    nb.judge("ide.fmnist_accuracy", ...)                 # the claims ledger (``nb.ledger``)
    nb.figure(fig, "accuracy_vs_T")                      # figures[/<scale>]/<notebook>/<name>.png|pdf
"""
from __future__ import annotations

import torch

from ..data import get_dataset
from ..experiments.cache import memo
from ..experiments.claims import Ledger
from ..experiments.config import load_yaml, resolve
from ..experiments.plots import save_figure, style
from ..pipeline.runs import run_many
from ..experiments.tables import save_runs
from ..paths import ROOT, SCALES

RUN_CONFIGS = ROOT / "configs" / "runs"


class Study:
    """A notebook at one scale. ``name`` is the notebook's stem (``"01_ide_mpis"``)."""

    def __init__(self, name: str, scale: str, *, seed: int = 0):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        self.name, self.scale = name, scale
        self.ledger = Ledger(name, scale)
        style()
        torch.manual_seed(seed)

    # -- configs and runs -------------------------------------------------------------------
    @staticmethod
    def config(base: str, *overrides: dict, **top) -> dict:
        """``configs/runs/<base>.yaml`` with nested ``overrides`` applied in order, then the
        top-level keys ``top`` (e.g. ``seed=1``); resolved and validated."""
        cfg = resolve(load_yaml(RUN_CONFIGS / f"{base}.yaml"))
        for o in overrides:
            cfg = resolve(cfg, o)
        return resolve(cfg, top) if top else cfg

    def runs(self, cfgs: list[dict], *, label: str | None = None, save: bool = True) -> list[dict]:
        """Train (or load) every config; their records, also added to the notebook's run table."""
        records = run_many(list(cfgs), label=label or self.name)
        if save:
            save_runs(records, self.name, self.scale)
        return records

    def memo(self, name: str, params: dict | None, fn):
        """``fn()`` computed once per (name, params, code version) and cached as JSON."""
        return memo(name, params, fn)

    # -- data -------------------------------------------------------------------------------
    @staticmethod
    def batch(n: int, dataset: str = "fashion_mnist", split: str = "test", seed: int = 0, **kw):
        """The first ``n`` samples of a deterministic ``seed``-subset: ``(x, y)`` tensors."""
        ds = get_dataset(dataset, split, subset=n, seed=seed, **kw)
        return ds.__getitems__(list(range(n)))

    # -- claims and figures -----------------------------------------------------------------
    def judge(self, *args, **kw) -> dict:
        """``Ledger.judge``: a result claim with its three-way verdict, interval, seeds and budget."""
        return self.ledger.judge(*args, **kw)

    def record(self, *args, **kw) -> dict:
        """``Ledger.record``: a correctness claim (asserted) or a deterministic measurement."""
        return self.ledger.record(*args, **kw)

    def figure(self, fig, name: str) -> list[str]:
        """Save ``fig`` as ``figures[/<scale>]/<notebook>/<name>.png`` and ``.pdf``; shows it inline."""
        return save_figure(fig, self.name, name, self.scale)
