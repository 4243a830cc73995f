"""Minimum latency: paper-scale configs (reference counts, one CPU training step), the single_step
method, the energy counter, and evaluation over seeds of a finished run."""
import pytest
import torch
from torch import nn

from snnlib.experiments import load_config
from snnlib.metrics.energy import EnergyCounter, ptflops_convention, shares
from snnlib.metrics.ops import E_AC_PJ, E_MAC_PJ
from snnlib.models.min_latency import layer_part, parameter_counts
from snnlib.paths import ROOT
from snnlib.studies.measure import evaluate_seeds
from snnlib.train import build

pytestmark = pytest.mark.usefixtures("one_thread")


PAPER = {  # config -> (total params, used params, ptflops MMac reported by the README or None)
    "minlat_cnn_cifar10": (26_843_098, 13_885_402, 247.38),
    "minlat_rnn_cifar10": (30_630_298, 14_925_466, 250.24),
    "minlat_cnn_cifar100": (26_877_748, 13_920_052, None),
    "minlat_rnn_cifar100": (30_664_948, 14_960_116, None),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_matches_reference_counts_and_trains_one_step(name):
    cfg = load_config(ROOT / "configs" / "runs" / f"{name}.yaml")
    torch.manual_seed(0)
    model, method = build(cfg, "cpu")
    total, used, mmac = PAPER[name]
    c = parameter_counts(model)
    assert (c["total"], c["used"]) == (total, used)
    if mmac is not None:
        model.eval()
        count = ptflops_convention(model, torch.rand(1, 3, 32, 32))
        assert round(count["total"] / 1e6, 2) == mmac
        model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=cfg["optim"]["lr"], momentum=0.9)
    before = [p.detach().clone() for p in trainable]
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 7])
    st = method.train_step(x, y, opt)
    assert torch.isfinite(torch.tensor(st["loss"])) and "grad_norm" in st
    # the head starts at zero (reference init), so the first step moves only the head ...
    changed = [not torch.equal(a, p) for a, p in zip(before, trainable)]
    assert sum(changed) == 2 and not torch.equal(before[-2], model.head.weight)
    method.train_step(x, y, opt)   # ... and the second step reaches every trainable parameter
    assert all(p.grad is not None for p in trainable)
    # (a mixer fc whose input happens to carry no spike on these two images gets a zero weight gradient)
    changed = [not torch.equal(a, p) for a, p in zip(before, trainable)]
    assert sum(changed) >= 0.95 * len(trainable)
    assert all(p.grad is None for p in model.reference_unused.parameters())


def test_single_step_averages_T_passes_and_clips():
    from snnlib.methods import build_method
    from snnlib.models import build_model
    info = {"channels": 1, "size": (32, 32), "num_classes": 10}
    torch.manual_seed(0)
    net = build_model({"name": "min_latency", "depths": [2], "dims": [8], "patch_size": 4}, info)
    nn.init.normal_(net.head.weight)
    m1 = build_method("single_step", net, T=1)
    m3 = build_method("single_step", net, T=3, grad_clip=1e-3)
    x = torch.rand(4, 1, 32, 32) * 2
    torch.manual_seed(5)
    three = m3.logits(x)
    torch.manual_seed(5)
    passes = [m1.logits(x) for _ in range(3)]
    assert torch.allclose(three, sum(passes) / 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    st = m3.train_step(x, torch.arange(4), opt)
    assert st["grad_norm"] > 1e-3
    with pytest.raises(ValueError, match="label_smoothing"):
        build_method("single_step", net, T=1, label_smoothing=1.0)
    with pytest.raises(ValueError, match="static images"):
        m1.logits(torch.rand(2, 4, 1, 32, 32))
    with m1.monitor() as mon:
        m1.predict(x)
    rates = mon.rates()
    assert set(rates) == set(net.probes()) and all(0 <= r <= 1 for r in rates.values())


def test_energy_counter_counts_lstm_gates_exactly():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 5, batch_first=True, bidirectional=True)
    x = (torch.rand(3, 7, 6) > 0.7).float()
    with EnergyCounter(lstm) as ec:
        lstm(x)
    t = ec.table(batch_size=3).set_index("layer")
    dense_ih = 3 * 7 * 4 * 5 * 6 * 2
    assert t.loc[".ih", "macs"] == dense_ih / 3
    assert t.loc[".ih", "sops"] == int(x.sum()) * 4 * 5 * 2 / 3      # every input spike reaches 4H gates, 2 directions
    assert t.loc[".hh", "macs"] == 3 * 7 * 4 * 5 * 5 * 2 / 3 and not t.loc[".hh", "spike_input"]
    s = ec.summary(3)
    assert s["snn_pj"] == pytest.approx(E_AC_PJ * t.loc[".ih", "sops"] + E_MAC_PJ * t.loc[".hh", "macs"])


def test_energy_of_the_tiny_model_splits_spike_fed_and_real_valued_layers():
    from snnlib.models.min_latency import MinLatencyNet
    torch.manual_seed(0)
    m = MinLatencyNet(in_channels=1, depths=[2], dims=[8], patch_size=4).eval()
    with torch.no_grad(), EnergyCounter(m, layer_part) as ec:
        m(torch.rand(5, 1, 32, 32) * 2)
    t = ec.table(5)
    spike_parts = set(t.loc[t.spike_input, "part"])
    assert {"mixer conv1", "mixer conv2"} <= spike_parts
    assert not t.loc[t.part.isin(["MLP", "stem", "head"]), "spike_input"].any()
    # the fc after the overlapping block sees averaged (non-binary) spikes: real-valued, as released
    fc = t.set_index("layer")
    assert fc.loc["stages.0.0.mixer.fc", "spike_input"] and not fc.loc["stages.0.1.mixer.fc", "spike_input"]
    sh = shares(t)
    assert sh["snn_share"].sum() == pytest.approx(1.0) and sh["ann_share"].sum() == pytest.approx(1.0)
    s = ec.summary(5)
    assert s["ann_pj"] == pytest.approx(E_MAC_PJ * s["macs"])
    assert s["ann_over_snn"] <= s["bound_ann_over_snn"]


def test_evaluate_seeds_of_a_finished_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path))
    from snnlib.pipeline.runs import run
    cfg = {"name": "minlat_unit", "method": "single_step",
           "model": {"name": "min_latency", "depths": [2], "dims": [8], "patch_size": 4},
           "data": {"name": "fashion_mnist", "pad_to": 32, "subset": 64, "test_subset": 64, "batch_size": 32,
                    "test_batch_size": 64},
           "T": 1, "epochs": 1, "optim": {"name": "adam", "lr": 0.01}, "measure_memory": False}
    try:
        rec = run(cfg, progress=False)
    except Exception as e:   # the dataset is an offline Debian package; say so instead of failing obscurely
        if "DatasetNotFound" in type(e).__name__:
            pytest.skip(f"Fashion-MNIST not installed: {e}")
        raise
    out = evaluate_seeds(rec, [1234, 1, 2])
    assert [o["eval_seed"] for o in out] == [1234, 1, 2]
    assert out[0]["test_acc"] == pytest.approx(rec["final"]["test_acc"])   # the trainer's fixed eval seed
    assert all(0.0 <= o["test_acc"] <= 1.0 for o in out)
