"""MPIS-SNN: parallel implicit streams fused at their first layers.

Paper configs build with the derived reference counts and train one step; the model works on
28x28, 32x32 and event frames; the fusion is inside the rate map (so D learns) unless the
released membrane fusion is chosen; the released step-0 rate is T-invariant up to c_T; and
the training memory is flat in T."""
import copy
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from snnlib.equilibrium import broyden, equilibrium_forward
from snnlib.experiments import load_config
from snnlib.metrics import step_memory
from snnlib.methods import build_method
from snnlib.models.ide import count_parameters
from snnlib.models.mpis import MPIS
from snnlib.neurons import rate_normaliser, reset_net

from test_ide_models import matches_reference, one_step

ROOT = Path(__file__).resolve().parent.parent
MPIS_CONFIGS = sorted((ROOT / "configs" / "runs").glob("mpis_*.yaml"))
REFERENCE = {"mpis_cifar10": "mpis.params.cifar10", "mpis_cifar10_released": "mpis.params.cifar10",
             "mpis_cifar100": "mpis.params.cifar100", "mpis_nmnist": "mpis.params.nmnist"}


@pytest.mark.parametrize("path", MPIS_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_builds_and_trains_one_step(path):
    cfg = load_config(path)
    model, st, changed = one_step(cfg, max_iter=3, warn_tol=1e9) if cfg["method_args"].get("backward") != "one_step" \
        else one_step(cfg)
    if cfg["name"] in REFERENCE:
        assert matches_reference(count_parameters(model), REFERENCE[cfg["name"]]), count_parameters(model)
    assert math.isfinite(st["loss"]) and changed > 0


def small(**kw):
    torch.manual_seed(0)
    args = dict(in_channels=1, input_size=(28, 28), stem_channels=4, channels=(8, 8, 8), dropout=0.0)
    args.update(kw)
    return MPIS(**args)


@pytest.mark.parametrize("shape,kw", [
    ((4, 1, 28, 28), {}),
    ((4, 3, 32, 32), {"in_channels": 3, "input_size": (32, 32)}),
    ((4, 5, 2, 34, 34), {"in_channels": 2, "input_size": (34, 34), "stem_channels": None, "down_at": 1}),
    ((4, 1, 28, 28), {"streams": 1}),
    ((4, 1, 28, 28), {"stream2_input": "downsampled"}),
])
def test_trains_on_static_28_32_and_event_frames(shape, kw):
    net = small(**kw)
    events = len(shape) == 5
    x = (torch.rand(shape) < 0.3).float() if events else torch.randn(shape)
    y = torch.tensor([0, 1, 2, 3])
    method = build_method("mpis", net, T=5, max_iter=10, warn_tol=1e9)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    st = method.train_step(x, y, opt)
    assert math.isfinite(st["loss"])
    names = set(st["rates"])
    assert names == ({"layer1", "layer2", "layer3"} if kw.get("streams") == 1 else
                     {f"s{k}.layer{l}" for k in (1, 2) for l in (1, 2, 3)})
    net.eval()
    assert method.predict(x).shape == (4, 10)


def fusion_grad(fusion):
    net = small(fusion=fusion)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    res = equilibrium_forward(net, x, 5, max_iter=10, warn_tol=1e9)
    F.cross_entropy(res.logits, y).backward()
    return net.snn.fusion.down.weight.grad


def test_current_fusion_is_in_the_rate_map_so_D_learns():
    g = fusion_grad("current")
    assert g is not None and float(g.abs().sum()) > 0


def test_released_membrane_fusion_leaves_D_untrained():
    assert fusion_grad("membrane_snn_only") is None      # released defect 4: fusion only in no_grad


def test_released_step0_rate_is_T_invariant_up_to_c_T():
    net = small(fusion="membrane_snn_only", map_scale="V2", feedback_norm=False).eval()
    x = torch.randn(4, 1, 28, 28)
    inputs, ev = net.encode(x, 1)
    out = {}
    with torch.no_grad():
        drive = net.snn.drive(inputs, events=ev)
        for T in (1, 5, 30):
            sim = net.snn.simulate(drive, T, rate="step0")
            out[T] = [a * rate_normaliser(T, net.snn.leak) for a in sim.last]
        weighted = net.snn.simulate(drive, 30).last
    for T in (5, 30):
        assert all(torch.equal(a, b) for a, b in zip(out[T], out[1]))
    assert not all(torch.equal(a, b) for a, b in zip(weighted, out[1]))   # accumulation differs


def equilibrium_gap(fusion, T):
    """||a_T - a*|| / ||a*|| with a* the fixed point of the model's own rate map (eval, float64)."""
    torch.set_default_dtype(torch.float64)
    try:
        net = small(fusion=fusion, leak=1.0).eval()
        x = torch.randn(3, 1, 28, 28)
        inputs, ev = net.encode(x, T)
        snn = net.snn
        with torch.no_grad():
            drive = snn.drive(inputs, events=ev)
            sim = snn.simulate(drive, T)
            like = sim.last
            a_star, st = broyden(lambda v: snn.pack(snn.rate_map(snn.unpack(v, like), drive)), snn.pack(like),
                                 max_iter=200, tol=1e-12)
            return float((snn.pack(like) - a_star).norm() / a_star.norm())
    finally:
        torch.set_default_dtype(torch.float32)


def test_current_fusion_snn_approaches_its_rate_map_fixed_point():
    assert equilibrium_gap("current", 400) < 0.5 * equilibrium_gap("current", 10)


def test_memory_flat_in_T():
    net = small()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    mem = {}
    for T in (5, 30):
        m = build_method("mpis", copy.deepcopy(net), T=T, max_iter=10, warn_tol=1e9)
        torch.manual_seed(0)
        mem[T] = step_memory(m, x, y)["total_bytes"]
    assert mem[30] / mem[5] <= 1.05


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="1 or 2 streams"):
        small(streams=3)
    with pytest.raises(ValueError, match="stream2_input"):
        small(stream2_input="copy")
    with pytest.raises(ValueError, match="input_crop"):
        small(input_crop=40)
    net = small()
    with pytest.raises(ValueError, match="static inputs"):
        net.encode(torch.zeros(2, 5, 1, 28, 28), 5)


@pytest.mark.parametrize("kw,rate", [({}, "weighted"), ({"fusion": "membrane_snn_only"}, "step0"),
                                     ({"streams": 1, "leak": 1.0}, "weighted")],
                         ids=["current", "membrane_step0", "one_stream_IF"])
def test_no_grad_simulation_gives_the_unrolled_simulations_rates(f64_seeded, kw, rate):
    """The no-grad simulation (in-place updates, channels-last) computes the same spikes as the
    graph-keeping one: batch statistics in both, the same dropout masks."""
    net = small(sim_bn="batch", dropout=0.2, **kw).train()
    x = torch.randn(4, 1, 28, 28)
    inputs, events = net.encode(x, 6)
    drive = net.snn.drive(inputs, events=events)
    with torch.no_grad():
        fast = net.snn.simulate(drive, 6, rate=rate)
    unrolled = net.snn.simulate(drive, 6, rate=rate, surrogate="sigmoid")
    assert fast.firing == unrolled.firing and any(f > 0 for row in fast.firing for f in row)
    for a, b in zip(fast.rates, unrolled.rates):
        for ra, rb in zip(a, b):
            assert ra.is_contiguous() and torch.equal(ra, rb.detach())
