"""Fixed-point solvers: one signature, known fixed points, statistics, float64 gradcheck.

Every solver finds z = f(z) for batched tensors of any shape and returns (z, SolverStat).
IDE's released "iter" update is kept to show that it solves (2I - J^T) beta = g instead.
"""
import math

import pytest
import torch

from snnlib.equilibrium import SOLVERS, SolverStat, get_solver, implicit_rates, register_solver
from snnlib.equilibrium.solvers import anderson, broyden, fixed_point, ide_iter

CONVERGENT = ("broyden", "anderson", "fixed_point")
DOTTIE = 0.7390851332151607   # z = cos z


pytestmark = pytest.mark.usefixtures("f64_seeded")


def contractive_system(B=3, n=12, shape=None, gain=0.6):
    A = torch.randn(B, n, n)
    A = gain * A / torch.linalg.matrix_norm(A, ord=2).view(B, 1, 1)
    b = torch.randn(B, n)
    exact = torch.linalg.solve(torch.eye(n) - A, b.unsqueeze(2))[..., 0]
    shape = shape or (B, n)

    def f(z):
        return ((A @ z.reshape(B, n, 1))[..., 0] + b).reshape(shape)
    return f, exact.reshape(shape), A, b


@pytest.mark.parametrize("name", CONVERGENT)
def test_cosine_fixed_point(name):
    z, st = get_solver(name)(torch.cos, torch.zeros(4, 3), max_iter=100, tol=1e-12, stop_mode="abs")
    assert torch.allclose(z, torch.full((4, 3), DOTTIE), atol=1e-10)
    assert st.converged and st.abs_lowest < 1e-12


@pytest.mark.parametrize("name", CONVERGENT)
@pytest.mark.parametrize("shape", [(3, 12), (3, 3, 2, 2)])
def test_linear_fixed_point_any_shape(name, shape):
    f, exact, _, _ = contractive_system(shape=shape)
    z, st = get_solver(name)(f, torch.zeros(shape), max_iter=200, tol=1e-12)
    assert z.shape == exact.shape
    assert torch.allclose(z, exact, atol=1e-9)
    assert st.converged


def test_statistics_are_returned_and_consistent():
    f, _, _, _ = contractive_system()
    z, st = broyden(f, torch.zeros(3, 12), max_iter=7, tol=0.0)
    assert isinstance(st, SolverStat) and st.name == "broyden"
    assert st.nstep == 7 == len(st.abs_trace) == len(st.rel_trace)
    assert not st.converged                              # tol = 0 is never reached
    assert st.abs_lowest <= min(st.abs_trace) + 1e-15   # per-sample best is at least as good
    assert st.buffer_bytes > 0
    assert set(st.summary()) == {"nstep", "abs_lowest", "rel_lowest", "converged", "buffer_bytes"}
    # the returned iterate has the residual reported as the lowest
    r = float((f(z) - z).norm())
    assert r == pytest.approx(st.abs_lowest, rel=1e-9)


def test_stop_modes_differ_in_scale():
    f, _, _, _ = contractive_system()
    big = lambda z: 1e6 * f(z / 1e6)            # same problem, scaled by 1e6
    _, st_abs = fixed_point(big, torch.zeros(3, 12), max_iter=500, tol=1e-3, stop_mode="abs")
    _, st_rel = fixed_point(big, torch.zeros(3, 12), max_iter=500, tol=1e-9, stop_mode="rel")
    assert st_abs.converged and st_rel.converged
    assert st_abs.rel_trace[-1] < 1e-8 and st_rel.rel_trace[-1] < 1e-9


def test_damping_converges_where_plain_iteration_diverges():
    b = torch.randn(2, 5)
    f = lambda z: -1.5 * z + b                          # |J| > 1: z <- f(z) diverges
    with pytest.raises(FloatingPointError, match="diverged"):
        fixed_point(f, torch.zeros(2, 5), max_iter=3000, tol=1e-14)
    z, st = fixed_point(f, torch.zeros(2, 5), max_iter=200, tol=1e-12, tau=0.5)
    assert st.converged and torch.allclose(z, b / 2.5, atol=1e-10)


def test_ide_iter_solves_the_wrong_equation():
    """IDE's "iter" update beta <- (beta + G(beta)) / 2 reaches (2I - J^T)^-1 g, not (I - J^T)^-1 g."""
    n = 6
    J = 0.3 * torch.randn(n, n)
    g = torch.randn(1, n)
    f = lambda b: b @ J + g                              # J^T beta + g for row vectors
    z, st = ide_iter(f, g.clone(), max_iter=200, tol=0.0)
    wrong = torch.linalg.solve(2 * torch.eye(n) - J.T, g.T).T
    right = torch.linalg.solve(torch.eye(n) - J.T, g.T).T
    assert torch.allclose(z, wrong, atol=1e-7)
    assert float((z - right).norm() / right.norm()) > 0.1
    zc, stc = fixed_point(f, g.clone(), max_iter=400, tol=1e-13, tau=0.5)   # the correct damped update
    assert torch.allclose(zc, right, atol=1e-9)


def test_anderson_history_one_and_per_sample_independence():
    f, exact, _, _ = contractive_system(B=4)
    z, _ = anderson(f, torch.zeros(4, 12), max_iter=300, tol=1e-12, m=1)
    assert torch.allclose(z, exact, atol=1e-8)
    # samples are solved independently: solving sample 2 alone gives the same iterate
    zb, _ = broyden(f, torch.zeros(4, 12), max_iter=12, tol=0.0)
    g2 = lambda z1: f(torch.cat([torch.zeros(2, 12), z1, torch.zeros(1, 12)]))[2:3]
    z1, _ = broyden(g2, torch.zeros(1, 12), max_iter=12, tol=0.0)
    assert torch.allclose(zb[2:3], z1, atol=1e-10)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="stop_mode"):
        broyden(torch.cos, torch.zeros(2, 2), stop_mode="max")
    with pytest.raises(ValueError, match="max_iter"):
        anderson(torch.cos, torch.zeros(2, 2), max_iter=0)
    with pytest.raises(ValueError, match="tau"):
        fixed_point(torch.cos, torch.zeros(2, 2), tau=1.5)
    with pytest.raises(ValueError, match="batched"):
        broyden(torch.cos, torch.zeros(()))
    with pytest.raises(ValueError, match="unknown solver 'newton'.*broyden"):
        get_solver("newton")
    with pytest.raises(KeyError, match="already registered"):
        register_solver("broyden", broyden)


def _deq(x, W, backward):
    """z* = tanh(W z* + x) solved tightly, with the implicit gradient."""
    with torch.no_grad():
        z, _ = broyden(lambda z: torch.tanh(z @ W.T + x), torch.zeros_like(x), max_iter=100, tol=1e-14)
    a = z.detach().requires_grad_()
    fa = torch.tanh(a @ W.T + x)
    return implicit_rates(fa, a, backward=backward, max_iter=200, tol=1e-13) if backward != "exact" else \
        implicit_rates(fa, a, backward="exact")


@pytest.mark.parametrize("backward", ["broyden", "anderson", "fixed_point", "exact"])
def test_implicit_layer_gradcheck(backward):
    x = torch.randn(2, 5, requires_grad=True)
    W = (0.5 * torch.randn(5, 5) / math.sqrt(5)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, W: _deq(x, W, backward), (x, W), eps=1e-6, atol=1e-6)


def test_registry_lists_every_solver():
    assert set(CONVERGENT) | {"ide_iter"} <= set(SOLVERS)


def reference_broyden(f, x0, max_iter, memory):
    """Limited-memory good Broyden written plainly: per sample, python lists of the last ``memory``
    pairs (u_i, v_i), B = -I + sum u_i v_i^T applied as a loop of dot products. Residual trace."""
    B, n = x0.shape
    mem = min(memory, max(max_iter - 1, 1))
    pairs = [[] for _ in range(B)]

    def apply(b, x, transpose=False):
        out = -x
        for u, v in pairs[b]:
            out = out + (v * torch.dot(u, x) if transpose else u * torch.dot(v, x))
        return out

    z = x0.clone()
    g = f(z) - z
    trace = [float(g.norm())]
    dz = g.clone()
    for _ in range(max_iter - 1):
        z = z + dz
        g_new = f(z) - z
        trace.append(float(g_new.norm()))
        dg, g = g_new - g, g_new
        for b in range(B):
            v = apply(b, dz[b], transpose=True)
            u = (dz[b] - apply(b, dg[b])) / torch.dot(v, dg[b])
            pairs[b] = (pairs[b] + [(u, v)])[-mem:]
        dz = -torch.stack([apply(b, g[b]) for b in range(B)])
    return trace, z


@pytest.mark.parametrize("memory", [27, 4])
def test_broyden_trace_matches_a_plain_reference_implementation(memory):
    """Batched products and reused buffers change nothing but rounding (float64); memory 4 < 12
    iterations exercises the overwriting of the oldest update."""
    B, n = 3, 20
    A = torch.randn(B, n, n)
    A = 0.8 * A / torch.linalg.matrix_norm(A, ord=2).view(B, 1, 1)
    b = torch.randn(B, n)
    f = lambda z: torch.tanh((A @ z.reshape(B, n, 1))[..., 0] + b)
    ref, z_last = reference_broyden(f, torch.zeros(B, n), 12, memory)
    for _ in range(2):                                  # the second solve reuses the workspace buffers
        z, st = broyden(f, torch.zeros(B, n), max_iter=12, tol=0.0, memory=memory)
        assert st.nstep == 12
        for a, r in zip(st.abs_trace, ref):
            assert a == pytest.approx(r, rel=1e-9, abs=1e-13 * ref[0])
    assert torch.allclose(z, z_last, atol=1e-12)        # the residual falls monotonically here: last = best


def test_solvers_reuse_their_history_buffers_and_nested_solves_get_their_own():
    from snnlib.equilibrium.solvers import Workspace
    ws = Workspace()
    f, exact, _, _ = contractive_system()
    z1, _ = broyden(f, torch.zeros(3, 12), max_iter=50, tol=1e-12, workspace=ws)
    bufs = {id(t) for t in ws._idle}                   # the history and the residual rows
    z2, _ = broyden(f, torch.zeros(3, 12), max_iter=50, tol=1e-12, workspace=ws)
    assert {id(t) for t in ws._idle} == bufs and torch.equal(z1, z2) and torch.allclose(z2, exact, atol=1e-9)

    def nested(z):      # a map that itself runs a solve of the same shape with the same workspace
        inner, _ = broyden(f, torch.zeros(3, 12), max_iter=50, tol=1e-12, workspace=ws)
        return 0.5 * z + 0.5 * inner
    z3, st = broyden(nested, torch.zeros(3, 12), max_iter=50, tol=1e-12, workspace=ws)
    assert st.converged and torch.allclose(z3, exact, atol=1e-9)
    assert len(ws._idle) == 2 * len(bufs)               # the outer and the inner buffers, all returned
    za, _ = anderson(f, torch.zeros(3, 12), max_iter=100, tol=1e-12, workspace=None)
    zb, _ = anderson(f, torch.zeros(3, 12), max_iter=100, tol=1e-12, workspace=ws)
    assert torch.equal(za, zb)
    ws.max_idle_bytes = 0
    ws.give(torch.empty(10))
    assert ws._idle == [] and ws.idle_bytes() == 0


def test_anderson_damping_mixes_iterates_and_images():
    f, exact, _, _ = contractive_system()
    z, st = anderson(f, torch.zeros(3, 12), max_iter=200, tol=1e-12, beta=0.6, m=3)
    assert st.converged and torch.allclose(z, exact, atol=1e-9)


def recording(f):
    """f that keeps a copy of every iterate it is called on."""
    seen = []

    def g(z):
        seen.append(z.detach().clone())
        return f(z)
    return g, seen


@pytest.mark.parametrize("memory", [27, 4])
def test_broyden_iterates_match_the_plain_formulas(memory):
    """Every iterate (not only the residual norms) equals the plain reference's to rounding: the
    update u = (dz - B dg) / (v . dg) computed as -B g' / (v . dg) and the next step -B'' g' from
    the same product with the history (memory 4 < 14 iterations overwrites the oldest pair)."""
    B, n = 3, 20
    A = torch.randn(B, n, n)
    A = 0.8 * A / torch.linalg.matrix_norm(A, ord=2).view(B, 1, 1)
    b = torch.randn(B, n)
    f = lambda z: torch.tanh((A @ z.reshape(B, n, 1))[..., 0] + b)
    f_ref, ref_seen = recording(f)
    reference_broyden(f_ref, torch.zeros(B, n), 14, memory)
    f_new, new_seen = recording(f)
    broyden(f_new, torch.zeros(B, n), max_iter=14, tol=0.0, memory=memory)
    assert len(new_seen) == len(ref_seen) == 14
    for zr, zn in zip(ref_seen, new_seen):
        assert torch.allclose(zn, zr, rtol=1e-9, atol=1e-12)


def test_broyden_returns_each_samples_first_lowest_residual_iterate():
    """The result is, per sample, the iterate of lowest residual seen (the first such), picked at the
    end from the recorded norms; here the residuals of the samples are not monotone."""
    B, n = 4, 10
    A = torch.randn(B, n, n)
    A = 5.0 * A / torch.linalg.matrix_norm(A, ord=2).view(B, 1, 1)     # far from contractive: erratic residuals
    b = torch.randn(B, n)
    f = lambda z: torch.sin((A @ z.reshape(B, n, 1))[..., 0] + b)
    f_rec, seen = recording(f)
    z, st = broyden(f_rec, torch.zeros(B, n), max_iter=9, tol=0.0)
    res = torch.stack([(f(s) - s).norm(dim=1) for s in seen])        # [steps, B]
    best = res.argmin(0)
    assert (best != best[0]).any() and (best < len(seen) - 1).any()  # the samples' best steps differ, not all last
    expected = torch.stack([seen[int(best[i])][i] for i in range(B)])
    assert torch.equal(z, expected)
    assert st.abs_lowest == pytest.approx(float(res.min(0).values.norm()), rel=1e-12)


def test_broyden_skips_the_update_of_a_sample_whose_denominator_vanishes():
    """A sample at its fixed point from the start (f(z) = z there: g = 0, so v . dg = 0) gets no
    update and no NaN and stays put; the other samples are solved exactly as without it."""
    f, exact, A, b = contractive_system(B=3, n=12)
    still = torch.tensor([False, True, False]).view(3, 1)
    f_mixed = lambda v: torch.where(still, v, f(v))
    x0 = torch.zeros(3, 12)
    x0[1] = 0.25
    z, st = broyden(f_mixed, x0, max_iter=40, tol=1e-12)
    assert torch.isfinite(z).all() and st.converged
    assert torch.equal(z[1], x0[1])
    keep = [0, 2]
    f2 = lambda v: ((A[keep] @ v.reshape(2, 12, 1))[..., 0] + b[keep])
    z2, _ = broyden(f2, torch.zeros(2, 12), max_iter=40, tol=1e-12)
    assert torch.allclose(z[keep], z2, atol=1e-12) and torch.allclose(z2, exact[keep], atol=1e-9)


def test_broyden_result_does_not_share_the_workspace():
    """The returned iterate is a copy: a later solve of the same shape (same reused buffers) leaves it unchanged."""
    from snnlib.equilibrium.solvers import Workspace
    ws = Workspace()
    f, exact, _, _ = contractive_system()
    z1, _ = broyden(f, torch.zeros(3, 12), max_iter=30, tol=1e-12, workspace=ws)
    kept = z1.clone()
    broyden(lambda v: 0.5 * torch.cos(v), torch.ones(3, 12), max_iter=30, tol=1e-12, workspace=ws)
    assert torch.equal(z1, kept) and torch.allclose(z1, exact, atol=1e-9)
