"""The minimum-latency study (``snnlib.studies.min_latency``): the notebook's unit checks, the
reference-size counts against the README, the full-model energy bound, and the ablation
comparisons judged seed by seed."""
import math

import pandas as pd
import pytest
import torch

from snnlib.experiments import load_config, published
from snnlib.experiments.verdict import HOLDS, INCONCLUSIVE, decide_comparison
from snnlib.neurons import Rectangle
from snnlib.paths import ROOT
from snnlib.studies import min_latency as ml

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(name: str, **model) -> dict:
    cfg = load_config(ROOT / "configs" / "runs" / f"{name}.yaml")
    cfg["model"].update(model)
    return cfg


# ----------------------------------------------------------------------------- unit checks
def test_unit_checks_all_hold_and_name_the_notebook_claims():
    checks = ml.unit_checks()
    assert checks["P(0,0)"] == 0 and checks["merge error"] == 0 and checks["surrogate on (0,1)"] is True
    assert 1.999 < checks["max |P_sin|"] <= 2.0 and checks["slope error"] < 1e-12
    claims = ml.unit_claims(checks)
    assert [c["id"] for c in claims] == ["minlat.projection_zero", "minlat.projection_bounded", "minlat.projection_slope",
                                         "minlat.window_merge_exact", "minlat.surrogate_rectangle"]
    assert all(c["holds"] for c in claims)


def test_unit_claims_report_a_broken_check():
    checks = {**ml.unit_checks(), "merge error": 1e-3, "surrogate on (0,1)": False}
    failed = {c["id"] for c in ml.unit_claims(checks) if not c["holds"]}
    assert failed == {"minlat.window_merge_exact", "minlat.surrogate_rectangle"}


def test_rectangle_surrogate_is_one_exactly_on_the_open_interval():
    u = torch.tensor([-1e-9, 0.0, 1e-9, 0.5, 1 - 1e-9, 1.0, 1 + 1e-9], dtype=torch.float64)
    g = Rectangle(1.0).derivative(u - 0.5)                        # threshold 0.5, width 1
    assert g.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


# ----------------------------------------------------------------------------- reference counts
def test_reference_counts_reproduce_the_readme_and_pass_the_claims():
    rows = [ml.reference_counts(_config(n)) for n in ml.README_COUNTS]
    table = ml.counts_table(rows)
    cnn = table.set_index("config").loc["minlat_cnn_cifar10"]
    assert cnn["params total (M)"] == pytest.approx(26.843098) and cnn["params used (M)"] == pytest.approx(13.885402)
    assert round(cnn["ptflops convention (MMac)"], 2) == 247.38 == cnn["README MMac"]
    assert cnn["dense MACs (M)"] < cnn["ptflops convention (MMac)"]        # ptflops also counts bias, GELU, ...
    claims = ml.reference_count_claims(table)
    assert [c["id"] for c in claims] == ["minlat.reference_counts_cnn", "minlat.reference_counts_rnn"]
    assert all(c["holds"] for c in claims)
    assert claims[1]["published"]["params"] == published("minlat.params.rnn.cifar10")
    assert ml.counts_line(table).startswith("- Reference counts reproduced: CNN 26.84 M params / 247.38 MMac")


def test_counts_of_a_config_without_readme_numbers_are_nan_and_fail_the_claim():
    small = _config("minlat_cnn_cifar10", depths=[1, 1, 1, 1], dims=[8, 8, 8, 8])
    rows = [{**ml.reference_counts(small), "config": n} for n in ml.README_COUNTS]   # wrong sizes on purpose
    table = ml.counts_table(rows + [ml.reference_counts({**small, "name": "tiny"})])
    assert math.isnan(table.set_index("config").loc["tiny", "README params (M)"])
    assert not any(c["holds"] for c in ml.reference_count_claims(table))


# ----------------------------------------------------------------------------- full-model bound
def test_full_model_bound_is_all_macs_over_real_valued_macs():
    cfg = _config("minlat_cnn_cifar10", depths=[1, 1, 1, 1], dims=[8, 16, 16, 16], reference_unused=False)
    out = ml.full_model_bound(cfg)
    # every MAC costs the same in the ANN; the real-valued ones cost it in the SNN too
    assert out["bound"] == pytest.approx(out["macs_m"] / out["real_macs_m"])
    assert 0 < out["real_macs_m"] < out["macs_m"] and out["bound"] > 1
    parts = pd.DataFrame(out["parts"])
    assert parts["ann_share"].sum() == pytest.approx(1.0)
    spike_fed = set(parts.loc[~parts.real_valued, "part"])
    assert {"mixer conv1", "mixer conv2"} <= spike_fed and all(p.startswith("mixer") for p in spike_fed)
    assert ml.full_model_bound(cfg) == out                                          # seeded: deterministic


# ----------------------------------------------------------------------------- ablations
def _abl(rows):
    return pd.DataFrame([{"variant": v, "seed": s, "test_acc": a, "train_s": 1.0, "rates": 0.1} for v, s, a in rows])


def test_compare_pairs_the_arms_by_seed():
    # rows deliberately out of seed order: pairing must go by seed, not by row
    abl = _abl([("base", 0, 0.80), ("base", 1, 0.82), ("base", 2, 0.81),
                ("off", 2, 0.75), ("off", 0, 0.76), ("off", 1, 0.79)])
    v, arms = ml.compare(abl, "base", "off")
    ref = decide_comparison([0.80, 0.82, 0.81], [0.76, 0.79, 0.75], paired=True)
    assert v == ref and v.statistic == "paired difference" and v.n == 3
    assert v.estimate == pytest.approx(0.81 - 0.7666666666666666)
    assert arms == {"a": pytest.approx(0.81), "b": pytest.approx(0.7666666666666666), "seeds": 3}


def test_compare_with_one_seed_is_inconclusive_and_keeps_the_difference():
    v, arms = ml.compare(_abl([("base", 0, 0.424), ("off", 0, 0.342)]), "base", "off")
    assert v.verdict == INCONCLUSIVE and v.interval is None
    assert v.estimate == 0.424 - 0.342 and arms == {"a": 0.424, "b": 0.342, "seeds": 1}


def test_compare_refuses_arms_with_different_seeds_or_no_runs():
    abl = _abl([("base", 0, 0.8), ("base", 1, 0.8), ("off", 0, 0.7), ("off", 2, 0.7)])
    with pytest.raises(ValueError, match="same seeds"):
        ml.compare(abl, "base", "off")
    with pytest.raises(ValueError, match="no ablation runs for variant 'missing'"):
        ml.compare(abl, "base", "missing")


def test_a_consistent_gain_over_seeds_holds():
    abl = _abl([("base", s, 0.80 + 0.01 * s) for s in range(4)] + [("off", s, 0.70 + 0.01 * s + 0.001 * (s % 2))
                                                                    for s in range(4)])
    v, _ = ml.compare(abl, "base", "off")
    assert v.verdict == HOLDS and v.interval[0] > 0


def test_ablation_table_is_relative_to_the_first_variant():
    recs = [{"seed": s, "final": {"test_acc": a, "mean_firing_rate": 0.2}, "wall_time_s": 2.0}
            for s, a in [(0, 0.80), (1, 0.82), (0, 0.70), (1, 0.74)]]
    abl = ml.ablation_frame(recs, ["base", "base", "off", "off"])
    t = ml.ablation_table(abl)
    assert list(t.index) == ["base", "off"] and list(t.seeds) == [2, 2]
    assert t.loc["off", "vs base (pp)"] == pytest.approx(-9.0) and t.loc["base", "vs base (pp)"] == 0
    with pytest.raises(ValueError, match="3 ablation records for 4 variant labels"):
        ml.ablation_frame(recs[:3], ["base", "base", "off", "off"])


# ----------------------------------------------------------------------------- reporting
def test_budget_and_summary_lines_say_what_was_measured():
    cfg = _config("minlat_cnn_fmnist")
    cfg["data"].update(subset=512, test_subset=500)
    assert ml.budget(cfg, [0, 1]) == "512 fashion_mnist images x 1 epoch(s), batch 64, 2 seed(s); 500 test images"
    assert ml.pp(float("nan")) == "n/a" and ml.pp(None) == "n/a" and ml.pp(0.4161) == "41.61"
    entry = {"measured": {"value": 0.082}, "interval": [0.01, 0.15], "n_seeds": 3, "verdict": HOLDS}
    assert ml.comparison_line("recurrence vs off", entry) == \
        "- recurrence vs off: +8.20 pp (95% interval [1.00, 15.00] pp) -> holds here."
