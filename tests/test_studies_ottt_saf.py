"""The OTTT -> SAF study (snnlib.studies.ottt_saf), in float64 with fixed seeds:
spike-for-spike forward equivalence, gradient equality with OTTT_A, halved forward operations,
LIF inference of SAF weights, and the divergence of SAF-E from OTTT_O under per-step updates.
Memory variants are run configs."""
import copy

import pytest
import torch

from snnlib.methods import build_method
from snnlib.models import build_model
from snnlib.neurons import rate_normaliser, reset_net
from snnlib.online import export_lif, readout
from snnlib.studies import ottt_saf as study
from snnlib.data.loader import time_sequence

INFO = {"channels": 1, "size": (28, 28), "num_classes": 10}


def model(name="online_conv", seed=0, **kw):
    torch.manual_seed(seed)
    net = build_model({"name": name, "cfg": "tiny", **kw}, INFO).double()
    if net.feedback is not None:           # VGG-F's feedback starts at zero: make it matter
        with torch.no_grad():
            net.feedback.op.weight.normal_(0, 0.05)
            net.feedback.op.bias.normal_(0, 0.1)
    with torch.no_grad():
        net.head.op.weight.normal_(0, 0.3)  # non-negligible readout so every layer gets gradient
    return net


def data(n=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


CASES = {"VGG": dict(), "VGG-F": dict(name="online_vggf"), "dropout": dict(dropout=0.2)}


@pytest.mark.parametrize("case", list(CASES))
def test_saf_spikes_and_gradients_equal_lif_and_ottt_a(case):
    net = model(**CASES[case])
    if case == "dropout":
        net.train()                        # masks drawn from the same seed in every mode
    x, y = data()
    T = 5
    res = study.compare_spikes_and_grads(net, x, y, T)
    spikes = res["spikes"]
    fired = sum(r["spikes"] for r in spikes if r["variant"] == "SAF")
    assert fired > 0.02 * sum(r["neurons"] for r in spikes if r["variant"] == "SAF")   # the net spikes
    for r in spikes:
        if case == "dropout" and r["variant"] == "exported LIF":
            continue                       # the export is an inference network (no dropout)
        assert r["mismatches"] == 0, r
    assert {r["variant"] for r in spikes} >= {"SAF", "OTTT_A (reference)", "OTTT_A (lean)"}
    grads = res["grads"]
    assert len({r["param"] for r in grads}) >= 5 and {r["step"] for r in grads} == {1, 2, 3, 4, 5, "sum"}
    for r in grads:
        assert r["max_abs_grad"] > 0 and r["max_abs_diff"] <= 1e-10 * max(1.0, r["max_abs_grad"]), r
    for r in res["bias_ratio"]:            # SAF's bias enters as c_t b: its gradient is c_t times OTTT's
        assert r["min_ratio"] == pytest.approx(r["c_t"], rel=1e-9)
        assert r["max_ratio"] == pytest.approx(r["c_t"], rel=1e-9)


def test_forward_macs_of_saf_are_half_of_reference_ottt():
    net = model(name="online_vggf")
    x, _ = data(2)
    ref = study.forward_macs(net, x, 3, "ottt_reference")
    saf = study.forward_macs(net, x, 3, "saf")
    lean = study.forward_macs(net, x, 3, "ottt_lean")
    assert set(ref) == {"blocks.0.synapse", "blocks.1.synapse", "head", "feedback"}
    for layer in ref:
        assert saf[layer] > 0 and saf[layer] * 2 == ref[layer] and lean[layer] == saf[layer]
    # the authors' code leaves the first conv unwrapped: 1x there, 2x on every other wrapped layer
    raw = study.forward_macs(net, x, 3, "ottt_reference", raw_input=True)
    assert raw["blocks.0.synapse"] == saf["blocks.0.synapse"] and raw["head"] == ref["head"]


@pytest.mark.parametrize("name,kw,rule", [("saf_e", {}, "mean"), ("saf_f", {}, "weighted_rate"),
                                          ("saf_f", {"readout": "mean"}, "mean")])
def test_exported_lif_network_predicts_like_saf(name, kw, rule):
    net = model(name="online_vggf")
    m = build_method(name, net, T=4, **kw)
    x, y = data(8)
    m.train_step(x, y, torch.optim.SGD(net.parameters(), lr=0.05))   # weights that saw a SAF update
    net.eval()
    lif = export_lif(net)
    assert not any(isinstance(p, torch.nn.Parameter) and p is q for p in lif.parameters()
                   for q in net.parameters())
    with torch.no_grad():
        ours = m.predict(x)
        theirs = readout(lif(time_sequence(x, 4)), rule, 0.5)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    agreement = study.lif_inference_agreement(m, [(x, y)])
    assert agreement["disagreements"] == 0 and agreement["samples"] == 8


def test_export_keeps_the_input_resize():
    torch.manual_seed(0)
    net = build_model({"name": "online_vgg", "cfg": "tiny", "resize": 16}, {"channels": 2, "size": (40, 40),
                                                                             "num_classes": 3}).double().eval()
    x = torch.rand(3, 2, 40, 40, dtype=torch.float64) * 3
    m = build_method("saf_f", net, T=3)
    with torch.no_grad():
        assert torch.allclose(m.predict(x), readout(export_lif(net)(time_sequence(x, 3)), "weighted_rate", 0.5))


def test_saf_f_trains_on_the_weighted_rate_at_the_last_step_only():
    net = model()
    x, y = data()
    m = build_method("saf_f", copy.deepcopy(net), T=4)
    grads = m.per_step_grads(x, y)
    assert all(g == {} for g in grads[:-1]) and grads[-1]
    # a[T] = O_hat[T] / c_T equals the lambda-weighted sum of the per-step LIF outputs
    outs = export_lif(net)(time_sequence(x, 4))
    reset_net(m.net)
    with torch.no_grad():
        assert torch.allclose(m.logits(x), readout(outs, "weighted_rate", 0.5).detach())
    assert rate_normaliser(4, 0.5) == pytest.approx(1.875)


def test_saf_e_drifts_from_ottt_o_only_when_weights_change():
    net = model()
    x, y = data()
    rows = {r["lr"]: r for r in study.online_drift(net, [(x, y)], 4, [0.0, 0.2])}
    assert rows[0.0]["spike_mismatch"] == 0 and rows[0.0]["max_grad_diff"] <= 1e-12
    assert rows[0.0]["weight_divergence"] == 0
    assert rows[0.2]["max_grad_diff"] > 1e-6 and rows[0.2]["weight_divergence"] > 0


def test_memory_variants_keep_only_each_variants_own_method_arguments():
    cfg = {"method": "ottt_a", "method_args": {"formulation": "lean", "mse_weight": 0.05}, "T": 4}
    v = study.memory_variants(cfg)
    assert list(v) == list(study.VARIANTS)
    assert v["BPTT"]["method"] == "bptt" and v["BPTT"]["method_args"] == {"loss": "per_step"}
    assert v["OTTT_A (reference)"]["method_args"] == {"formulation": "reference", "first_layer": "raw"}
