"""Fused multi-step LIF: identical spikes and gradients to the reference loop over ``lif_step``."""
import itertools

import pytest
import torch

from snnlib.metrics import SavedTensorTracker
from snnlib.models import build_model
from snnlib.neurons import (ATan, LIFNode, Rectangle, Sigmoid, Triangle, lif_multistep, lif_multistep_fused,
                            reset_net)

SURROGATES = [Sigmoid(4.0), ATan(2.0), Rectangle(1.0), Triangle(1.0), Rectangle(0.5), None]
RESETS = [dict(reset="soft"), dict(reset="soft", u_rest=-1.0), dict(reset="hard", v_reset=0.1),
          dict(reset="hard"), dict(reset="none")]
CASES = list(itertools.product(RESETS, [False, True], [0.5, 1.0], range(len(SURROGATES))))


pytestmark = pytest.mark.usefixtures("f64")


def _inputs(T=7, shape=(5, 4, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, *shape, generator=g) * 1.6 - 0.2
    x[2, 0] = 1.0                      # exactly at threshold from v = 0 after a reset step
    v0 = torch.rand(*shape, generator=g) * 0.8
    ws = torch.randn(T, *shape, generator=g)
    wv = torch.randn(*shape, generator=g)
    return x, v0, ws, wv


def _grads(fn, x, v0, ws, wv, kw):
    xx, vv = x.clone().requires_grad_(True), v0.clone().requires_grad_(True)
    s, v = fn(xx, vv, **kw)
    loss = (s * ws).sum() + (v * wv).sum()   # gradients through the spikes and the final potential
    gx, gv = torch.autograd.grad(loss, (xx, vv), allow_unused=True)
    return s.detach(), v.detach(), gx, gv


@pytest.mark.parametrize("reset_kw,detach,leak,sg", CASES)
def test_fused_matches_reference_spikes_and_gradients(reset_kw, detach, leak, sg):
    x, v0, ws, wv = _inputs()
    kw = dict(leak=leak, v_th=1.0, surrogate=SURROGATES[sg], detach_reset=detach, **reset_kw)
    s_ref, v_ref, gx_ref, gv_ref = _grads(lif_multistep, x, v0, ws, wv, kw)
    s, v, gx, gv = _grads(lif_multistep_fused, x, v0, ws, wv, kw)
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    assert 0 < s.mean() < 1
    assert torch.allclose(gx, gx_ref, rtol=0, atol=1e-10)
    assert torch.allclose(gv, gv_ref, rtol=0, atol=1e-10)
    if SURROGATES[sg] is not None:
        assert gx.abs().sum() > 0


def test_fused_without_initial_state_and_without_final_gradient():
    x, _, ws, _ = _inputs(T=5)
    kw = dict(leak=0.8, surrogate=Sigmoid(4.0))
    xr, xf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (lif_multistep(xr, **kw)[0] * ws).sum().backward()
    (lif_multistep_fused(xf, **kw)[0] * ws).sum().backward()
    assert torch.allclose(xf.grad, xr.grad, rtol=0, atol=1e-10)


def test_fused_saves_only_the_pre_spike_potential():
    x = torch.rand(6, 4, 10, requires_grad=True)
    with SavedTensorTracker() as tr:
        s, _ = lif_multistep_fused(x, leak=0.5, surrogate=Sigmoid())
    assert tr.total_bytes == x.numel() * x.element_size()
    with SavedTensorTracker() as tr_ref:
        s_ref, _ = lif_multistep(x, leak=0.5, surrogate=Sigmoid())
    assert tr_ref.total_bytes >= tr.total_bytes      # the reference saves h - v_th per step
    assert tr.count == 1 < tr_ref.count


def test_fused_without_grad_saves_nothing_and_matches():
    x = torch.rand(6, 4, 10) * 2
    with SavedTensorTracker() as tr:
        s, v = lif_multistep_fused(x, leak=0.5, reset="hard", surrogate=Sigmoid())
    s_ref, v_ref = lif_multistep(x, leak=0.5, reset="hard", surrogate=Sigmoid())
    assert tr.count == 0 and torch.equal(s, s_ref) and torch.equal(v, v_ref)


@pytest.mark.parametrize("backend", ["fused", "torch"])
def test_module_backends_agree_over_chunks(backend):
    """Two multi-step calls carry the state: gradients flow through v between chunks."""
    x, _, ws, _ = _inputs(T=8)
    ref = LIFNode(leak=0.7, step_mode="s")
    xr = x.clone().requires_grad_(True)
    out_ref = torch.stack([ref(xt) for xt in xr])
    (out_ref * ws).sum().backward()
    m = LIFNode(leak=0.7, step_mode="m", backend=backend)
    xm = x.clone().requires_grad_(True)
    out = torch.cat([m(xm[:3]), m(xm[3:])])
    (out * ws).sum().backward()
    assert torch.equal(out, out_ref) and torch.equal(m.v, ref.v)
    assert torch.allclose(xm.grad, xr.grad, rtol=0, atol=1e-10)
    reset_net(m)
    assert m.v == 0.0


def test_conv_snn_gradients_equal_across_backends():
    info = {"channels": 1, "size": (12, 12), "num_classes": 4}
    nets = {}
    for backend in ("fused", "torch"):
        torch.manual_seed(0)
        nets[backend] = build_model({"name": "conv_snn", "channels": [4, 6], "first_layer_gain": 3.0,
                                     "neuron": {"leak": 0.5, "backend": backend}}, info)
    x = torch.rand(3, 5, 1, 12, 12)
    outs = {}
    for b, net in nets.items():
        outs[b] = net(x)
        outs[b].square().mean().backward()
    assert torch.equal(outs["fused"], outs["torch"])
    for (n, p), q in zip(nets["fused"].named_parameters(), nets["torch"].parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-10), n


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="backend"):
        LIFNode(backend="cuda")
    with pytest.raises(ValueError, match="v0 has shape"):
        lif_multistep_fused(torch.zeros(3, 2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="unknown reset"):
        lif_multistep_fused(torch.zeros(3, 2), reset="sof")
