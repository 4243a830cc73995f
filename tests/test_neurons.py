"""Neurons: step functions, modules over them, surrogates and rate estimators."""
import pytest
import torch

from snnlib.neurons import (ATan, IFNode, LIFNode, MemoryModule, Rectangle, Sigmoid, Triangle, get_surrogate,
                            if_step, lif_multistep, lif_step, mean_rate, rate_normaliser, reset_net,
                            set_step_mode, state_bytes, ternary_step, weighted_rate, RateAccumulator)



pytestmark = pytest.mark.usefixtures("f64")


def test_lif_step_hand_computed():
    x = torch.tensor([0.6, 1.5, 0.2])
    v = torch.tensor([0.8, 0.0, -0.4])
    s, v2 = lif_step(x, v, leak=0.5, v_th=1.0)
    # h = 0.5 v + x = [1.0, 1.5, 0.0]; spikes at h >= 1
    assert s.tolist() == [1.0, 1.0, 0.0]
    assert torch.allclose(v2, torch.tensor([0.0, 0.5, 0.0]))


def test_soft_reset_to_u_rest_subtracts_vth_minus_u_rest():
    s, v = lif_step(torch.tensor([1.2]), torch.tensor([0.0]), v_th=1.0, u_rest=-1.0)
    assert s.item() == 1.0 and v.item() == pytest.approx(-0.8)


def test_hard_reset_sets_v_reset():
    s, v = lif_step(torch.tensor([1.2, 0.3]), torch.zeros(2), reset="hard", v_reset=0.1)
    assert s.tolist() == [1.0, 0.0] and torch.allclose(v, torch.tensor([0.1, 0.3]))


def test_if_is_lif_with_unit_leak():
    x, v = torch.rand(50), torch.rand(50)
    assert all(torch.equal(a, b) for a, b in zip(if_step(x, v), lif_step(x, v, leak=1.0)))


def test_unknown_reset_is_named():
    with pytest.raises(ValueError, match="unknown reset 'sof'"):
        lif_step(torch.zeros(1), torch.zeros(1), reset="sof")


@pytest.mark.parametrize("kw", [dict(leak=0.5), dict(leak=1.0, u_rest=-1.0), dict(reset="hard", leak=0.9)])
def test_module_matches_function_single_and_multi_step(kw):
    torch.manual_seed(0)
    x = torch.rand(6, 4, 3) * 1.5
    ref, v_ref = lif_multistep(x, **kw)
    m = LIFNode(step_mode="m", **kw)
    assert torch.equal(m(x), ref) and torch.equal(m.v, v_ref)
    reset_net(m)
    m.step_mode = "s"
    assert torch.equal(torch.stack([m(xt) for xt in x]), ref)


def test_reset_net_resets_every_memory_and_only_that_net():
    a = torch.nn.Sequential(LIFNode(), torch.nn.Linear(3, 3), IFNode())
    b = LIFNode()
    a[0](torch.ones(2, 3)); a[2](torch.ones(2, 3)); b(torch.full((2, 3), 0.5))
    reset_net(a)
    assert a[0].v == 0.0 and a[2].v == 0.0
    assert isinstance(b.v, torch.Tensor) and b.v.abs().sum() > 0   # another net keeps its state
    set_step_mode(a, "m")
    assert a[0].step_mode == "m" and a[2].step_mode == "m"


def test_state_bytes_counts_tensor_memories():
    m = LIFNode()
    m(torch.ones(4, 5))
    assert state_bytes(m) == 4 * 5 * torch.ones(1).element_size()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="leak"):
        LIFNode(leak=1.5)
    with pytest.raises(ValueError, match="step_mode"):
        LIFNode(step_mode="x")
    with pytest.raises(ValueError, match="IFNode"):
        IFNode(leak=0.5)
    with pytest.raises(ValueError, match="unknown surrogate"):
        get_surrogate("sigmod")
    with pytest.raises(ValueError, match=r"\[T, B"):
        LIFNode(step_mode="m")(torch.ones(3))


def test_memory_module_register_and_detach():
    class Acc(MemoryModule):
        def __init__(self):
            super().__init__()
            self.register_memory("acc", 0.0)

        def single_step_forward(self, x):
            self.acc = self.acc + x
            return self.acc

    m = Acc()
    w = torch.ones(2, requires_grad=True)
    m(w)
    m.detach()
    assert not m.acc.requires_grad
    m.reset()
    assert m.acc == 0.0


@pytest.mark.parametrize("sg", [Sigmoid(4.0), ATan(2.0), Rectangle(1.0), Triangle(1.0), Rectangle(0.5)])
def test_surrogate_backward_is_derivative_of_its_primitive(sg):
    z = torch.linspace(-2, 2, 401, requires_grad=True)
    s = sg(z)
    assert torch.equal(s, (z >= 0).to(z.dtype))   # forward is Heaviside
    (g,) = torch.autograd.grad(s.sum(), z)
    zp = z.detach().clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(sg.primitive(zp).sum(), zp)
    # away from the kinks of piecewise primitives, autograd of the primitive is the derivative
    w = getattr(sg, "width", None)
    kinks = torch.zeros_like(z, dtype=torch.bool)
    if w is not None:
        for k in (w / 2, -w / 2, w, -w, 0.0):
            kinks |= (z.detach() - k).abs() < 1e-9
    assert torch.allclose(g[~kinks], g_ref[~kinks], atol=1e-12)
    assert g.abs().sum() > 0


def test_surrogate_primitive_goes_from_zero_to_one():
    for sg in (Sigmoid(4.0), ATan(2.0), Rectangle(1.0), Triangle(1.0)):
        assert sg.primitive(torch.tensor(-50.0)) < 0.02 and sg.primitive(torch.tensor(50.0)) > 0.98


def test_ternary_neuron_emits_signed_spikes_and_resets():
    z, v = ternary_step(torch.tensor([0.7, -0.9, 0.2]), torch.zeros(3), v_th=0.5, u_rest=-0.5)
    assert z.tolist() == [1.0, -1.0, 0.0]
    assert torch.allclose(v, torch.tensor([-0.3, 0.1, 0.2]))


def test_weighted_rate_matches_definition_and_accumulator():
    torch.manual_seed(1)
    s = (torch.rand(7, 3, 4) > 0.5).double()
    lam = 0.9
    manual = sum(lam ** (6 - t) * s[t] for t in range(7)) / rate_normaliser(7, lam)
    assert torch.allclose(weighted_rate(s, lam), manual)
    assert torch.allclose(weighted_rate(s, 1.0), mean_rate(s))
    acc = RateAccumulator(lam)
    for st in s:
        acc.update(st)
    assert torch.allclose(acc.rate(), manual)
    with pytest.raises(ValueError, match="positive"):
        rate_normaliser(0)


def test_if_rate_approaches_input_over_threshold():
    x = torch.linspace(0.05, 0.95, 19)
    s, _ = lif_multistep(x.expand(1000, 19), leak=1.0, v_th=1.0)
    assert (mean_rate(s) - x).abs().max() < 2e-3


def test_shared_dropout_reuses_its_mask_over_time_until_reset():
    from snnlib.layers import SharedDropout
    torch.manual_seed(0)
    d = SharedDropout(0.5, step_mode="m")
    x = torch.ones(5, 3, 40)
    y = d(x)
    assert all(torch.equal(y[0], y[t]) for t in range(5))
    assert set(y.unique().tolist()) == {0.0, 2.0}
    d.step_mode = "s"
    assert torch.equal(d(x[0]), y[0])           # the same mask in single-step calls
    reset_net(d)
    assert not torch.equal(d(x[0]), y[0])        # a new batch, a new mask
    d.eval()
    assert torch.equal(d(x[0]), x[0])


def test_shared_dropout_draws_the_same_mask_whatever_the_memory_layout():
    from snnlib.layers import SharedDropout
    x = torch.ones(4, 3, 5, 6)
    masks = []
    for like in (x, x.contiguous(memory_format=torch.channels_last)):
        torch.manual_seed(1)
        d = SharedDropout(0.5)
        y = d(like)
        assert y.is_contiguous(memory_format=torch.channels_last) == (like is not x)
        masks.append(d.mask)
    assert torch.equal(masks[0], masks[1])
