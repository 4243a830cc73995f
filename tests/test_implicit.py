"""Implicit differentiation on the equilibrium of a feedback SNN (float64, fixed seeds).

The implicit gradient solves (I - J^T) beta = dL/da with VJPs through the rate map at the SNN's
estimate, then backpropagates beta once through f. It must match a dense solve, equal finite
differences at an exact fixed point, keep memory flat in T, and fail loudly (never silent NaN).
"""
import copy
import math

import pytest
import torch
from torch.nn import functional as F

from snnlib.equilibrium import (BACKWARDS, ImplicitSolveWarning, broyden, equilibrium_forward, implicit_rates,
                                register_backward)
from snnlib.metrics import step_memory
from snnlib.methods import build_method
from snnlib.models.ide import IDEFC
from snnlib.neurons import reset_net
from snnlib.equilibrium.spiking_backward import cosine


pytestmark = pytest.mark.usefixtures("f64_seeded")


def small_net(dropout=0.2, leak=1.0, hidden=12):
    torch.manual_seed(1)
    return IDEFC(in_channels=1, input_size=(4, 5), num_classes=3, hidden=hidden, dropout=dropout, leak=leak)


def batch(B=6):
    g = torch.Generator().manual_seed(2)
    return torch.randn(B, 1, 4, 5, generator=g), torch.randint(0, 3, (B,), generator=g)


def grads(net, backward, T=20, **opts):
    """Parameter gradients of one training step of a copy of ``net`` (same masks and statistics)."""
    net = copy.deepcopy(net)
    x, y = batch()
    torch.manual_seed(3)
    res = equilibrium_forward(net, x, T, backward=backward, **opts)
    F.cross_entropy(res.logits, y).backward()
    reset_net(net)
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()], res


def test_implicit_gradient_matches_dense_solve():
    """Done-when: cosine >= 0.9999 with the exact (dense-solve) gradient; one-step is measured."""
    net = small_net()
    exact, _ = grads(net, "exact")
    for name in ("broyden", "anderson", "fixed_point"):
        g, res = grads(net, name, max_iter=100, tol=1e-12)
        assert cosine(g, exact) >= 0.9999, name
        assert res.record.stats["nstep"] >= 1
    one, _ = grads(net, "one_step")
    c = cosine(one, exact)
    assert math.isfinite(c) and -1.0 <= c <= 1.0


def test_dense_solve_residual_is_tiny():
    _, res = grads(small_net(), "exact")
    assert res.record.stats["rel_lowest"] < 1e-10


def exact_fixed_point_loss(net, x, y):
    """L(readout(a*)) with a* the exact fixed point of f (eval mode: f is deterministic)."""
    snn = net.snn
    inputs, events = net.encode(x, 1)
    drive = snn.drive(inputs, events=events)
    with torch.no_grad():
        like = [torch.zeros(x.shape[0], net.classifier.in_features)]
        a, st = broyden(lambda v: snn.pack(snn.rate_map(snn.unpack(v, like), drive)), snn.pack(like),
                        max_iter=200, tol=1e-14)
    assert st.converged
    return a, drive, like


def test_implicit_gradient_equals_finite_differences_at_exact_fixed_point():
    net = small_net(dropout=0.0)
    net.eval()
    x, y = batch()
    a, drive, like = exact_fixed_point_loss(net, x, y)
    snn = net.snn
    av = a.detach().requires_grad_()
    fa = snn.pack(snn.rate_map(snn.unpack(av, like), drive))
    z = implicit_rates(fa, av, backward="broyden", max_iter=200, tol=1e-13)
    loss = F.cross_entropy(net.readout(snn.unpack(z, like)), y)
    W = net.snn.streams[0].feedback.op.parametrizations.weight.original
    L = net.snn.streams[0].input_map.op[1].weight
    gW, gL = torch.autograd.grad(loss, [W, L])

    def value():
        with torch.no_grad():
            a2, d2, _ = exact_fixed_point_loss(net, x, y)
            return float(F.cross_entropy(net.readout(snn.unpack(a2, like)), y))

    eps = 1e-6
    for P, G in ((W, gW), (L, gL)):
        for idx in [(0, 1), (3, 2), (5, 7)]:
            with torch.no_grad():
                P[idx] += eps
            up = value()
            with torch.no_grad():
                P[idx] -= 2 * eps
            down = value()
            with torch.no_grad():
                P[idx] += eps
            assert (up - down) / (2 * eps) == pytest.approx(float(G[idx]), rel=1e-5, abs=1e-9)


def test_one_step_is_backprop_through_one_evaluation_of_f():
    net = small_net()
    g_one, res = grads(net, "one_step")
    # by hand: the same forward, dL/dtheta = (df/dtheta)^T dL/da
    net2 = copy.deepcopy(net)
    x, y = batch()
    torch.manual_seed(3)
    snn = net2.snn
    inputs, ev = net2.encode(x, 20)
    from snnlib.layers import power_iterate
    power_iterate(snn)
    drive = snn.drive(inputs, events=ev)
    with torch.no_grad():
        sim = snn.simulate(drive, 20)
    fa = snn.rate_map([sim.last[0]], drive)[0]
    logits = net2.readout([sim.last[0] + (fa - fa.detach())])
    F.cross_entropy(logits, y).backward()
    for p, g in zip(net2.parameters(), g_one):
        assert torch.allclose(p.grad if p.grad is not None else torch.zeros_like(p), g, atol=1e-12)


def test_unconverged_backward_warns_with_its_residual():
    with pytest.warns(ImplicitSolveWarning, match="relative residual"):
        grads(small_net(), "fixed_point", max_iter=1, tol=1e-14, warn_tol=1e-8)


def test_nan_gradient_raises_instead_of_returning_nan():
    net = small_net()
    x, y = batch()
    res = equilibrium_forward(net, x, 5)
    with pytest.raises(FloatingPointError, match="NaN"):
        (res.logits * float("nan")).sum().backward()


def test_bad_backward_names_and_shapes_are_reported():
    a = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="unknown backward 'newton'"):
        implicit_rates(a * 2, a, backward="newton")
    with pytest.raises(ValueError, match="leaf"):
        implicit_rates(a * 2, a * 1, backward="broyden")
    with pytest.raises(ValueError, match="shape"):
        implicit_rates((a * 2)[:, :2], a)
    with pytest.raises(ValueError, match="dense"):
        from snnlib.equilibrium import dense_jacobian
        dense_jacobian(lambda v: v, torch.zeros(100, 100))


def test_custom_backward_plugs_in():
    @register_backward("test_double")
    def double(problem, **_):
        return 2 * problem.grad, {"nstep": 0}
    try:
        net = small_net()
        g2, _ = grads(net, "test_double")
        g1, _ = grads(net, "one_step")
        for (name, _), a, b in zip(net.named_parameters(), g2, g1):
            expected = b if name.startswith("classifier") else 2 * b   # beta = 2 g flows into f only
            assert torch.allclose(a, expected, atol=1e-14), name
    finally:
        BACKWARDS.pop("test_double")


def method_memory(backward, T, net=None, B=8):
    net = copy.deepcopy(net or small_net(hidden=64))
    method = build_method("ide", net, T=T, backward=backward)
    x, y = batch(B)
    torch.manual_seed(0)
    return step_memory(method, x, y)


def test_memory_is_flat_in_T_for_the_implicit_backward():
    m5, m30 = method_memory("broyden", 5), method_memory("broyden", 30)
    assert m30["total_bytes"] / m5["total_bytes"] <= 1.05
    assert m5["solver_bytes"] > 0 and m5["state_bytes"] > 0


def test_bptt_on_the_same_net_grows_linearly_in_T():
    s = {T: method_memory("bptt", T)["saved_peak_bytes"] for T in (5, 10, 30)}
    per_step = (s[10] - s[5]) / 5
    assert per_step > 0
    assert s[30] == pytest.approx(s[5] + 25 * per_step, rel=1e-9)   # exactly linear in T


def test_method_step_statistics_and_evaluation():
    net = small_net()
    method = build_method("ide", net, T=5, backward="broyden", max_iter=30, tol=1e-8)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = batch()
    st1 = method.train_step(x, y, opt)
    st2 = method.train_step(x, y, opt)          # a second batch trains (state was reset)
    for st in (st1, st2):
        assert math.isfinite(st["loss"]) and 0 <= st["correct"] <= len(y)
        assert {"forward_rel_residual", "backward_nstep", "backward_rel_lowest"} <= set(st["solver"])
        assert st["extra_memory_bytes"] > 0
    net.eval()
    with method.monitor() as mon, torch.no_grad():
        out = method.predict(x)
    assert out.shape == (6, 3)
    assert set(mon.rates()) == {"layer1"} and 0 <= mon.rates()["layer1"] <= 1


def test_method_rejects_models_that_are_not_equilibrium_nets():
    with pytest.raises(TypeError, match="equilibrium model"):
        build_method("ide", torch.nn.Linear(3, 3), T=5)
    with pytest.raises(ValueError, match="unknown backward"):
        build_method("ide", small_net(), T=5, backward="adjoint")


def test_iterative_backwards_agree_with_the_dense_solve_to_1e_10():
    """The fast solvers (reused buffers, batched products) keep float64 gradients at the dense solve's."""
    net = small_net()
    exact, _ = grads(net, "exact")
    flat = torch.cat([g.flatten() for g in exact])
    for name in ("broyden", "anderson"):
        for _ in range(2):                      # the second step runs on reused solver buffers
            g, res = grads(net, name, max_iter=200, tol=1e-14)
            err = float((torch.cat([x.flatten() for x in g]) - flat).norm() / flat.norm())
            assert err < 1e-10, (name, err)


def test_rate_map_clamp_has_torch_clamp_values_and_gradients():
    """clamp01 saves its derivative mask (cheap repeated VJPs); derivative 0 at exactly 0 and 1, as torch's."""
    from snnlib.equilibrium.implicit import clamp01
    x = torch.cat([torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0]), 3 * torch.randn(200)]).requires_grad_()
    gout = torch.randn(x.shape)
    y1, y2 = torch.clamp(x, 0.0, 1.0), clamp01(x)
    assert torch.equal(y1, y2)
    assert torch.equal(*(torch.autograd.grad(y, x, gout)[0] for y in (y1, y2)))
    with torch.no_grad():
        assert clamp01(x).grad_fn is None


@pytest.mark.parametrize("memory", [27, 5])
def test_broyden_implicit_gradient_equals_the_dense_solve_to_1e_10(memory):
    """float64: the Broyden backward (run to convergence; memory 5 keeps overwriting its oldest
    pair) gives every parameter gradient of the dense solve to 1e-10 relative."""
    net = small_net()
    exact, _ = grads(net, "exact")
    g, res = grads(net, "broyden", max_iter=200, tol=1e-14, memory=memory)
    assert res.record.stats["rel_lowest"] < 1e-13
    num = math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(g, exact)))
    den = math.sqrt(sum(float(b.pow(2).sum()) for b in exact))
    assert num / den < 1e-10
