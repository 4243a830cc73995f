"""The limits benchmark (``python -m snnlib.bench.limits``) times only ways that compute the same numbers."""
import torch
import torch.nn.functional as F

from snnlib.bench import limits


def _history(B=3, k=4, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, W = torch.randn(B, k, n, generator=g, dtype=torch.float64), torch.randn(B, k, n, generator=g, dtype=torch.float64)
    X = torch.randn(B, 2, n, generator=g, dtype=torch.float64)
    return U, W, X


def test_the_three_ways_of_forming_broydens_history_products_agree_in_float64():
    U, W, X = _history()
    g, dz = X[:, 0:1], X[:, 1:2]
    w, y = limits.split_products(U, W, dz, g)
    H = torch.stack((U, W), 2).reshape(U.shape[0], -1, U.shape[2])       # rows u_0, w_0, u_1, w_1, ...
    wf, yf = limits.fused_products(H, X)
    we, ye = limits.elementwise_products(U, W, dz, g)
    # the definition, sample by sample: w = dz + sum_i (u_i . dz) w_i, y = g + sum_i (w_i . g) u_i
    for b in range(U.shape[0]):
        w_ref = dz[b, 0] + sum((U[b, i] @ dz[b, 0]) * W[b, i] for i in range(U.shape[1]))
        y_ref = g[b, 0] + sum((W[b, i] @ g[b, 0]) * U[b, i] for i in range(U.shape[1]))
        for got_w, got_y in ((w, y), (wf, yf), (we, ye)):
            torch.testing.assert_close(got_w[b, 0], w_ref, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(got_y[b, 0], y_ref, rtol=1e-12, atol=1e-12)


def test_history_sizes_follow_a_full_broyden_solve():
    sizes = limits.history_sizes(30, 27)
    assert len(sizes) == 29                       # no update after the last evaluation
    assert sizes[:3] == [0, 1, 2] and max(sizes) == 27 and sizes[-1] == 27
    assert limits.history_sizes(5, 27) == [0, 1, 2, 3]          # memory capped at iterations - 1


def test_broyden_products_reports_every_way_and_their_agreement():
    res = limits.broyden_products(2, 8, rounds=1, reps=1, sizes=[0, 1, 2, 2])
    assert set(res["seconds"]) == {"split", "fused", "elementwise"}
    assert all(v > 0 for v in res["seconds"].values())
    assert res["updates"] == 4 and res["max_rel_difference"] < 1e-5     # float32 rounding only


def test_every_way_of_a_transpose_equals_conv_transpose2d():
    g = torch.Generator().manual_seed(1)
    for stride, hw, opad in ((1, 6, 0), (2, 7, 0), (2, 8, 1)):
        w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
        ho = (hw + 2 - 3) // stride + 1
        y = torch.randn(2, 5, ho, ho, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        kw = {"stride": (stride, stride), "padding": (1, 1), "output_padding": (opad, opad), "groups": 1}
        ways = limits.transpose_ways(y, w, kw)
        assert ("conv2d, flipped kernel" in ways) == (stride == 1)
        ref = F.conv_transpose2d(y, w, **kw)
        assert ref.shape[-1] == hw
        for name, fn in ways.items():
            torch.testing.assert_close(fn(), ref, rtol=1e-12, atol=1e-12, msg=name)


def test_the_mpis_vjp_transposes_are_captured_from_a_real_training_step():
    calls, vjps = limits.mpis_transpose_calls(batch=4)
    assert vjps >= 1 and calls
    for y, w, kw in calls:
        assert y.shape[0] == 4 and y.shape[1] == w.shape[0] and kw.get("bias") is None
    # the spy is gone afterwards: the transpose module uses torch.nn.functional again
    from snnlib.equilibrium import transpose
    assert transpose.F is F
    from snnlib.equilibrium import implicit
    assert all(implicit.BACKWARDS.get(n).__name__ != "counted" for n in implicit.backward_names())
