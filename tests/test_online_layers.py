"""Online-training building blocks: scaled weight standardisation, the OTTT/SAF neuron, and the
trace-gradient synapses (reference two-op wrapping, lean custom autograd, SAF accumulation)."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from snnlib.layers.weight_standardization import ScaledWSConv2d, ScaledWSLinear, effective_weight
from snnlib.models import build_model
from snnlib.neurons import lif_step, reset_net
from snnlib.online import OnlineLIF, TraceGradConv2d, TraceGradLinear, TraceSynapse, set_mode
from snnlib.online.modes import check_mode


@pytest.fixture(autouse=True)
def float64_default():
    """Equivalence tests run in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_scaled_ws_standardises_every_output_unit():
    torch.manual_seed(0)
    conv = ScaledWSConv2d(3, 5, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(7.0).add_(3.0)
        conv.gain.copy_(torch.arange(1.0, 6.0).view(5, 1, 1, 1))
    w = conv.effective_weight().detach()
    fan_in = 3 * 9
    flat = w.flatten(1) / torch.arange(1.0, 6.0).view(5, 1)
    assert torch.allclose(flat.mean(1), torch.zeros(5), atol=1e-12)
    assert torch.allclose(flat.var(1) * fan_in, torch.ones(5), atol=1e-5)   # eps = 1e-4 vs var*fan_in ~ 1e3
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(conv(x), F.conv2d(x, w, conv.bias, padding=1))
    lin = ScaledWSLinear(10, 4)
    assert torch.allclose(lin.effective_weight().mean(1), torch.zeros(4), atol=1e-12)
    assert effective_weight(nn.Linear(3, 2)) is not None
    with pytest.raises(ValueError, match="eps"):
        ScaledWSConv2d(1, 1, 3, eps=0.0)


def test_ws_gradients_reach_weight_and_gain():
    conv = ScaledWSConv2d(2, 3, 3)
    conv(torch.randn(1, 2, 5, 5)).square().sum().backward()
    assert conv.weight.grad.abs().sum() > 0 and conv.gain.grad.abs().sum() > 0


def test_lif_mode_matches_pure_lif_step_and_keeps_graph():
    torch.manual_seed(0)
    n = OnlineLIF(leak=0.5, v_th=1.0)
    xs = torch.randn(5, 4, 6, requires_grad=True)
    v = torch.zeros(4, 6)
    for x in xs:
        s = n(x)
        s_ref, v = lif_step(x, v, leak=0.5, v_th=1.0, surrogate=n.surrogate)
        assert torch.equal(s, s_ref)
    assert n.v.grad_fn is not None          # BPTT: the potential carries its history


def test_online_modes_detach_the_state_and_reference_keeps_the_trace():
    torch.manual_seed(0)
    for mode in ("ottt_lean", "ottt_reference"):
        n = OnlineLIF(leak=0.5)
        n.mode = mode
        trace = torch.zeros(4, 6)
        for _ in range(4):
            s = n(torch.randn(4, 6, requires_grad=True) * 2)
            assert n.v.grad_fn is None and s.shape == (4, 6)
            if mode == "ottt_reference":
                trace = 0.5 * trace + s.detach()
                assert torch.equal(n.trace, trace) and n.trace.grad_fn is None
            else:
                assert n.trace is None
        reset_net(n)
        assert n.v is None and n.trace is None


def test_saf_neuron_on_accumulated_input_fires_the_lif_spikes():
    torch.manual_seed(1)
    xs = torch.randn(8, 3, 5) * 1.5
    lif, saf = OnlineLIF(leak=0.5), OnlineLIF(leak=0.5)
    saf.mode = "saf"
    u_hat = torch.zeros(3, 5)
    acc = torch.zeros(3, 5)
    for x in xs:
        u_hat = 0.5 * u_hat + x
        s = lif(x)
        a = saf(u_hat)
        acc = 0.5 * acc + s
        assert torch.equal(a, acc)            # SAF emits the spike accumulation a_hat[t]


def test_shared_dropout_mask_is_fixed_over_time_and_applies_to_the_trace():
    torch.manual_seed(0)
    n = OnlineLIF(leak=0.5, dropout=0.5)
    n.mode = "ottt_reference"
    x = torch.full((64, 10), 5.0)          # fires every step
    masks = [n(x) for _ in range(3)]
    assert all(torch.equal(m, masks[0]) for m in masks)
    assert set(masks[0].unique().tolist()) <= {0.0, 2.0}
    assert torch.allclose(n.trace, masks[0] * (1 + 0.5 + 0.25))
    n.eval()
    reset_net(n)
    assert torch.equal(n(x), torch.ones(64, 10))


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_lean_trace_gradient_function_matches_autograd(kind):
    torch.manual_seed(0)
    if kind == "conv":
        x = torch.rand(2, 3, 7, 7, requires_grad=True)
        w = torch.randn(4, 3, 3, 3, requires_grad=True)
        fn = lambda inp, tr: TraceGradConv2d.apply(inp, tr, w, b, (2, 2), (1, 1), (1, 1), 1)  # noqa: E731
        op = lambda inp: F.conv2d(inp, w, b, stride=2, padding=1)  # noqa: E731
    else:
        x = torch.rand(5, 6, requires_grad=True)
        w = torch.randn(3, 6, requires_grad=True)
        fn = lambda inp, tr: TraceGradLinear.apply(inp, tr, w, b)  # noqa: E731
        op = lambda inp: F.linear(inp, w, b)  # noqa: E731
    b = torch.randn(w.shape[0], requires_grad=True)
    trace = torch.rand_like(x)
    g = torch.randn_like(op(x))
    y = fn(x, trace)
    assert torch.equal(y, op(x))
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), g)
    ex = torch.autograd.grad(op(x), x, g)[0]                  # input gradient: as op(x)
    ew, eb = torch.autograd.grad(op(trace), (w, b), g)         # weight gradient: from the trace
    assert torch.allclose(gx, ex) and torch.allclose(gw, ew) and torch.allclose(gb, eb)
    with pytest.raises(ValueError, match="trace shape"):
        fn(x, trace[:1])


def test_reference_and_lean_synapses_give_the_same_values_and_gradients():
    torch.manual_seed(0)
    conv = ScaledWSConv2d(3, 4, 3, padding=1)
    s = (torch.rand(2, 3, 5, 5) > 0.5).double().requires_grad_()
    tr = (s.detach() + 0.5 * torch.rand(2, 3, 5, 5))
    ref = TraceSynapse(conv, leak=0.5)
    ref.mode = "ottt_reference"
    y_ref = ref(s, tr)
    g = torch.randn_like(y_ref)
    grads_ref = torch.autograd.grad(y_ref, (s, conv.weight, conv.gain, conv.bias), g)
    # lean: the synapse keeps its own trace; feeding the trace's increments reproduces tr
    lean = TraceSynapse(conv, leak=0.5)
    lean.mode = "ottt_lean"
    lean.state.trace = (tr - s.detach()) / 0.5
    y_lean = lean(s)
    grads_lean = torch.autograd.grad(y_lean, (s, conv.weight, conv.gain, conv.bias), g)
    assert torch.allclose(y_ref, conv(s)) and torch.allclose(y_lean, y_ref)
    for a, b in zip(grads_ref, grads_lean):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="needs the input's presynaptic trace"):
        ref(torch.rand(3, 3, 5, 5))
    with pytest.raises(ValueError, match="trace shape"):
        ref(torch.rand(3, 3, 5, 5), torch.rand(2, 3, 5, 5))


def test_saf_synapse_adds_the_accumulated_bias():
    lin = nn.Linear(4, 2)
    syn = TraceSynapse(lin, leak=0.5, input_layer=True)
    syn.mode = "saf"
    x = torch.randn(3, 4)
    acc = torch.zeros(3, 4)
    for t in range(1, 5):
        acc = 0.5 * acc + x
        c_t = (1 - 0.5**t) / 0.5
        assert torch.allclose(syn(x), F.linear(acc, lin.weight) + c_t * lin.bias)


def test_modes_and_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown online execution mode"):
        check_mode("ottt")
    with pytest.raises(TypeError, match="no mode-dependent modules"):
        set_mode(nn.Linear(2, 2), "saf")
    with pytest.raises(TypeError, match="Conv2d or Linear"):
        TraceSynapse(nn.ReLU(), leak=0.5)
    with pytest.raises(ValueError, match="leak"):
        OnlineLIF(leak=0.0)
    with pytest.raises(ValueError, match="cfg"):
        build_model({"name": "online_conv", "cfg": "huge"})
    with pytest.raises(ValueError, match="divisible"):
        build_model({"name": "online_vggf", "cfg": "tiny", "input_size": [30, 30]})
    net = build_model({"name": "online_conv", "cfg": "tiny"})
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        net(torch.randn(2, 28 * 28))
    assert math.isclose(net.leak, 0.5)
