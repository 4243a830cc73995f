"""The rate map's analytic VJP and the shared transposed operators (float64, fixed seeds).

``FeedbackSNN.rate_map_vjp`` computes J^T v from explicit transposes and the clamps' masks; it
must equal autograd's VJP through the rate map wherever it is offered (BatchNorm in forward maps
linearised at the rate map's point, in training and in evaluation mode; MPIS's current fusion
inside f; shared dropout masks), decline (None) where f has a nonlinear map or BatchNorm in the
feedback, and give the same implicit gradient as the autograd path.
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from snnlib.equilibrium import BACKWARDS, SOLVERS, equilibrium_forward
from snnlib.equilibrium.feedback import FeedbackSNN, Stream, SynapseMap, ide_init_
from snnlib.equilibrium.transpose import bn_transpose, map_transpose, output_padding
from snnlib.models.ide import IDEFC, IDEMultiLayer
from snnlib.models.mpis import MPIS
from snnlib.neurons import reset_net
from snnlib.registry import Registry

pytestmark = pytest.mark.usefixtures("f64_seeded")


def _autograd_and_analytic(net, x, T=8):
    """(autograd J^T v, analytic J^T v or None) at the SNN's estimate, for a random v."""
    snn = net.snn
    inputs, events = net.encode(x, T)
    drive = snn.drive(inputs, events=events)
    with torch.no_grad():
        sim = snn.simulate(drive, T)
    a = snn.pack(sim.last).detach().requires_grad_()
    layers = snn.rate_map(snn.unpack(a, sim.last), drive, all_layers=True)
    fa = snn.pack([r[-1] for r in layers])
    v = torch.randn_like(fa)
    (auto,) = torch.autograd.grad(fa, a, v)
    vjp = snn.rate_map_vjp([[r.detach() for r in rates] for rates in layers])
    return auto, (None if vjp is None else vjp(v))


def _conv_stream_net():
    """One stream of three BN-free conv layers with dropout and a transposed-conv feedback to an odd size."""
    torch.manual_seed(0)
    inp = SynapseMap(ide_init_(nn.Conv2d(1, 3, 3, stride=2, padding=1)), None, 0.2)
    fwd = [SynapseMap(ide_init_(nn.Conv2d(3, 4, 3, padding=1)), None, 0.2),
           SynapseMap(ide_init_(nn.Conv2d(4, 5, 3, stride=2, padding=1)), None, 0.2)]
    fb = SynapseMap(ide_init_(nn.ConvTranspose2d(5, 3, 3, stride=2, padding=1, bias=False)), None, 0.2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.snn = FeedbackSNN([Stream(inp, fwd, fb)], leak=0.9, v_th=1.0)
            self.stem = None

        def encode(self, x, T):
            return [x], False
    return Net()


def test_analytic_vjp_equals_autograd_for_an_fc_feedback_net():
    net = IDEFC(in_channels=1, input_size=(4, 5), num_classes=3, hidden=12, dropout=0.2)
    auto, analytic = _autograd_and_analytic(net, torch.randn(6, 1, 4, 5))
    assert analytic is not None
    assert torch.allclose(analytic, auto, rtol=1e-12, atol=1e-14)


def test_analytic_vjp_equals_autograd_through_conv_layers_dropout_and_odd_sizes():
    net = _conv_stream_net()
    auto, analytic = _autograd_and_analytic(net, 2 * torch.rand(5, 1, 9, 9))
    assert analytic is not None and analytic.abs().max() > 0
    assert torch.allclose(analytic, auto, rtol=1e-12, atol=1e-14)


def _assert_same_vjp(net, x, T=8):
    auto, analytic = _autograd_and_analytic(net, x, T)
    assert analytic is not None and auto.abs().max() > 0
    assert torch.allclose(analytic, auto, rtol=1e-10, atol=1e-10 * auto.abs().max())


def _mpis(**kw):
    torch.manual_seed(0)
    args = dict(in_channels=1, input_size=(9, 9), stem_channels=None, channels=(3, 4, 5), dropout=0.2,
                stream2_input="downsampled")
    args.update(kw)
    return MPIS(**args)


def test_analytic_vjp_equals_autograd_for_mpis_with_current_fusion_batchnorm_and_dropout():
    net = _mpis()                     # stream 1 at 9x9, stream 2 at 5x5: Up is not an exact 2x
    assert net.snn.fusion_mode == "current" and net.snn.streams[0].forward_maps[0].has_bn
    _assert_same_vjp(net, 2 * torch.rand(6, 1, 9, 9))


@pytest.mark.parametrize("kw", [{"streams": 1}, {"input_size": (12, 12), "stem_channels": 2},
                                {"fusion": "membrane_snn_only", "map_scale": "V2"}, {"down_at": 1}],
                         ids=["one_stream", "stem_even_size", "released", "down_at_1"])
def test_analytic_vjp_equals_autograd_for_mpis_variants(kw):
    net = _mpis(**kw)
    _assert_same_vjp(net, 2 * torch.rand(6, 1, *kw.get("input_size", (9, 9))))


def test_analytic_vjp_equals_autograd_with_running_batchnorm_statistics_in_evaluation_mode():
    net = _mpis()
    net(2 * torch.rand(6, 1, 9, 9), 4)                    # calibrates the running statistics
    net.train()
    net.encode(torch.rand(2, 1, 9, 9), 4)
    net.eval()
    assert not net.snn.streams[0].forward_maps[0].bn.training
    _assert_same_vjp(net, 2 * torch.rand(6, 1, 9, 9))


def test_analytic_vjp_equals_autograd_for_ide_batchnorm_layers():
    net = IDEMultiLayer(in_channels=1, input_size=(8, 8), channels=(2, 3, 2, 3, 2))
    _assert_same_vjp(net, torch.randn(5, 1, 8, 8))


def test_nonlinear_maps_or_batchnorm_in_the_feedback_fall_back_to_autograd():
    net = _conv_stream_net()
    st = net.snn.streams[0]
    st.feedback = SynapseMap(st.feedback.op, nn.BatchNorm2d(3), 0.2)
    assert _autograd_and_analytic(net, 2 * torch.rand(5, 1, 9, 9))[1] is None
    net = _conv_stream_net()
    net.snn.streams[0].forward_maps[0] = SynapseMap(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh()))
    assert _autograd_and_analytic(net, 2 * torch.rand(5, 1, 9, 9))[1] is None


@pytest.mark.parametrize("training", [True, False], ids=["batch_statistics", "running_statistics"])
@pytest.mark.parametrize("shape", [(7, 3, 5, 4), (9, 3)], ids=["2d", "1d"])
def test_batchnorm_transpose_is_the_vjp_at_its_input(training, shape):
    bn = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1])
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
    bn.train(training)
    z = (3 * torch.randn(shape) + 1).requires_grad_()
    dy = torch.randn(shape)
    (auto,) = torch.autograd.grad(bn(z), z, dy)
    assert torch.allclose(bn_transpose(bn, z)(dy), auto, rtol=1e-12, atol=1e-12)


def test_a_batchnorm_map_needs_its_linearisation_point():
    m = SynapseMap(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="bn_input"):
        map_transpose(m, (4, 2, 5, 5), (4, 3, 5, 5))


def test_implicit_gradients_are_the_same_with_the_analytic_and_the_autograd_vjp(monkeypatch):
    net = IDEFC(in_channels=1, input_size=(4, 5), num_classes=3, hidden=12, dropout=0.2)
    x, y = torch.randn(6, 1, 4, 5), torch.randint(0, 3, (6,))

    def step(model):
        torch.manual_seed(3)
        res = equilibrium_forward(model, x, 20, backward="broyden", max_iter=60, tol=1e-13)
        F.cross_entropy(res.logits, y).backward()
        reset_net(model)
        return [p.grad.clone() for p in model.parameters()], res.record.stat.abs_trace

    g_analytic, trace_analytic = step(copy.deepcopy(net))
    monkeypatch.setattr(FeedbackSNN, "rate_map_vjp", lambda self, layers: None)
    g_auto, trace_auto = step(copy.deepcopy(net))
    for a, b in zip(g_analytic, g_auto):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)
    assert trace_analytic == pytest.approx(trace_auto, rel=1e-9, abs=1e-13 * trace_auto[0])


def test_mpis_implicit_gradients_are_the_same_with_the_analytic_and_the_autograd_vjp(monkeypatch):
    net = _mpis()
    x, y = 2 * torch.rand(6, 1, 9, 9), torch.randint(0, 10, (6,))
    net.encode(x, 20)                           # calibrate once, before the copies

    def step(model):
        torch.manual_seed(3)
        res = equilibrium_forward(model, x, 20, backward="broyden", max_iter=40, tol=1e-12)
        F.cross_entropy(res.logits, y).backward()
        reset_net(model)
        return [p.grad.clone() for p in model.parameters() if p.grad is not None], res.record.stat.abs_trace

    g_analytic, trace_analytic = step(copy.deepcopy(net))
    monkeypatch.setattr(FeedbackSNN, "rate_map_vjp", lambda self, layers: None)
    g_auto, trace_auto = step(copy.deepcopy(net))
    assert len(g_analytic) == len(g_auto) and net.snn.fusion.down.weight.grad is None
    for a, b in zip(g_analytic, g_auto):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)
    assert trace_analytic == pytest.approx(trace_auto, rel=1e-9, abs=1e-13 * trace_auto[0])


def test_output_padding_serves_conv_transposes_and_names_impossible_sizes():
    conv = nn.Conv2d(2, 2, 3, stride=2, padding=1)
    x = torch.randn(1, 2, 9, 9)
    y = conv(x)                                              # 5x5
    pad = output_padding(conv, y.shape[-2:], x.shape[-2:])   # its transpose must give 9x9 back
    assert F.conv_transpose2d(y, conv.weight, stride=2, padding=1, output_padding=pad).shape == x.shape
    with pytest.raises(ValueError, match=r"cannot map a \(5, 5\) map to \(14, 14\)"):
        output_padding(conv, (5, 5), (14, 14))


def test_solvers_and_backwards_are_registries():
    assert isinstance(SOLVERS, Registry) and isinstance(BACKWARDS, Registry)
    assert {"broyden", "anderson", "fixed_point", "ide_iter"} <= set(SOLVERS)
    assert {"broyden", "one_step", "exact", "spike", "spide_exact"} <= set(BACKWARDS)
