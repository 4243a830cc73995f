"""Monitors: every way snnlib watches a forward pass is one ``ModuleHooks`` context manager that hooks
the modules it selects on entry and removes every hook on exit, also when the body raises."""
import pytest
import torch
from torch import nn

from snnlib.metrics import FiringRateMonitor, OpCounter
from snnlib.metrics.energy import EnergyCounter
from snnlib.metrics.hooks import ModuleHooks, modules_of
from snnlib.neurons import LIFNode, reset_net
from snnlib.online import OnlineLIF, SpikeRateMonitor

pytestmark = pytest.mark.usefixtures("one_thread")


class Spikes(nn.Module):
    """Emits a fixed tensor, whatever its input: a spiking layer whose rate is known."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out


def lif_net():
    return nn.Sequential(nn.Linear(6, 5), LIFNode(leak=0.5), nn.Linear(5, 4), LIFNode(leak=0.5))


def lstm_net():
    return nn.Sequential(nn.Linear(6, 6), nn.LSTM(6, 3, batch_first=True))


def online_net():
    return nn.Sequential(nn.Linear(6, 5), OnlineLIF(leak=0.5), nn.Linear(5, 4), OnlineLIF(leak=0.5))


def hooks_on(model):
    """How many forward hooks and spike observers sit on ``model``'s modules."""
    return sum(len(m._forward_hooks) + len(getattr(m, "_observers", ())) for m in model.modules())


MONITORS = {
    "FiringRateMonitor": (FiringRateMonitor, lif_net, 2),
    "OpCounter": (OpCounter, lif_net, 2),
    "EnergyCounter": (EnergyCounter, lstm_net, 2),      # the LSTM itself, and OpCounter's Linear
    "SpikeRateMonitor": (SpikeRateMonitor, online_net, 2),
}


@pytest.mark.parametrize("name", MONITORS)
def test_every_monitor_is_a_module_hooks_that_cleans_up(name, f64):
    cls, make, n_hooks = MONITORS[name]
    net = make()
    x = torch.rand(3, 4, 6)
    mon = cls(net)
    assert isinstance(mon, ModuleHooks)
    with mon:
        assert hooks_on(net) == n_hooks
        net(x)
    assert hooks_on(net) == 0
    with pytest.raises(RuntimeError, match="inside"):
        with cls(net):
            raise RuntimeError("inside the block")
    assert hooks_on(net) == 0


def test_firing_rate_is_the_share_of_nonzero_outputs():
    net = nn.Sequential(Spikes(torch.tensor([[1.0, 0.0, 0.0, 1.0]])), Spikes(torch.zeros(2, 3)))
    with FiringRateMonitor(net, modules={"a": net[0], "b": net[1]}) as mon:
        net(None)
        net(None)
    assert mon.rates() == {"a": 0.5, "b": 0.0}
    assert mon.modules == {"a": net[0], "b": net[1]}


def test_firing_rates_of_lif_layers_match_their_spikes(f64):
    torch.manual_seed(0)
    net, x = lif_net(), 3 * torch.rand(8, 6)
    with FiringRateMonitor(net) as mon:
        h1 = net[1](net[0](x))
        h2 = net[3](net[2](h1))
    assert set(mon.rates()) == {"1", "3"}
    assert mon.rates()["1"] == (h1 != 0).sum().item() / h1.numel()
    assert mon.rates()["3"] == (h2 != 0).sum().item() / h2.numel()
    reset_net(net)


def test_spike_rate_monitor_counts_every_step_and_keeps_spikes_on_request(f64):
    torch.manual_seed(0)
    net = online_net()
    steps = [2 * torch.rand(3, 6) for _ in range(4)]
    with SpikeRateMonitor(net, keep=True) as mon:
        for x in steps:
            net(x)
    assert set(mon.neurons) == {"1", "3"} and len(mon.spikes["1"]) == 4
    kept = torch.stack(mon.spikes["1"])
    assert mon.rates()["1"] == kept.sum().item() / kept.numel()


def test_a_subclass_records_what_it_is_told():
    class Shapes(ModuleHooks):
        def __init__(self, model):
            super().__init__(modules_of(model, nn.Linear))
            self.seen = []

        def record(self, name, module, inputs, output):
            self.seen.append((name, tuple(output.shape)))

    net = lif_net()
    with Shapes(net) as mon:
        net(torch.rand(2, 6))
    assert mon.seen == [("0", (2, 5)), ("2", (2, 4))]
    assert hooks_on(net) == 0


def test_a_monitor_that_cannot_attach_leaves_no_hook_behind():
    class Fails(ModuleHooks):
        def attach(self, name, module):
            if name == "2":
                raise ValueError("cannot watch layer 2")
            return super().attach(name, module)

        def record(self, *args):
            pass

    net = lif_net()
    with pytest.raises(ValueError, match="layer 2"):
        with Fails(modules_of(net, nn.Linear)):
            pass
    assert hooks_on(net) == 0
