"""The summary study (notebook 05): config builders, memory rows and the tables it shows."""
import math

import pandas as pd
import pytest
import torch

from snnlib.studies import summary
from snnlib.studies.measure import memory_vs_T

BPTT = {"config": "bptt_conv_fmnist", "overrides": {"model": {"channels": [4, 8]}}}
BUDGET = {"subset": 300, "test_subset": 100, "epochs": 2, "max_iters_per_epoch": 3}


def test_base_cfg_keeps_the_method_and_applies_the_entrys_overrides():
    cfg = summary.base_cfg(BPTT)
    assert cfg["method"] == "bptt" and cfg["T"] == 4
    assert cfg["model"]["channels"] == [4, 8]
    assert cfg["model"]["name"] == "conv_snn" and cfg["model"]["pool"] == "avg"   # rest of the model kept


def test_budget_cfg_applies_the_budget_and_the_seed():
    cfg = summary.budget_cfg(BPTT, BUDGET, seed=3)
    assert cfg["name"] == "bptt_conv_fmnist" and cfg["seed"] == 3       # the config's name: runs are shared
    assert cfg["epochs"] == 2 and cfg["max_iters_per_epoch"] == 3
    assert cfg["data"]["subset"] == 300 and cfg["data"]["test_subset"] == 100
    assert cfg["data"]["batch_size"] == 128 and cfg["T"] == 4            # the method's own batch and T
    assert cfg["model"]["channels"] == [4, 8]


def test_budget_without_iteration_cap_trains_full_epochs():
    cfg = summary.budget_cfg(BPTT, {k: v for k, v in BUDGET.items() if k != "max_iters_per_epoch"}, seed=0)
    assert cfg["max_iters_per_epoch"] is None


def test_budget_configs_list_every_method_and_seed_methods_outermost():
    methods = {"A": BPTT, "B": {"config": "ottt_a_fmnist"}}
    got = summary.budget_configs(methods, BUDGET, seeds=[0, 1])
    assert [(label, c["seed"]) for label, c in got] == [("A", 0), ("A", 1), ("B", 0), ("B", 1)]
    assert got[2][1]["method"] == "ottt_a"


@pytest.mark.parametrize("budget, spec, words", [
    ({"subset": 1, "epochs": 1}, BPTT, "test_subset"),
    (BUDGET, {"overrides": {}}, "config"),
    (BUDGET, {"config": "bptt_conv_fmnist", "model": {}}, "only 'config' and 'overrides'"),
])
def test_incomplete_budget_or_method_entry_is_refused(budget, spec, words):
    with pytest.raises(ValueError, match=words):
        summary.budget_cfg(spec, budget, seed=0)


def test_memory_vs_T_gives_one_row_per_variant_and_T_in_integer_bytes():
    cfg = summary.base_cfg(BPTT)
    batch = (torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))
    rows = memory_vs_T({"narrow": cfg, "wide": summary.base_cfg({**BPTT, "overrides": {"model": {"channels": [8, 8]}}})},
                       [1, 2], batch=batch)
    assert [(r["variant"], r["T"]) for r in rows] == [("narrow", 1), ("narrow", 2), ("wide", 1), ("wide", 2)]
    for r in rows:
        assert r["method"] == "bptt"
        for k in ("saved_peak_bytes", "state_bytes", "solver_bytes", "total_bytes"):
            assert isinstance(r[k], int) and r[k] >= 0
    narrow = {r["T"]: r["saved_peak_bytes"] for r in rows if r["variant"] == "narrow"}
    assert narrow[2] > narrow[1]                                      # BPTT keeps every step
    assert rows[2]["saved_peak_bytes"] > rows[0]["saved_peak_bytes"]   # wider net, more activations


def test_memory_vs_T_refuses_no_variants():
    with pytest.raises(ValueError, match="at least one variant"):
        memory_vs_T({}, [1])


def test_memory_rows_measure_every_method_at_every_T_but_single_step_at_T_1(monkeypatch):
    calls = []

    def fake_memory_vs_T(variants, Ts, *, batch_size):
        calls.append((list(variants), [c["method"] for c in variants.values()], list(Ts), batch_size))
        return [{"variant": v, "T": T, "total_bytes": 1} for v in variants for T in Ts]

    monkeypatch.setattr(summary, "memory_vs_T", fake_memory_vs_T)
    methods = {"BPTT": BPTT, "single-step": {"config": "minlat_cnn_fmnist"}}
    rows = summary.memory_rows(methods, [1, 2], batch_size=8)
    assert calls == [(["BPTT"], ["bptt"], [1, 2], 8), (["single-step"], ["single_step"], [1], 8)]
    assert [(r["variant"], r["T"]) for r in rows] == [("BPTT", 1), ("BPTT", 2), ("single-step", 1)]


def test_growth_is_the_ratio_of_largest_to_smallest_T():
    mem = pd.DataFrame([{"variant": "a", "T": 1, "total_bytes": 100}, {"variant": "a", "T": 2, "total_bytes": 150},
                        {"variant": "a", "T": 4, "total_bytes": 400}, {"variant": "b", "T": 1, "total_bytes": 7}])
    g = summary.growth(mem, [1, 2, 4])
    assert list(g.columns) == [1, 4, "ratio"]
    assert g.loc["a", "ratio"] == 4.0
    assert math.isnan(g.loc["b", "ratio"])


def _record(seed, acc, rate, batch=128):
    return {"seed": seed, "T": 4, "config": {"data": {"batch_size": batch}},
            "history": [{"test_acc": 0.1, "time_per_batch_s": 9.0},
                        {"test_acc": acc, "time_per_batch_s": 0.5 + seed, "mean_firing_rate": rate}]}


def test_budget_table_takes_each_runs_last_epoch_and_aggregate_summarises_per_method():
    table = summary.budget_table(["A", "A", "B"], [_record(0, 0.6, 0.1), _record(1, 0.8, 0.3), _record(0, 0.5, 0.2, 64)])
    assert table.test_acc.tolist() == [0.6, 0.8, 0.5]
    agg = summary.aggregate(table, {"A": 2.0, "B": 1.5})
    assert list(agg.index) == ["A", "B"]
    assert agg.loc["A", "acc_mean"] == pytest.approx(0.7)
    assert agg.loc["A", "acc_sd"] == pytest.approx(0.1414213562)
    assert math.isnan(agg.loc["B", "acc_sd"])                        # one seed: no spread
    assert agg.loc["A", "time_per_batch_s"] == 1.0 and agg.loc["B", "batch"] == 64
    assert agg.loc["A", "memory_MiB"] == 2.0 and agg.loc["A", "firing_rate"] == pytest.approx(0.2)


def test_budget_table_needs_one_label_per_record():
    with pytest.raises(ValueError):
        summary.budget_table(["A"], [_record(0, 0.6, 0.1), _record(1, 0.8, 0.3)])


def test_claims_table_shows_the_measured_value_and_the_verdict():
    claims = [{"notebook": "00_x", "id": "a.b", "measured": {"value": 0.5, "sd": 0.1}, "threshold": ">= 0.4",
               "holds": False, "kind": "result", "verdict": "inconclusive at this budget", "budget": "1 seed"},
              {"notebook": "01_y", "id": "c.d", "measured": 3, "threshold": "== 3", "holds": True,
               "kind": "correctness"}]
    t = summary.claims_table(claims)
    assert t.measured.tolist() == [0.5, 3]
    assert t.verdict.iloc[0] == "inconclusive at this budget" and pd.isna(t.verdict.iloc[1])   # correctness: none
    assert list(t.columns[:6]) == ["notebook", "id", "measured", "threshold", "holds", "kind"]


def test_memory_at_own_T_measures_each_method_at_its_configured_T_in_MiB(monkeypatch):
    seen = {}

    def fake_memory_vs_T(variants, Ts, *, batch_size):
        (label, cfg), = variants.items()
        seen[label] = list(Ts)
        return [{"variant": label, "T": Ts[0], "total_bytes": 3 * 2 ** 20}]

    monkeypatch.setattr(summary, "memory_vs_T", fake_memory_vs_T)
    got = summary.memory_at_own_T({"BPTT": BPTT, "SPIDE": {"config": "spide_fmnist_fc"}}, batch_size=8)
    assert seen == {"BPTT": [4], "SPIDE": [30]}
    assert got == {"BPTT": 3.0, "SPIDE": 3.0}


def test_the_budget_in_words_names_images_epochs_cap_and_seeds():
    assert summary.budget_words({"subset": None, "epochs": 1}, [0, 1]) == "60000 training images x 1 epoch(s), 2 seed(s)"
    assert summary.budget_words(BUDGET, [0]) == "300 training images x 2 epoch(s), at most 3 batches per epoch, 1 seed(s)"


def test_a_method_on_the_same_config_and_budget_as_another_notebook_shares_its_run():
    from snnlib.experiments.config import config_hash
    from snnlib.studies.context import Study
    mine = summary.budget_cfg({"config": "minlat_cnn_fmnist"}, {"subset": None, "test_subset": None, "epochs": 1}, 2)
    theirs = Study.config("minlat_cnn_fmnist", {"data": {"subset": None, "test_subset": None}}, seed=2)
    assert config_hash(mine) == config_hash(theirs)
