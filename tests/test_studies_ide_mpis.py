"""The IDE -> MPIS-SNN study (``snnlib.studies.ide_mpis``): its measurements, run configs and claim values.

Equivalences in float64 on a small feedback net (16 hidden units, 4x5 inputs, 3 classes), fixed seeds.
"""
import math

import pytest
import torch

from snnlib.models import build_model
from snnlib.studies import ide_mpis as S

SMALL = {"channels": 1, "size": (4, 5), "num_classes": 3}
MPIS_BUDGET = {"epochs": 1, "subset": 256, "test_subset": 256, "batch_size": 64, "lr": 0.05, "T": 5, "stem": 4,
               "channels": [8, 8, 16], "tol": 1.0e-3, "schedule": {"name": "cosine", "milestones": [], "warmup_iters": 0}}


def small_net(dropout=0.0, **kw):
    torch.manual_seed(1)
    return build_model({"name": "ide_fc", "hidden": 16, "dropout": dropout, **kw}, SMALL)


def small_batch(B=6):
    g = torch.Generator().manual_seed(2)
    return torch.randn(B, 1, 4, 5, generator=g), torch.randint(0, 3, (B,), generator=g)


# -- measurements ---------------------------------------------------------------------------------
def test_rate_fixed_point_is_a_fixed_point_of_the_rate_map(f64):
    net = small_net().eval()
    x, _ = small_batch()
    a, drive, like = S.rate_fixed_point(net, x)
    snn = net.snn
    with torch.no_grad():
        fa = snn.pack(snn.rate_map(snn.unpack(a, like), drive))
    assert float((fa - a).norm() / a.norm()) < 1e-9


def test_forward_convergence_error_falls_with_T_for_IF_neurons(f64):
    x, _ = small_batch()
    rows = S.forward_convergence(small_net(), x, [5, 50, 500])
    errors = [r["rel_error"] for r in rows]
    assert [r["T"] for r in rows] == [5, 50, 500]
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.01


def test_forward_convergence_refuses_event_inputs(f64):
    torch.manual_seed(0)
    net = build_model({"name": "ide_fc", "hidden": 8}, {**SMALL, "is_events": True})
    x = torch.rand(2, 1, 1, 4, 5)              # one event frame [B, T, C, H, W]
    with pytest.raises(ValueError, match="static inputs"):
        S.forward_convergence(net, x, [3])


def test_backward_traces_broyden_solves_the_implicit_system_and_iter_the_wrong_one(f64):
    x, y = small_batch()
    solvers = {"Broyden": ("broyden", {}), S.ITER_SOLVER: ("ide_iter", {})}
    out = S.backward_traces(small_net(dropout=0.2), x, y, 10, solvers, max_iter=60)
    err = {(r["solver"], r["target"]): r["rel_error"] for r in out["errors"]}
    assert err[("Broyden", S.IMPLICIT_TARGET)] < 1e-8
    it = S.iter_errors(out["errors"])
    assert it[S.ITER_TARGET] < 1e-6 < 1e-2 < it[S.IMPLICIT_TARGET]
    assert {r["solver"] for r in out["traces"]} == set(solvers)
    assert all(r["iteration"] >= 1 for r in out["traces"])


def test_implicit_gradient_equals_the_dense_solve_and_finite_differences(f64):
    net, (x, y) = small_net(dropout=0.2), small_batch()
    rows = {r["gradient"]: r for r in S.gradient_comparison(
        net, x, y, 20, {"broyden": ("broyden", {"max_iter": 100, "tol": 1e-12}), "one_step": ("one_step", {})})}
    assert rows["broyden"]["cosine"] >= 0.9999 and rows["broyden"]["rel_error"] < 1e-6
    assert -1.0 <= rows["one_step"]["cosine"] <= 1.0
    fd = S.finite_difference_check(net, x, y, n_entries=4)
    assert fd["max_rel_error"] < 1e-4 and len(fd["entries"]) == 4


def test_gradient_quality_restores_the_default_dtype():
    assert torch.get_default_dtype() == torch.float32
    out = S.gradient_quality(T=5, fd_entries=1)
    assert torch.get_default_dtype() == torch.float32
    assert [r["gradient"] for r in out["rows"]] == list(S.GRADIENT_BACKWARDS)
    assert math.isfinite(out["fd_max_rel_error"])


def test_released_mpis_forward_is_T_invariant_up_to_c_T():
    x = torch.rand(2, 1, 28, 28)
    rows = S.released_rows({"stem": 2, "channels": [2, 2, 4]}, x, Ts=(1, 3))
    assert [r["T"] for r in rows] == [1, 3]
    assert all(r["max_abs_diff_scaled"] == 0 and r["prediction_agreement"] == 1.0 for r in rows)


# -- run configs ----------------------------------------------------------------------------------
def test_backward_variants_drop_the_solver_options_of_solverless_backwards():
    cfg = {"method": "ide", "method_args": {"backward": "broyden", "max_iter": 30, "tol": 1e-6, "stop_mode": "abs",
                                            "solver_options": {"memory": 27}}}
    v = S.backward_variants(cfg, ["broyden", "bptt", "one_step"])
    assert v["broyden"]["method_args"] == {**cfg["method_args"], "warn_tol": 1e9}
    for bw in ("bptt", "one_step"):
        assert v[bw]["method_args"] == {"backward": bw, "warn_tol": 1e9}
    assert cfg["method_args"]["backward"] == "broyden"          # the input is not changed


def test_mpis_config_variants():
    one_step = S.mpis_config(MPIS_BUDGET, "one_step", 1)
    assert one_step["name"] == "mpis_one_step" and one_step["seed"] == 1
    assert one_step["method_args"] == {"backward": "one_step"}
    released = S.mpis_config(MPIS_BUDGET, "released", 0)
    assert released["model"]["fusion"] == "membrane_snn_only" and released["method_args"]["rate"] == "step0"
    two = S.mpis_config(MPIS_BUDGET, "two_streams", 0)
    assert two["method_args"] == {"backward": "broyden", "max_iter": 30, "tol": 1e-3}
    assert two["schedule"]["name"] == "cosine" and two["model"]["channels"] == [8, 8, 16]
    with pytest.raises(ValueError, match="unknown MPIS variant 'three'"):
        S.mpis_config(MPIS_BUDGET, "three", 0)


def test_ide_same_budget_takes_the_mpis_budget_and_ide_tolerance():
    o = S.ide_same_budget_overrides(MPIS_BUDGET, {"tol": 4.5e-8, "stop_mode": "abs"}, 2)
    assert o["name"] == "ide_f400_same_budget" and o["seed"] == 2 and o["model"]["leak"] == 1.0
    assert o["data"] == {"subset": 256, "test_subset": 256, "batch_size": 64}
    assert o["method_args"]["tol"] == 4.5e-8 and o["method_args"]["stop_mode"] == "abs"
    assert o["schedule"]["name"] == "cosine" and o["schedule"]["gamma"] == 0.1   # mpis_fmnist.yaml's, overridden


def test_parameter_table_matches_the_published_count_of_f400():
    (row,) = S.parameter_table([S.RUN_CONFIGS / "ide_fmnist_f400.yaml"])
    assert row["config"] == "ide_fmnist_f400" and row["matches"] is True


# -- claim values ---------------------------------------------------------------------------------
def test_convergence_summary_reads_IF_at_the_smallest_and_largest_T():
    rows = [{"variant": v, "T": T, "rel_error": e} for v, T, e in
            [("IF", 10, 0.1), ("IF", 5, 0.2), ("IF", 100, 0.01), ("LIF 0.95", 100, 0.05), ("LIF 0.95", 5, 0.3)]]
    assert S.convergence_summary(rows) == {"value": 0.01, "T": 100, "error_at_T_min": 0.2, "lif_0.95_at_T_max": 0.05}


def test_memory_summary_ratios():
    rows = [{"net": "n", "backward": bw, "T": T, "total_bytes": b, "saved_peak_bytes": b // 2}
            for bw, per_T in (("broyden", 100), ("bptt", 10)) for T in (1, 5, 30)
            for b in [per_T * (T if bw == "bptt" else 1) + 50]]
    m = S.memory_summary(rows, ["n"], [1, 5, 30])
    assert m["value"] == 1.0 and m["T"] == [5, 30]
    assert m["bptt_total_ratio"] == {"n": 350 / 100}
    assert m["bptt_saved_ratio"] == {"n": 175 / 50}
    assert m["bptt_total_ratio_T30_over_T5"] == {"n": 3.5}
    assert "n 3.50" in S.memory_note(m)
    assert S.memory_summary(rows, ["n"], [1, 5])["bptt_total_ratio_T30_over_T5"] == {}


def record(name, seed, accs, rates=None):
    return {"name": name, "seed": seed,
            "history": [{"epoch": e + 1, "test_acc": a, "firing_rates": rates or {}} for e, a in enumerate(accs)]}


def test_per_seed_values_are_in_seed_order():
    runs = [record("a", 2, [0.1, 0.5]), record("b", 0, [0.2, 0.3]), record("a", 0, [0.3, 0.7], {"l1": 0.1, "l2": 0.3})]
    assert S.final_accuracies(runs, "a") == [0.7, 0.5]
    assert S.epoch_accuracies(runs, "a", 1) == [0.3, 0.1]
    assert S.firing_rate_means(runs[2:], "a") == pytest.approx([0.2])
    with pytest.raises(ValueError, match="no run called 'c'"):
        S.final_accuracies(runs, "c")
    rows = [{"name": "a", "T": 2, "seed": 1, "test_acc": 0.4}, {"name": "a", "T": 2, "seed": 0, "test_acc": 0.6},
            {"name": "a", "T": 5, "seed": 0, "test_acc": 0.9}]
    assert S.accuracies_at_T(rows, "a", 2) == [0.6, 0.4]



def test_budget_in_words():
    assert S.budget(MPIS_BUDGET, [0, 1]) == "256 images x 1 epochs, batch 64, 2 seeds"
    assert S.budget({"subset": None, "epochs": 3, "batch_size": 128}, [0]) == "60k images x 3 epochs, batch 128, 1 seeds"
