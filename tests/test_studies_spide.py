"""SPIDE's study (``snnlib.studies.spide``): the spike-based gradient against the exact implicit
one on a small float64 feedback net, the modified reset's rate error, and the numbers behind the
notebook's claims (energy of the passes, memory against T_b, the paired accuracy table)."""
import math

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from snnlib.equilibrium.spiking_backward import cosine, dense_solve, layer_masks, stream_transposes
from snnlib.metrics.ops import E_AC_PJ, E_MAC_PJ
from snnlib.studies import spide as S


@pytest.fixture
def small(f64):
    """The notebook's small float64 net (20 -> 48 -> 32, feedback 32 -> 48) and a batch of 16."""
    return S.small_net(), S.small_batch(16)


def test_layerwise_exact_backward_equals_ide_exact_at_the_fixed_point(small):
    net, (x, y) = small
    ide = S.batch_gradients(net, x, y, T=1, backward="exact", state="exact")
    layer = S.batch_gradients(net, x, y, T=1, backward="spide_exact", state="exact")
    for a, b in zip(ide, layer):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-8)
    assert max(float(a.abs().max()) for a in ide) > 1e-4          # a real gradient, not zeros


def test_spike_gradient_reaches_the_exact_implicit_gradient_and_rises_with_T_b(small):
    net, (x, y) = small
    rows = S.spike_gradient_sweep(net, x, y, T=30, T_bs=[10, 30, 100, 250], scales=[10.0], state="exact")
    cos = [r["cos_ide_exact"] for r in rows]
    assert cos[-1] >= 0.99                                        # T_b = 250
    assert all(b > a for a, b in zip(cos, cos[1:]))               # rises with T_b
    err = [r["rel_err_layer_exact"] for r in rows]
    assert err[-1] < err[1] / 4                                    # roughly 1/T_b: 30 -> 250


def test_a_too_large_scale_saturates_the_backward_neurons(small):
    net, (x, y) = small
    rows = S.spike_gradient_sweep(net, x, y, T=30, T_bs=[100, 250], scales=[10.0, 1000.0], state="exact")
    big = [r for r in rows if r["scale"] == 1000.0]
    good = [r for r in rows if r["scale"] == 10.0]
    assert big[0]["saturated"] > 0.1 and big[-1]["cos_ide_exact"] < 0.95
    assert abs(big[-1]["cos_ide_exact"] - big[0]["cos_ide_exact"]) < 0.01     # no gain from T_b
    assert good[-1]["cos_ide_exact"] > big[-1]["cos_ide_exact"] + 0.04


def test_spike_backward_through_equilibrium_forward_matches_the_sweep(small):
    net, (x, y) = small
    direct = S.batch_gradients(net, x, y, T=30, backward="spike", T_b=100, scale=10.0)
    rows = S.spike_gradient_sweep(net, x, y, T=30, T_bs=[100], scales=[10.0], state="snn")
    ref = S.batch_gradients(net, x, y, T=30, backward="spide_exact")
    assert cosine(direct, ref) == pytest.approx(rows[0]["cos_layer_exact"], abs=1e-12)


def test_modified_reset_halves_the_rate_error_at_T_30(f64):
    net, (x, _) = S.small_net(), S.small_batch(32)
    rows = {(r["variant"], r["T"]): r for r in S.rate_error(net, x, [30])}
    zero, mod = rows[("zero", 30)], rows[("modified", 30)]
    assert mod["mean_abs"] <= 0.6 * zero["mean_abs"]
    assert zero["signed_mean"] < -0.5 * zero["mean_abs"]           # reset to 0 underestimates
    assert abs(mod["signed_mean"]) < 0.2 * mod["mean_abs"]         # rounding: no bias
    assert (net.snn.v_th, net.snn.u_rest) == (1.0, -1.0)           # restored
    summary = S.modified_reset_summary(pd.DataFrame(rows.values()))
    assert summary["T"] == 30 and summary["value"] == pytest.approx(mod["mean_abs"] / zero["mean_abs"])


def test_lif_spike_backward_has_an_error_floor_of_order_one_minus_lambda(f64):
    """Leaky ternary neurons (lambda-weighted rates) track the LIF implicit gradient up to a floor
    that shrinks with 1 - lambda, like the LIF forward rate."""
    x, y = S.small_batch(16)
    cos = {}
    for leak in (0.99, 0.95):
        net = S.small_net(leak=leak)
        ref = S.batch_gradients(net, x, y, T=1, backward="exact", state="exact")
        for T_b in (100, 400):
            gs = S.batch_gradients(net, x, y, T=1, backward="spike", state="exact", T_b=T_b, scale=10.0)
            cos[leak, T_b] = cosine(gs, ref)
    assert cos[0.99, 400] > 0.99 and cos[0.99, 400] > cos[0.99, 100]
    assert cos[0.95, 400] < cos[0.99, 400] - 0.03
    # the floor, not T_b, limits it: 4x more steps remove less than half of the error
    assert (1 - cos[0.95, 400]) > 0.5 * (1 - cos[0.95, 100])


def test_input_map_gradient_is_the_outer_product_of_backward_rate_and_input(small):
    net, (x, y) = small
    grads = S.batch_gradients(net, x, y, T=1, backward="spide_exact", state="exact")
    names = [n for n, p in net.snn.named_parameters()]
    w_in = grads[names.index("streams.0.input_map.0.1.weight")]
    # recompute (1/V) (m_1 * beta_1) x^T from the exact state and the dense per-layer solve
    sim = S.exact_state(net, net.snn.drive([x]))
    a = sim.last[0].detach().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(net.readout([a]), y), a)
    masks = layer_masks(sim.rates[0])
    beta, _ = dense_solve(g, stream_transposes(net.snn.streams[0], [r.shape for r in sim.rates[0]]), masks,
                          V=net.snn.V)
    expected = (masks[0] * beta[0] / net.snn.V).T @ x.flatten(1)
    assert torch.allclose(w_in, expected, atol=1e-12)


def test_the_sweep_table_and_its_claim_summaries(f64):
    rows = pd.DataFrame(S.sweep_rows([30, 100], [10.0, 1000.0], 8))
    assert set(rows.backward_reset) == {S.SPIDE_RESET, S.ZERO_RESET}
    assert len(rows) == 2 * 2 * 2 + 2                               # (exact, snn) x scales x T_b + reset-to-0 arm
    cos, rising = S.grad_cosine_summary(rows)
    assert cos["scale"] == 10.0 and cos["T_b"] == 100 and rising
    sat = S.saturation_summary(rows)
    assert sat["scale"] == 1000.0 and sat["saturated"] > 0.1
    reset = S.backward_reset_summary(rows)
    assert reset["T_b"] == 30 and reset["value"] == pytest.approx(reset["err_modified"] / reset["err_reset0"])


def test_exact_state_rejects_a_bad_state_name(small):
    net, (x, y) = small
    with pytest.raises(ValueError, match="state must be"):
        S.batch_gradients(net, x, y, T=5, backward="exact", state="converged")


def test_passes_energy_prices_spikes_as_accumulates_and_the_rest_as_macs():
    counts = {"forward_sops": 100.0, "backward_sops": 50.0, "input_macs": 20.0, "readout_macs": 5.0,
              "dense_forward_macs": 200.0}
    e = S.passes_energy(counts)
    assert e["spike_passes_uJ"] == pytest.approx((E_AC_PJ * 150 + E_MAC_PJ * 30) * 1e-6)
    assert e["ann_passes_uJ"] == pytest.approx(E_MAC_PJ * 400 * 1e-6)
    assert e["value"] == pytest.approx(e["spike_passes_uJ"] / e["ann_passes_uJ"])


def test_memory_of_a_spide_step_does_not_grow_with_T_b():
    cfg = {"name": "mem", "method": "spide", "method_args": {"T_b": 5, "scale": 10.0},
           "model": {"name": "spide_fc", "hidden": [12, 8]}, "data": {"name": "fashion_mnist"}, "T": 4}
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    rows = S.memory_vs_Tb(cfg, [5, 50], (x, y))
    assert [r["T_b"] for r in rows] == [5, 50] and all(r["T"] == 4 for r in rows)
    summary = S.memory_summary(pd.DataFrame(rows))
    assert summary["value"] == 1.0 and summary["bytes"][5] > 0


def _record(method, seed, acc, rates=None):
    return {"method": method, "seed": seed, "name": method, "history": [
        {"epoch": 1, "test_acc": acc, "step_stats": {"rates": rates or {}}}]}


def test_accuracy_summary_pairs_the_arms_by_seed_in_points():
    spide = [_record("spide", 1, 0.5), _record("spide", 0, 0.25)]
    ide = [_record("ide", 0, 0.5), _record("ide", 1, 0.75)]
    table, measured, s_pts, i_pts = S.accuracy_summary(spide, ide)
    assert s_pts == [25.0, 50.0] and i_pts == [50.0, 75.0]          # seed 0, then seed 1
    assert measured["spide_acc"] == 0.375 and measured["ide_acc"] == 0.625 and measured["seeds"] == 2
    assert measured["spide_sd"] == pytest.approx(math.sqrt(2 * 0.125 ** 2))
    with pytest.raises(ValueError, match="share their seeds"):
        S.accuracy_summary(spide, ide[:1])


def test_training_firing_splits_phases_and_summarises_spide_per_seed():
    recs = [_record("spide", 0, 0.5, {"forward.layer1": 0.2, "backward.layer1": 0.1}),
            _record("spide", 1, 0.5, {"forward.layer1": 0.4, "backward.layer1": 0.3}),
            _record("ide", 0, 0.5, {"layer1": 0.9})]
    fire = pd.DataFrame(S.training_firing(recs))
    assert set(zip(fire.method, fire.phase)) == {("spide", "forward"), ("spide", "backward"), ("ide", "forward")}
    measured, by_seed = S.firing_summary(fire)
    assert by_seed == pytest.approx([0.1, 0.3])
    assert measured["backward_mean"] == pytest.approx(0.2) and measured["forward_mean"] == pytest.approx(0.3)


def test_train_overrides_give_spide_its_backward_and_ide_none():
    train = {"epochs": 1, "subset": 64, "test_subset": 32, "batch_size": 16, "T": 5, "T_b": 10, "scale": 3.0}
    spide = S.train_overrides("spide_fmnist_fc", 2, train)
    assert spide["method_args"] == {"T_b": 10, "scale": 3.0, "legacy_scale": False, "v_th_b": 0.5}
    assert spide["seed"] == 2 and spide["name"] == "spide_fmnist_fc_nb02" and spide["data"]["subset"] == 64
    assert "method_args" not in S.train_overrides("spide_fmnist_fc_ide", 0, train)


def test_in_float64_restores_the_default_dtype():
    seen = S.in_float64(torch.get_default_dtype)()
    assert seen == torch.float64 and torch.get_default_dtype() == torch.float32
