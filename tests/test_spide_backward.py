"""SPIDE's spike-based backward: transposed operators, ternary solve, two-stage rate updates.

Dense float64 systems with explicit matrices: the spiking solve must converge to the exact
solution of (I - J^T) beta = g as T_b grows, saturate when the scale is too large, and the
explicit transposed operators must be the adjoints of the forward maps.
"""
import pytest
import torch
from torch import nn

from snnlib.equilibrium.spiking_backward import (TransposedOp, cosine, dense_solve, rate_weight_grads,
                                                 ternary_solve, transpose_of)
from snnlib.layers import SharedDropout


pytestmark = pytest.mark.usefixtures("f64_seeded")


def _vjp(module, x_shape, y):
    x0 = torch.zeros(x_shape, requires_grad=True)
    (gx,) = torch.autograd.grad(module(x0), x0, y)
    return gx


def _dense_matrix(module, in_shape):
    """Matrix of the linear part of ``module`` (columns = responses to unit inputs)."""
    n = int(torch.tensor(in_shape[1:]).prod())
    with torch.no_grad():
        eye = torch.eye(n).reshape(n, *in_shape[1:])
        cols = module(eye) - module(torch.zeros(1, *in_shape[1:]))
    return cols.reshape(n, -1).T   # [out, in]


MODULES = {
    "conv_s2_p2": (lambda: nn.Conv2d(3, 4, 5, stride=2, padding=2), (2, 3, 14, 14)),
    "conv_s2_odd": (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1), (2, 3, 9, 9)),
    "conv_k9_s2_p4": (lambda: nn.Conv2d(2, 3, 9, stride=2, padding=4), (1, 2, 12, 12)),
    "convT_s2": (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1, bias=False), (2, 4, 4, 4)),
    "linear": (lambda: nn.Linear(7, 5), (3, 7)),
    "avgpool": (lambda: nn.AvgPool2d(2), (2, 3, 8, 8)),
    "avgpool_odd": (lambda: nn.AvgPool2d(2), (2, 3, 7, 7)),
    "flatten_linear": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 6)), (2, 3, 4, 4)),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_explicit_transpose_is_the_adjoint(name):
    make, in_shape = MODULES[name]
    m = make()
    op = transpose_of(m, in_shape)
    out_shape = m(torch.zeros(in_shape)).shape
    y = torch.randn(out_shape)
    assert torch.allclose(op(y), _vjp(m, in_shape, y), atol=1e-12)
    assert "vjp" not in op.name   # an explicit operation, not the autograd fallback


def test_dropout_transpose_reuses_the_forward_mask():
    drop = SharedDropout(0.5).train()
    lin = nn.Linear(6, 8)
    net = nn.Sequential(lin, drop)
    net(torch.zeros(4, 6))                 # draws the mask
    op = transpose_of(net, (4, 6))
    y = torch.randn(4, 8)
    assert torch.allclose(op(y), (y * drop.mask) @ lin.weight)
    assert torch.allclose(op(y), _vjp(net, (4, 6), y))


@pytest.mark.parametrize("name", ["conv_s2_p2", "convT_s2", "linear", "avgpool", "flatten_linear"])
def test_sops_count_each_nonzero_input_times_its_true_fan_out(name):
    make, in_shape = MODULES[name]
    m = make()
    with torch.no_grad():
        if hasattr(m, "weight") or isinstance(m, nn.Sequential):
            for p in m.parameters():
                p.add_(0.01 * torch.sign(p) + 0.01)    # no accidental zero weights
    op = transpose_of(m, in_shape)
    one = (1,) + tuple(in_shape[1:])
    A = _dense_matrix(m, one)                         # forward matrix [out, in]
    out_shape = (1,) + tuple(m(torch.zeros(one)).shape[1:])
    y = (torch.rand(out_shape) > 0.6).double() * torch.randn(out_shape)
    # the transpose sends every nonzero y_j to the inputs of column j of A^T, i.e. row j of A
    expected = int(((A != 0).double().sum(1) * (y.reshape(-1) != 0).double()).sum())
    assert op.sops(y) == expected


def _dense_problem(n=(24, 16), B=6, gain=0.6, seed=0):
    """Two-layer loop: layer 0 -> 1 by W0, feedback 1 -> 0 by W1; random masks; loop gain < 1."""
    g0 = torch.Generator().manual_seed(seed)
    W0 = torch.randn(n[1], n[0], generator=g0)
    W1 = torch.randn(n[0], n[1], generator=g0)
    W0 *= gain / torch.linalg.matrix_norm(W0, 2)
    W1 *= gain / torch.linalg.matrix_norm(W1, 2)
    masks = [(torch.rand(B, k, generator=g0) > 0.3).double() for k in n]
    g = torch.randn(B, n[1], generator=g0) * 2e-3
    V = 1.0
    tr = [TransposedOp(lambda y: y @ W0, lambda y: y @ (W0 != 0).double(), "W0^T"),
          TransposedOp(lambda y: y @ W1, lambda y: y @ (W1 != 0).double(), "W1^T")]
    return g, tr, masks, V, (W0, W1)


def _exact_by_matrix(g, masks, W, V):
    """beta from one dense linear solve of the stacked system (independent of dense_solve)."""
    W0, W1 = W
    B, n0 = masks[0].shape
    n1 = masks[1].shape[1]
    out = []
    for b in range(B):
        D0, D1 = torch.diag(masks[0][b]), torch.diag(masks[1][b])
        # unknowns [beta0; beta1]: beta0 = W0^T D1 beta1 / V ; beta1 = g + W1^T D0 beta0 / V
        A = torch.eye(n0 + n1)
        A[:n0, n0:] -= W0.T @ D1 / V
        A[n0:, :n0] -= W1.T @ D0 / V
        rhs = torch.cat([torch.zeros(n0), g[b]])
        out.append(torch.linalg.solve(A, rhs))
    sol = torch.stack(out)
    return [sol[:, :n0], sol[:, n0:]]


def test_dense_solve_matches_a_direct_linear_solve():
    g, tr, masks, V, W = _dense_problem()
    beta, _ = dense_solve(g, tr, masks, V=V)
    ref = _exact_by_matrix(g, masks, W, V)
    for a, b in zip(beta, ref):
        assert torch.allclose(a, b, atol=1e-12)


def test_spiking_solve_converges_to_the_exact_solution_as_T_b_grows():
    g, tr, masks, V, W = _dense_problem()
    exact = _exact_by_matrix(g, masks, W, V)
    errs, coss = [], []
    for T_b in (10, 30, 100, 250, 1000):
        sol = ternary_solve(g, tr, masks, T_b=T_b, V=V, scale=100.0)
        diff = torch.cat([(a - b).reshape(-1) for a, b in zip(sol.beta, exact)])
        ref = torch.cat([b.reshape(-1) for b in exact])
        errs.append(float(diff.norm() / ref.norm()))
        coss.append(cosine(sol.beta, exact))
    assert coss[3] >= 0.99                                   # T_b = 250
    assert all(b >= a - 1e-3 for a, b in zip(coss, coss[1:]))  # rises with T_b
    assert errs[-1] < errs[0] / 20                            # error falls roughly like 1/T_b
    assert 0.3 < (errs[1] / errs[3]) / (250 / 30) < 3.0


def test_too_large_a_scale_saturates_and_stops_improving():
    g, tr, masks, V, W = _dense_problem()
    exact = _exact_by_matrix(g, masks, W, V)
    big = [ternary_solve(g, tr, masks, T_b=T_b, V=V, scale=3000.0) for T_b in (100, 1000)]
    assert big[0].saturated[1] > 0.2
    c100, c1000 = cosine(big[0].beta, exact), cosine(big[1].beta, exact)
    assert c1000 < 0.97 and abs(c1000 - c100) < 0.02
    good = ternary_solve(g, tr, masks, T_b=1000, V=V, scale=100.0)
    assert cosine(good.beta, exact) > c1000 + 0.02


def test_signed_rates_are_scale_times_beta_and_spikes_are_ternary():
    g, tr, masks, V, W = _dense_problem()
    sol = ternary_solve(g, tr, masks, T_b=50, V=V, scale=100.0, count_sops=True)
    for r, b in zip(sol.rates, sol.beta):
        assert torch.allclose(r, 100.0 * b)
        # a rate is (number of +1 minus number of -1 spikes) / T_b, with unit spike magnitude
        assert torch.allclose(r * 50, torch.round(r * 50), atol=1e-9)
        assert float(r.abs().max()) <= 1.0
    assert all(0.0 < f < 1.0 for f in sol.firing)
    assert sol.sops == sum(sol.sops_per_layer) > 0


def test_modified_backward_reset_is_more_accurate_than_reset_to_zero():
    g, tr, masks, V, W = _dense_problem()
    exact = _exact_by_matrix(g, masks, W, V)
    ref = torch.cat([b.reshape(-1) for b in exact])

    def err(**kw):
        sol = ternary_solve(g, tr, masks, T_b=30, V=V, scale=100.0, **kw)
        return float(torch.cat([(a - b).reshape(-1) for a, b in zip(sol.beta, exact)]).norm() / ref.norm())
    # both have spike magnitude 1: thresholds +-0.5 reset to -+0.5, versus +-1 reset to 0
    assert err(v_th_b=0.5, u_rest_b=-0.5) < 0.8 * err(v_th_b=1.0, u_rest_b=0.0)


def test_lif_backward_uses_lambda_weighted_rates():
    g, tr, masks, V, W = _dense_problem()
    sol = ternary_solve(g, tr, masks, T_b=200, V=V, scale=100.0, leak=0.99)
    exact = _exact_by_matrix(g, masks, W, V)
    assert cosine(sol.beta, exact) > 0.9


def test_rate_weight_grads_are_the_outer_products_of_the_two_rate_stages():
    lin = nn.Linear(5, 4)
    a = torch.rand(3, 5)
    m = (torch.rand(3, 4) > 0.3).double()
    beta = torch.randn(3, 4)
    rate_weight_grads([lin], [a], [m], [beta], V=2.0)
    assert torch.allclose(lin.weight.grad, (m * beta).T @ a / 2.0)
    assert torch.allclose(lin.bias.grad, (m * beta).sum(0) / 2.0)
    rate_weight_grads([lin], [a], [m], [beta], V=2.0)     # accumulates, like autograd
    assert torch.allclose(lin.weight.grad, 2 * (m * beta).T @ a / 2.0)


@pytest.mark.parametrize("kw, msg", [
    ({"T_b": 0}, "T_b"), ({"scale": 0.0}, "scale"), ({"V": 0.0}, "V = V_th"),
    ({"v_th_b": 0.5, "u_rest_b": 0.6}, "threshold"),
])
def test_bad_arguments_are_named(kw, msg):
    g, tr, masks, V, W = _dense_problem()
    args = dict(T_b=10, V=V, scale=1.0)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        ternary_solve(g, tr, masks, **args)


def test_nan_gradient_and_shape_mismatch_are_rejected():
    g, tr, masks, V, W = _dense_problem()
    with pytest.raises(ValueError, match="NaN"):
        ternary_solve(g * float("nan"), tr, masks, T_b=5, V=V)
    with pytest.raises(ValueError, match="last layer"):
        ternary_solve(g[:, :3], tr, masks, T_b=5, V=V)
