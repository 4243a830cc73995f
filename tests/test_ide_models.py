"""IDE feedback SNNs: the simulation follows IDE's equations, the rates converge to the rate map's
fixed point, the feedback constraint holds, and every paper config builds with the reference
parameter count and trains one step on a batch of 2 (CPU, small T)."""
import copy
import math
from pathlib import Path

import pytest
import torch

from snnlib.data import dataset_info
from snnlib.equilibrium import broyden, equilibrium_forward
from snnlib.experiments import load_config, published
from snnlib.layers import power_iterate, spectral_reparam
from snnlib.models.ide import IDEConv, IDEFC, IDEMultiLayer, count_parameters
from snnlib.neurons import reset_net
from snnlib.equilibrium.spiking_backward import cosine
from snnlib.train import build

ROOT = Path(__file__).resolve().parent.parent
IDE_CONFIGS = sorted((ROOT / "configs" / "runs").glob("ide_*.yaml"))
REFERENCE = {  # config -> published parameter count
    "ide_fmnist_f400": "ide.params.f400.fmnist", "ide_fmnist_f400_lif": "ide.params.f400.fmnist",
    "ide_mnist_f64c5": "ide.params.f64c5.mnist", "ide_nmnist_f64c5": "ide.params.f64c5.nmnist.code",
    "ide_cifar10_alexnetf": "ide.params.alexnetf.cifar10", "ide_cifar10_cifarnetf": "ide.params.cifarnetf.cifar10",
    "ide_cifar100_alexnetf": "ide.params.alexnetf.cifar100",
    "ide_cifar100_cifarnetf": "ide.params.cifarnetf.cifar100",
}


def matches_reference(n_params: int, key: str) -> bool:
    """Equal to the published count at the precision it is published with (e.g. 3.71M)."""
    ref = published(key)["value"]
    decimals = len(str(ref).split(".")[1]) if "." in str(ref) else 0
    return round(n_params / 1e6, decimals) == ref


def one_step(cfg: dict, T: int = 2, **method_args):
    cfg = dict(cfg, T=T, method_args={**cfg["method_args"], **method_args})
    torch.manual_seed(0)
    model, method = build(cfg)
    info = dataset_info(cfg["data"]["name"])
    shape = (2, T, info["channels"], *info["size"]) if info["is_events"] else (2, info["channels"], *info["size"])
    x = (torch.rand(shape) < 0.3).float() if info["is_events"] else torch.randn(shape)
    y = torch.tensor([0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    st = method.train_step(x, y, opt)
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return model, st, changed


@pytest.mark.parametrize("path", IDE_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_builds_with_reference_count_and_trains_one_step(path):
    cfg = load_config(path)
    model, st, changed = one_step(cfg, max_iter=3, warn_tol=1e9)   # 3 solver steps: speed, not accuracy
    n = count_parameters(model)
    assert matches_reference(n, REFERENCE[cfg["name"]]), (cfg["name"], n)
    assert math.isfinite(st["loss"]) and changed > 0


def test_nmnist_readme_count_fits_padding_two():
    m = IDEConv(in_channels=2, input_size=(34, 34), padding=2)
    assert matches_reference(count_parameters(m), "ide.params.f64c5.nmnist")   # 290.8K = README 291K


def reference_rates(I, W_list, W_fb, T, V, leak):
    """IDE's equations written out (notes, section 1): a list of lambda-weighted rates per layer."""
    N = len(W_list) + 1
    u = [None] * N
    s = [None] * N
    acc = [torch.zeros(0)] * N
    for t in range(T):
        for l in range(N):
            if l == 0:
                x = I + (s[N - 1] @ W_fb.T if t > 0 else 0.0)
            else:
                x = s[l - 1] @ W_list[l - 1].T
            u[l] = x if t == 0 else u[l] + x
            s[l] = (u[l] >= V).to(I.dtype)
            u[l] = leak * (u[l] - V * s[l])
            acc[l] = s[l] if t == 0 else leak * acc[l] + s[l]
    c = T if leak == 1.0 else (1 - leak ** T) / (1 - leak)
    return [a / c for a in acc]


@pytest.mark.parametrize("leak", [1.0, 0.9])
def test_simulation_follows_ide_equations(f64, leak):
    torch.manual_seed(0)
    net = IDEFC(input_size=(3, 4), hidden=10, num_classes=3, dropout=0.0, leak=leak).eval()
    x = torch.randn(5, 1, 3, 4) * 3
    inputs, ev = net.encode(x, 12)
    drive = net.snn.drive(inputs, events=ev)
    with torch.no_grad():
        sim = net.snn.simulate(drive, 12)
        W = net.snn.streams[0].feedback.op.weight
        ref = reference_rates(drive.static[0], [], W, 12, 2.0, leak)
    assert torch.equal(sim.rates[0][0], ref[0])
    assert 0.0 < sim.firing[0][0] < 1.0


def test_multilayer_simulation_follows_ide_equations(f64):
    """Layers 2..N fire in the same step; only the feedback is delayed (FC stand-ins for convs)."""
    from snnlib.equilibrium import FeedbackSNN, Stream, SynapseMap
    torch.manual_seed(0)
    lin = [torch.nn.Linear(6, 6, bias=False) for _ in range(3)]
    fb = torch.nn.Linear(6, 6, bias=False)
    snn = FeedbackSNN([Stream(SynapseMap(torch.nn.Identity()), [SynapseMap(m) for m in lin], SynapseMap(fb))],
                      leak=0.95, v_th=1.0)
    I = torch.rand(4, 6) * 2
    drive = snn.drive([I])
    with torch.no_grad():
        sim = snn.simulate(drive, 9)
        ref = reference_rates(I, [m.weight for m in lin], fb.weight, 9, 1.0, 0.95)
    for a, b in zip(sim.rates[0], ref):
        assert torch.equal(a, b)


def test_rates_converge_to_the_fixed_point_for_if(f64):
    """IF: ||a_T - a*|| / ||a*|| shrinks about as 1/T (notes: [derived]) under the feedback norm."""
    torch.manual_seed(0)
    net = IDEFC(input_size=(4, 5), hidden=30, num_classes=3, dropout=0.0).eval()
    x = torch.randn(8, 1, 4, 5)
    inputs, ev = net.encode(x, 1)
    drive = net.snn.drive(inputs, events=ev)
    snn = net.snn
    with torch.no_grad():
        like = [torch.zeros(8, 30)]
        a_star, st = broyden(lambda v: snn.pack(snn.rate_map(snn.unpack(v, like), drive)), snn.pack(like),
                             max_iter=100, tol=1e-13)
        err = {T: float((snn.simulate(drive, T).last[0] - a_star).norm() / a_star.norm()) for T in (10, 100, 1000)}
    assert st.converged
    assert err[1000] < err[100] < err[10]
    assert err[1000] < 0.01


def test_feedback_norm_bounds_the_spectral_norm():
    torch.manual_seed(0)
    net = IDEFC()
    op = net.snn.streams[0].feedback.op
    rep = spectral_reparam(op)
    raw = op.parametrizations.weight.original
    true = float(torch.linalg.matrix_norm(raw.detach(), ord=2))
    g0 = float(rep.g.detach())                  # IDE: g starts at the 10-iteration power estimate
    assert 0.95 * true <= g0 <= true * (1 + 1e-6)
    for _ in range(50):
        power_iterate(net)
    assert float(torch.linalg.matrix_norm(op.weight.detach(), ord=2)) <= 1.0 + 1e-3


def test_state_dict_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(0)
    a, b = IDEMultiLayer(channels=(8, 8, 8, 8, 8)), IDEMultiLayer(channels=(8, 8, 8, 8, 8))
    torch.save(a.state_dict(), tmp_path / "m.pt")
    b.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    a.eval(), b.eval()
    assert torch.equal(a(x, 3), b(x, 3))


def test_dropout_mask_is_shared_by_simulation_and_rate_map():
    torch.manual_seed(0)
    net = IDEFC(input_size=(4, 5), hidden=16, dropout=0.5)
    x = torch.randn(4, 1, 4, 5)
    res = equilibrium_forward(net, x, 3)
    masks = [m.mask.clone() for m in net.modules() if hasattr(m, "mask") and m.mask is not None]
    assert masks and all(((m == 0) | (m == 2.0)).all() for m in masks)
    inputs, ev = net.encode(x, 3)
    d = net.snn.drive(inputs, events=ev)
    assert all(torch.equal(a.mask, b) for a, b in zip([m for m in net.modules() if getattr(m, "mask", None) is not None],
                                                         masks))
    reset_net(net)
    assert all(getattr(m, "mask", None) is None for m in net.modules() if hasattr(m, "p"))
    del res, d


def test_event_input_rate_map_uses_the_weighted_frame_mean(f64):
    torch.manual_seed(0)
    net = IDEConv(in_channels=2, input_size=(12, 12), channels=4, padding=1, dropout=0.0, leak=0.9)
    x = (torch.rand(3, 6, 2, 12, 12) < 0.3).to(torch.float64)   # [B, T, C, H, W]
    inputs, ev = net.encode(x, 6)
    assert ev and inputs[0].shape == (6, 3, 2, 12, 12)
    drive = net.snn.drive(inputs, events=True)
    frames = torch.stack([net.snn._frame_current(drive, 0, t, grad=False) for t in range(6)])
    w = 0.9 ** torch.arange(5, -1, -1, dtype=torch.float64)
    mean = torch.tensordot(w, frames, dims=([0], [0])) / w.sum()
    assert torch.allclose(mean, drive.static[0], atol=1e-12)     # BN of F(x_bar) = mean of frame currents
    with pytest.raises(ValueError, match="frames but T"):
        net.encode(x, 5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="5 layer widths"):
        IDEMultiLayer(channels=(8, 8, 8))
    from snnlib.equilibrium import FeedbackSNN
    net = IDEFC()
    with pytest.raises(ValueError, match="two streams"):
        FeedbackSNN(list(net.snn.streams), fusion_mode="current")
    with pytest.raises(ValueError, match="map_scale"):
        FeedbackSNN(list(copy.deepcopy(net).snn.streams), map_scale="V3")
    with pytest.raises(ValueError, match="rate must be"):
        d = net.snn.drive([torch.randn(2, 784)])
        net.snn.simulate(d, 3, rate="mean")


def test_multilayer_implicit_gradient_with_batchnorm_in_the_loop(f64):
    """Train-mode BN couples samples in J; per-sample Broyden still reaches the dense solution."""
    torch.manual_seed(0)
    net = IDEMultiLayer(input_size=(8, 8), channels=(4, 4, 4, 4, 4), dropout=0.0)
    x, y = torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2])

    def g(backward, **kw):
        n = copy.deepcopy(net)
        torch.manual_seed(1)
        res = equilibrium_forward(n, x, 8, backward=backward, **kw)
        torch.nn.functional.cross_entropy(res.logits, y).backward()
        return [p.grad.clone() for p in n.parameters() if p.grad is not None]

    assert cosine(g("broyden", max_iter=200, tol=1e-12), g("exact")) >= 0.9999
