"""Metrics: saved-tensor memory, operation counts and energy, firing rates, accuracy."""
import pytest
import torch
from torch import nn

from snnlib.methods import build_method
from snnlib.metrics import (E_AC_PJ, E_MAC_PJ, FiringRateMonitor, OpCounter, SavedTensorTracker, accuracy,
                            is_spike_tensor, layer_sops, step_memory)
from snnlib.models import build_model


def _bptt(T, **model_kw):
    torch.manual_seed(0)
    net = build_model({"name": "conv_snn", "channels": [8, 16], **model_kw},
                      {"channels": 1, "size": (28, 28), "num_classes": 10})
    return build_method("bptt", net, T=T)


def test_tracker_counts_saved_activations_not_parameters():
    lin = nn.Linear(100, 50)
    x = torch.randn(8, 100)
    with SavedTensorTracker(exclude=list(lin.parameters())) as tr:
        y = torch.relu(lin(x)).sum()
    # linear saves its input (8x100 floats); relu saves its output (8x50)
    assert tr.total_bytes == (8 * 100 + 8 * 50) * 4
    assert tr.peak_bytes == tr.total_bytes
    del y


def test_tracker_sees_graphs_freed_step_by_step():
    w = torch.randn(64, 64, requires_grad=True)
    with SavedTensorTracker(exclude=[w]) as tr:
        for _ in range(10):
            x = torch.randn(32, 64)
            (x @ w).tanh().sum().backward()
    one_step = (32 * 64 + 32 * 64) * 4      # matmul input + tanh output
    assert tr.peak_bytes == one_step        # live peak: one step at a time
    assert tr.total_bytes == 10 * one_step  # all saves over the loop


def test_bptt_memory_grows_linearly_with_T():
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    m4 = step_memory(_bptt(4), x, y)["saved_peak_bytes"]
    m16 = step_memory(_bptt(16), x, y)["saved_peak_bytes"]
    assert 3.5 <= m16 / m4 <= 4.5


def test_step_memory_leaves_parameters_untouched():
    method = _bptt(2)
    before = [p.clone() for p in method.net.parameters()]
    out = step_memory(method, torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    assert all(torch.equal(a, b) for a, b in zip(before, method.net.parameters()))
    assert out["total_bytes"] == out["saved_peak_bytes"] + out["state_bytes"] + out["solver_bytes"]


def test_sops_are_exact_for_conv_and_linear():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, stride=2)
    x = (torch.rand(2, 3, 9, 9) > 0.7).float()
    # brute force: each nonzero input reaches every output window that contains it, times C_out
    y = conv(x)
    reach = 0
    for b in range(2):
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                for c in range(3):
                    for di in range(3):
                        for dj in range(3):
                            r, s = 2 * i - 1 + di, 2 * j - 1 + dj
                            if 0 <= r < 9 and 0 <= s < 9 and x[b, c, r, s] != 0:
                                reach += 1
    assert layer_sops(conv, x) == reach * 5
    lin = nn.Linear(10, 7)
    xs = (torch.rand(4, 10) > 0.5).float()
    assert layer_sops(lin, xs) == int(xs.sum()) * 7


def test_spike_detection():
    assert is_spike_tensor(torch.tensor([0.0, 2.74, 2.74]))
    assert not is_spike_tensor(torch.tensor([0.0, 0.3, 1.0]))
    assert not is_spike_tensor(torch.tensor([0.0, -1.0]))


def test_energy_counts_spike_layers_as_accumulates():
    method = _bptt(3, bn=False, pool="max", first_layer_gain=3.0)
    x = torch.rand(4, 1, 28, 28)
    with OpCounter(method.net, batch_size=4) as oc:
        method.predict(x)
    t = oc.table()
    first = t[t.layer.str.contains("features.0")].iloc[0]
    assert not first.spike_input                      # analog image in: MACs
    assert first.macs == 3 * 28 * 28 * 8 * 9           # T steps x outputs x fan-in
    e = oc.energy()
    spiking = t[t.spike_input]
    assert len(spiking) == 2 and spiking.sops.sum() > 0
    expected = E_AC_PJ * spiking.sops.sum() + E_MAC_PJ * t[~t.spike_input].macs.sum()
    assert e["snn_pj"] == pytest.approx(expected)
    assert e["dense_pj"] == pytest.approx(E_MAC_PJ * t.macs.sum())


def test_firing_rate_monitor_reports_each_spiking_layer():
    method = _bptt(4, first_layer_gain=3.0)
    with FiringRateMonitor(method.net) as mon:
        method.predict(torch.rand(8, 1, 28, 28))
    r = mon.rates()
    assert len(r) == 2 and all(0.0 <= v <= 1.0 for v in r.values())
    assert max(r.values()) > 0


def test_accuracy():
    assert accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 0.5
