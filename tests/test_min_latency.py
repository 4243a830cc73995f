"""Minimum-latency SNN: projections, windows, encoder, one-step LIF, the two spiking mixers against
direct per-window implementations of the reference equations, and the reference-size models."""
import math

import pytest
import torch
from torch import nn

from snnlib.layers.projection import get_projection, p_avg, p_none, p_sin
from snnlib.layers.windows import WindowGrid
from snnlib.models.min_latency import MinLatencyNet, parameter_counts, window_plan
from snnlib.models.min_latency_blocks import (PatchMerging, SpikingConvMixer, SpikingLSTMMixer, encode,
                                              input_mode, one_step_lif)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- projections
@pytest.mark.parametrize("name", ["sin", "avg", "none"])
def test_projection_of_zero_state_is_zero(name, f64):
    z = torch.zeros(3)
    assert torch.equal(get_projection(name)(z, z), z)


def test_sine_projection_is_bounded_by_two(f64):
    torch.manual_seed(0)
    a, b = 50 * torch.randn(100000), 50 * torch.randn(100000)
    p = p_sin(a, b)
    assert p.abs().max() <= 2.0
    assert p.abs().max() > 1.999          # the bound is reached, not just respected
    assert torch.allclose(p_sin(torch.tensor([2.0]), torch.tensor([0.0])), torch.tensor([2.0]))


def test_sine_projection_slope_at_zero(f64):
    # dP/da at a = 0 equals (pi/2) cos(pi b / 4)
    b = torch.linspace(-3, 3, 13)
    a = torch.zeros(13, requires_grad=True)
    (g,) = torch.autograd.grad(p_sin(a, b).sum(), a)
    assert torch.allclose(g, math.pi / 2 * torch.cos(math.pi * b / 4))


def test_average_and_identity_projections(f64):
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])
    assert torch.equal(p_avg(a, b), torch.tensor([2.0, -0.75]))
    assert torch.equal(p_none(a, b), b)
    with pytest.raises(ValueError, match="unknown projection"):
        get_projection("cos")


# ----------------------------------------------------------------------------- windows
@pytest.mark.parametrize("size,grid", [(8, 1), (8, 2), (8, 4), (16, 2), (2, 2), (12, 3)])
def test_non_overlapping_windows_reassemble_exactly(size, grid):
    x = torch.randn(3, size, size, 5)
    g = WindowGrid(size, grid)
    w = g.split(x)
    assert w.shape == (grid * grid, 3, size // grid, size // grid, 5)
    assert torch.equal(g.merge(w), x)


@pytest.mark.parametrize("size", [4, 8, 16, 32])
def test_overlapping_windows_reassemble_exactly(size, f64):
    x = torch.randn(2, size, size, 3)
    g = WindowGrid(size, 2, overlap=True)
    assert g.side == 3 * size // 4
    assert torch.equal(g.merge(g.split(x)), x)   # coverage 1, 2 or 4: averaging equal values is exact


def test_overlap_band_and_corner_windows():
    g = WindowGrid(8, 2, overlap=True)          # side 6, band 2*6 - 8 = 4 wide
    assert g.offsets == [(0, 0), (0, 2), (2, 0), (2, 2)]
    cov = g.coverage()[..., 0]
    assert cov[0, 0] == 1 and cov[0, 4] == 2 and cov[4, 4] == 4
    assert int((cov[0] == 2).sum()) == 4


def _reference_overlap_merge(g1, g2, g3, g4, H):
    """The released code's overlap assembly (channels last), rewritten from its formula."""
    s = 3 * H // 4
    oc = 2 * s - H
    h = oc // 2

    def pair(a, b, dim):
        sl = lambda t, i, j: t.narrow(dim, i, j - i)
        mean = (sl(a, h, h + oc) + sl(b, 0, oc)) / 2
        return torch.cat([sl(a, 0, h), mean, sl(b, oc, oc + h)], dim=dim)

    return pair(pair(g1, g2, 2), pair(g3, g4, 2), 1)


@pytest.mark.parametrize("H", [4, 8, 16])
def test_overlap_merge_equals_the_released_assembly(H, f64):
    g = WindowGrid(H, 2, overlap=True)
    w = torch.randn(4, 2, g.side, g.side, 3)
    assert torch.allclose(g.merge(w), _reference_overlap_merge(*w, H))


def test_windows_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="not divisible"):
        WindowGrid(14, 4)
    with pytest.raises(ValueError, match="divisible by 4"):
        WindowGrid(14, 2, overlap=True)
    with pytest.raises(ValueError, match="nothing to overlap"):
        WindowGrid(8, 1, overlap=True)
    with pytest.raises(ValueError, match="channels-last"):
        WindowGrid(8, 2).split(torch.zeros(1, 3, 8, 8))


def test_window_schedule_alternates_and_skips_where_overlap_cannot_fit():
    assert [g.overlap for g in window_plan(16, 2, 2, "alternate")] == [False, True]
    assert [g.overlap for g in window_plan(2, 2, 2, "alternate")] == [False, False]   # stage 4 of the reference
    assert [g.overlap for g in window_plan(8, 3, 2, "always")] == [True, True, True]
    assert [g.overlap for g in window_plan(8, 2, 2, "never")] == [False, False]


# ----------------------------------------------------------------------------- encoder and neuron
def test_bernoulli_encoding_rate_and_no_gradient():
    torch.manual_seed(0)
    x = torch.tensor([-0.5, 0.0, 0.25, 0.75, 1.0, 1.5]).repeat(20000, 1).requires_grad_(True)
    s = encode(x, "bernoulli")
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(s.mean(0), x.detach()[0].clamp(0, 1), atol=0.015)
    assert not s.requires_grad                                      # the released encoder blocks the gradient
    torch.manual_seed(3)
    a = encode(x.detach(), "bernoulli")
    torch.manual_seed(3)
    assert torch.equal(a, encode(x.detach(), "bernoulli"))          # a seed fixes the spikes


def test_straight_through_encoding_has_clamp_gradient():
    x = torch.tensor([-0.5, 0.25, 0.75, 1.5], requires_grad=True)
    torch.manual_seed(0)
    s = encode(x, "bernoulli_st")
    torch.manual_seed(0)
    assert torch.equal(s, encode(x.detach(), "bernoulli"))
    s.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_deterministic_encodings():
    x = torch.tensor([-1.0, 0.3, 0.6, 2.0])
    assert encode(x, "threshold").tolist() == [0.0, 0.0, 1.0, 1.0]
    assert torch.equal(encode(x, "expected"), torch.tensor([0.0, 0.3, 0.6, 1.0]))
    assert torch.equal(encode(x, "identity"), x)
    with pytest.raises(ValueError, match="unknown encoding"):
        encode(x, "poisson")


@pytest.mark.parametrize("Mixer", [SpikingConvMixer, SpikingLSTMMixer])
def test_the_relu_ann_keeps_a_real_valued_encoding_and_takes_no_spikes(Mixer, f64):
    torch.manual_seed(0)
    x = 2 * torch.randn(2, 8, 8, 4) - 0.5                           # inputs well outside [0, 1]
    grid = WindowGrid(8, 2)

    def out(encoding, inp):
        torch.manual_seed(1)
        mix = Mixer(4, neuron="relu", encoding=encoding)
        y = mix(inp, grid)
        return y[0] if isinstance(y, tuple) else y

    assert [input_mode(e, "relu") for e in ("bernoulli", "bernoulli_st", "threshold", "expected", "identity")] \
        == ["identity", "identity", "identity", "expected", "identity"]
    assert input_mode("bernoulli", "lif") == "bernoulli" and input_mode("expected", "lif") == "expected"
    assert torch.equal(out("expected", x), out("identity", x.clamp(0, 1)))    # clamp(x, 0, 1) at the input
    assert torch.equal(out("bernoulli", x), out("identity", x))              # spikes replaced: x itself
    assert not torch.equal(out("expected", x), out("identity", x))


def test_one_step_lif_charges_without_reset_and_has_rectangle_surrogate(f64):
    I = torch.tensor([0.15, 0.2, 0.6, 1.2, -0.2], requires_grad=True)
    carried = torch.tensor([1.0, 0.5, 0.0, 0.0, 0.0])
    s, u = one_step_lif(I, carried)
    assert torch.allclose(u, 0.4 * carried + I)
    assert s.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]                  # u = [0.55, 0.4, 0.6, 1.2, -0.2] >= 0.5
    (g,) = torch.autograd.grad(s.sum(), I)
    assert g.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]                  # 1 only for u in (0, 1)


@pytest.mark.parametrize("carried", ["tensor", "zero"])
def test_one_step_lif_is_lif_step_without_reset_bit_for_bit(carried, f64):
    torch.manual_seed(0)
    I = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, 7, dtype=torch.float64) if carried == "tensor" else 0
    s, u = one_step_lif(I, c)
    u_ref = 0.4 * c + I                                              # the written-out charge, no reset
    s_ref = (u_ref - 0.5 >= 0).to(torch.float64)
    assert torch.equal(u, u_ref) and torch.equal(s, s_ref)
    (g,) = torch.autograd.grad(s.sum(), I)
    assert torch.equal(g, ((u_ref > 0) & (u_ref < 1)).to(torch.float64))   # rectangle, width 1, around v_th
    a, u_relu = one_step_lif(I, c, neuron="relu")
    assert torch.equal(u_relu, u_ref) and torch.equal(a, torch.relu(u_ref))
    with pytest.raises(ValueError, match="unknown neuron"):
        one_step_lif(I, c, neuron="tanh")


# ----------------------------------------------------------------------------- mixers vs direct equations
def _lif(u):
    return (u >= 0.5).to(u.dtype)


def _reference_cnn_mixer(mix, x, grid, P, recurrent=True):
    """Per-window convs and the §2 recursion, written out directly."""
    outs, a_prev, b_prev = [], None, None
    for (r, c) in grid.offsets:
        win = x[:, r:r + grid.side, c:c + grid.side].permute(0, 3, 1, 2)
        spk = (win > 0.5).to(x.dtype)                                # 'threshold' encoding
        a = mix.conv1(spk) + (0.4 * a_prev if recurrent and a_prev is not None else 0)
        b = mix.conv2(_lif(a)) + (0.4 * P(a_prev, b_prev) if recurrent and a_prev is not None else 0)
        outs.append(_lif(b).permute(0, 2, 3, 1))
        a_prev, b_prev = a, b
    return mix.fc(grid.merge(torch.stack(outs)))


@pytest.mark.parametrize("projection", ["sin", "avg", "none"])
@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("recurrent", [True, False])
def test_conv_mixer_matches_the_per_window_recursion(projection, overlap, recurrent, f64):
    torch.manual_seed(0)
    mix = SpikingConvMixer(6, projection=projection, recurrent=recurrent, encoding="threshold")
    with torch.no_grad():
        for conv in (mix.conv1, mix.conv2):
            conv.weight.mul_(4.0)                                    # make the layers spike
    grid = WindowGrid(8, 2, overlap=overlap)
    x = torch.rand(3, 8, 8, 6)
    y = mix(x, grid)
    ref = _reference_cnn_mixer(mix, x, grid, get_projection(projection), recurrent)
    assert torch.allclose(y, ref)
    rate = float(mix.probe_out(torch.zeros(1)).sum())               # probes are identities
    assert rate == 0.0


def _reference_rnn_mixer(mix, x, grid, M, P):
    """Per-window BiLSTM and the released order of projection arguments."""
    s = grid.side
    I, Mw = [], []
    for (r, c) in grid.offsets:
        win = x[:, r:r + s, c:c + s]
        spk = (win > 0.5).to(x.dtype).reshape(x.shape[0], s * s, -1)
        I.append(mix.lstm(spk)[0].reshape(x.shape[0], s, s, -1))
        Mw.append(M[:, r:r + s, c:c + s])
    u1 = 0.4 * P(Mw[0], Mw[1]) + I[0]
    u2 = 0.4 * P(u1, Mw[1]) + I[1]
    u3 = 0.4 * P(Mw[2], u2) + I[2]
    u4 = 0.4 * P(Mw[3], u3) + I[3]
    u = [u1, u2, u3, u4]
    y = mix.fc(grid.merge(torch.stack([_lif(v) for v in u])))
    return y, grid.merge(torch.stack(u))


@pytest.mark.parametrize("overlap", [False, True])
def test_lstm_mixer_matches_the_released_order(overlap, f64):
    torch.manual_seed(0)
    mix = SpikingLSTMMixer(4, encoding="threshold")
    grid = WindowGrid(8, 2, overlap=overlap)
    x, M = torch.rand(2, 8, 8, 4), torch.randn(2, 8, 8, 8)
    y, M2 = mix(x, grid, M)
    ry, rM = _reference_rnn_mixer(mix, x, grid, M, p_sin)
    assert torch.allclose(y, ry) and torch.allclose(M2, rM)
    assert M2.shape == M.shape


def test_lstm_mixer_uniform_order_for_other_window_counts(f64):
    mix = SpikingLSTMMixer(4, encoding="threshold")
    with pytest.raises(ValueError, match="released window order"):
        mix(torch.rand(1, 8, 8, 4), WindowGrid(8, 4))
    mix.order = "uniform"
    y, M = mix(torch.rand(1, 8, 8, 4), WindowGrid(8, 4))
    assert y.shape == (1, 8, 8, 4) and M.shape == (1, 8, 8, 8)


def test_released_encoder_blocks_the_gradient_through_the_mixer():
    torch.manual_seed(0)
    x = torch.rand(2, 8, 8, 4, requires_grad=True)
    for enc, flows in (("bernoulli", False), ("bernoulli_st", True)):
        mix = SpikingConvMixer(4, encoding=enc)
        with torch.no_grad():
            mix.conv1.weight.mul_(4.0)
            mix.conv2.weight.mul_(4.0)
        (g,) = torch.autograd.grad(mix(x, WindowGrid(8, 2)).sum(), x, allow_unused=True)
        assert (g is not None and g.abs().sum() > 0) == flows


def test_patch_merging_takes_two_by_two_neighbours():
    pm = PatchMerging(1, 4)
    with torch.no_grad():
        pm.reduction.weight.copy_(torch.eye(4))
    x = torch.arange(16.0).view(1, 4, 4, 1)
    y = pm(x)
    assert y[0, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]               # (0,0), (1,0), (0,1), (1,1)


# ----------------------------------------------------------------------------- models at the reference size
def test_reference_cnn_parameter_count():
    c = parameter_counts(MinLatencyNet(variant="cnn", reference_unused=True))
    assert c["total"] == 26_843_098           # README: 26.84 M (ptflops)
    assert c["used"] == 13_885_402            # notes: ~13.9 M actually used
    assert parameter_counts(MinLatencyNet(variant="cnn"))["total"] == c["used"]


def test_reference_rnn_parameter_count():
    c = parameter_counts(MinLatencyNet(variant="rnn", reference_unused=True))
    assert c["total"] == 30_630_298           # README: 30.63 M (ptflops)
    assert c["used"] == 14_925_466            # README: 14.93 M (thop)


def test_unused_reference_modules_are_frozen_and_never_run():
    torch.manual_seed(0)
    m = MinLatencyNet(in_channels=1, depths=[2], dims=[8], patch_size=4, reference_unused=True)
    assert all(not p.requires_grad for p in m.reference_unused.parameters())
    calls = []
    for mod in m.reference_unused.modules():
        mod.register_forward_hook(lambda *a: calls.append(1))
    m(torch.rand(2, 1, 32, 32))
    assert calls == []


def test_model_refuses_bad_shapes():
    with pytest.raises(ValueError, match="perfect square"):
        MinLatencyNet(windows=3)
    with pytest.raises(ValueError, match="square input"):
        MinLatencyNet(input_size=(32, 28))
    with pytest.raises(ValueError, match="not divisible by 4 windows per side"):
        MinLatencyNet(windows=16)            # stage 4 is 2x2
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        MinLatencyNet(in_channels=1, depths=[1], dims=[4], patch_size=4)(torch.zeros(2, 1, 1, 32, 32))


def test_evaluation_is_reproducible_under_a_seed_and_varies_without():
    torch.manual_seed(0)
    m = MinLatencyNet(in_channels=1, depths=[2], dims=[8], patch_size=4).eval()
    nn.init.normal_(m.head.weight)
    x = torch.rand(4, 1, 32, 32) * 3
    torch.manual_seed(7)
    a = m(x)
    torch.manual_seed(7)
    assert torch.equal(a, m(x))
    assert not torch.equal(a, m(x))
