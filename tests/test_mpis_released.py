"""MPIS-SNN as released, and the library's fix for its silent initial network.

Released behaviour (docs/papers/ide_mpis.md, section 3): T = 1 with step-0 rates, membrane fusion
in the SNN only (at t = 0 that is the fusion of the input currents), a rate map without fusion
that divides by V twice, and a head that reads f(a), the rate map at the SNN's rates, in training
and in evaluation; the gradient is the one-step gradient through that f(a). The reference below
is written from those notes with plain tensor operations and the model's weights only.

The fix (``bn_init="data"``): every BatchNorm's running statistics come from the first training
batch, so that the simulation (running statistics) and the rate map (batch statistics) normalise
alike and no layer is silent at initialisation, in training or in evaluation.
"""
import pytest
import torch
from torch.nn import functional as F

from snnlib.equilibrium import equilibrium_forward
from snnlib.models.mpis import MPIS

V = 2.0
RELEASED = dict(fusion="membrane_snn_only", map_scale="V2", feedback_norm=False, readout_source="rate_map",
                bn_init="default")


def small_mpis(**kw):
    torch.manual_seed(0)
    args = dict(in_channels=1, input_size=(16, 16), num_classes=5, stem_channels=4, channels=(6, 6, 8),
                dropout=0.0, leak=0.999, v_th=V)
    net = MPIS(**{**args, **kw}).double()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():        # non-trivial BatchNorm parameters and running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 0.5 + 2 * torch.rand(m.weight.shape, generator=g, dtype=torch.float64)
            m.bias.data = 1.0 + 0.5 * torch.randn(m.bias.shape, generator=g, dtype=torch.float64)
            m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g, dtype=torch.float64))
            m.running_var.copy_(0.05 + 0.3 * torch.rand(m.running_var.shape, generator=g, dtype=torch.float64))
    return net


def batch():
    g = torch.Generator().manual_seed(2)
    return torch.randn(12, 1, 16, 16, generator=g, dtype=torch.float64) * 1.5 + 0.5


def bn(mod, z, running):
    """BatchNorm by hand: running statistics or the (biased) batch statistics of z."""
    if running:
        mean, var = mod.running_mean, mod.running_var
    else:
        mean, var = z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)
    view = lambda t: t.view(1, -1, 1, 1)                                      # noqa: E731
    return (z - view(mean)) / torch.sqrt(view(var) + mod.eps) * view(mod.weight) + view(mod.bias)


def conv(c, x, bias=True):
    return F.conv2d(x, c.weight, c.bias if bias else None, c.stride, c.padding)


def reference_logits(net, x, training):
    """Released forward at T = 1, from the notes. Returns (logits, step-0 last-layer spikes)."""
    db = lambda v: torch.clamp(v / V, 0, 1)                                   # noqa: E731
    run = not training                                                        # BN statistics outside the loop
    stem = net.stem
    h = db(bn(stem[1], conv(stem[0], x), run))
    h = db(bn(stem[4], conv(stem[3], h), run))
    inputs = [h, torch.zeros(h.shape[0], h.shape[1], 4, 4, dtype=h.dtype)]   # stream 2 gets zeros (8x8 -> 4x4)
    I = [bn(st.input_map.bn, conv(st.input_map.op, u), run) for st, u in zip(net.snn.streams, inputs)]
    # t = 0: the (membrane = current) fusion, then one binary feed-forward step; loop maps: running statistics
    D = net.snn.fusion.down
    c = [I[0] + F.interpolate(I[1], scale_factor=2, mode="nearest"), conv(D, I[0]) + I[1]]
    spikes = []
    for k, st in enumerate(net.snn.streams):
        s = (c[k] >= V).double()
        for m in st.forward_maps:
            s = (bn(m.bn, conv(m.op, s), True) >= V).double()
        spikes.append(s)                                                     # rate = s_0 / c_1 = s_0
    # rate map without fusion, divided by V twice, in the module's BN mode; the head reads it
    fa = []
    for k, st in enumerate(net.snn.streams):
        tr = st.feedback.op
        a = torch.clamp((F.conv_transpose2d(spikes[k], tr.weight, None, 2, 1, 1) + I[k]) / V ** 2, 0, 1)
        for m in st.forward_maps:
            a = torch.clamp(bn(m.bn, conv(m.op, a), run) / V ** 2, 0, 1)
        fa.append(a)
    z = db(bn(net.downsamp[1], conv(net.downsamp[0], fa[0]), run)) + fa[1]
    z = db(bn(net.incre[1], conv(net.incre[0], z, bias=False), run))
    return F.linear(z.flatten(1), net.classifier.weight, net.classifier.bias), spikes


def test_released_training_forward_matches_the_notes():
    net = small_mpis(**RELEASED).train()
    x = batch()
    want, spikes = reference_logits(net, x, training=True)     # before the forward updates running statistics
    res = equilibrium_forward(net, x, 1, backward="one_step", rate="step0")
    assert all(bool((s > 0).any()) for s in spikes), "the reference should not be trivially silent"
    for got_a, s in zip(res.simulation.last, spikes):
        torch.testing.assert_close(got_a, s)
    torch.testing.assert_close(res.logits, want, rtol=1e-10, atol=1e-10)


def test_released_evaluation_forward_matches_the_notes():
    net = small_mpis(**RELEASED).eval()
    x = batch()
    want, _ = reference_logits(net, x, training=False)
    with torch.no_grad():
        got = equilibrium_forward(net, x, 1, rate="step0").logits
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_released_gradient_is_the_one_step_gradient_through_f_of_a():
    """dL/dtheta = (df(a)/dtheta)^T dL/dz with a (the spikes) held fixed, as the released code trains."""
    net = small_mpis(**RELEASED).train()
    x, y = batch(), torch.arange(12) % 5
    ref = small_mpis(**RELEASED).train()
    want_logits, _ = reference_logits(ref, x, training=True)
    params = [ref.snn.streams[0].feedback.op.weight, ref.snn.streams[1].forward_maps[1].op.weight,
              ref.classifier.weight, ref.stem[0].weight]
    want = torch.autograd.grad(F.cross_entropy(want_logits, y), params)
    F.cross_entropy(equilibrium_forward(net, x, 1, backward="one_step", rate="step0").logits, y).backward()
    got = [net.snn.streams[0].feedback.op.weight.grad, net.snn.streams[1].forward_maps[1].op.weight.grad,
           net.classifier.weight.grad, net.stem[0].weight.grad]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_fusion_conv_gets_no_gradient_in_the_released_variant():
    net = small_mpis(**RELEASED).train()
    x, y = batch(), torch.arange(12) % 5
    F.cross_entropy(equilibrium_forward(net, x, 1, backward="one_step", rate="step0").logits, y).backward()
    assert net.snn.fusion.down.weight.grad is None


def test_rate_map_readout_reads_f_of_a_and_rates_readout_reads_a():
    x = batch()
    for source in ("rates", "rate_map"):
        net = small_mpis(readout_source=source, bn_init="default").eval()
        with torch.no_grad():
            res = equilibrium_forward(net, x, 5)
            a = res.simulation.last
            fa = net.snn.rate_map(a, net.snn.last_drive)
            want = net.head(fa if source == "rate_map" else a)
        torch.testing.assert_close(res.logits, want)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="readout_source"):
        small_mpis(readout_source="f")
    with pytest.raises(ValueError, match="bn_init"):
        small_mpis(bn_init="kaiming")


# ---------------------------------------------------------------------------------------------
# the fix: BatchNorm running statistics from the first training batch
# ---------------------------------------------------------------------------------------------
def fmnist_like_batch(n=64):
    """Images like normalised Fashion-MNIST: a bright blob on a dark background, 28x28."""
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cy, cx = 10 + 8 * torch.rand(n, 1, 1, generator=g), 10 + 8 * torch.rand(n, 1, 1, generator=g)
    r = 4 + 6 * torch.rand(n, 1, 1, generator=g)
    img = (((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2).float() * (0.5 + 0.5 * torch.rand(n, 1, 1, generator=g))
    img = img + 0.05 * torch.rand(n, 28, 28, generator=g)
    return ((img - 0.2860) / 0.3530).unsqueeze(1).double()


def fmnist_mpis(**kw):
    torch.manual_seed(0)
    return MPIS(in_channels=1, input_size=(28, 28), num_classes=10, stem_channels=8, channels=(16, 16, 32),
                **kw).double()


def firing(net, x, T=5):
    with torch.no_grad():
        return equilibrium_forward(net, x, T).simulation.firing_rates()


@pytest.mark.parametrize("streams", [1, 2])
def test_no_layer_is_silent_at_initialisation(streams):
    x = fmnist_like_batch()
    net = fmnist_mpis(streams=streams).train()
    train_rates = firing(net, x)                      # the first training batch sets the statistics
    eval_rates = firing(net.eval(), x)
    assert min(train_rates.values()) > 0.01, train_rates
    assert min(eval_rates.values()) > 0.01, eval_rates


def test_released_initialisation_is_silent_deep_in_training_and_everywhere_in_evaluation():
    """The defect the fix removes (kept available as bn_init='default')."""
    x = fmnist_like_batch()
    net = fmnist_mpis(bn_init="default").train()
    train_rates = firing(net, x)
    eval_rates = firing(net.eval(), x)
    assert train_rates["s1.layer3"] < 0.01 and train_rates["s2.layer3"] < 0.01, train_rates
    assert max(eval_rates.values()) < 0.01, eval_rates


def test_simulation_and_rate_map_use_the_same_normalisation_after_calibration():
    """The running statistics the simulation uses equal the batch statistics the rate map uses at
    its fixed point; and in evaluation the rate map's statistics are the running ones."""
    x = fmnist_like_batch()
    net = fmnist_mpis(dropout=0.0).train()
    net.calibrate_bn(x, 5)
    snn = net.snn
    with torch.no_grad():
        drive = snn.drive(*net.encode(x, 5)[:1])
        a = [torch.zeros_like(s) for s in snn.simulate(drive, 1).last]
        for _ in range(60):
            a = snn.rate_map(a, drive, bn_mode="batch")
        layers = snn.rate_map(a, drive, bn_mode="batch", all_layers=True)
        for st, acts in zip(snn.streams, layers):
            for m, a_in in zip(st.forward_maps, acts):
                z = m.linear(a_in)
                torch.testing.assert_close(m.bn.running_mean, z.mean((0, 2, 3)), rtol=1e-3, atol=1e-3)
                torch.testing.assert_close(m.bn.running_var, z.var((0, 2, 3)), rtol=1e-2, atol=1e-4)
                assert float(m.bn.running_var.mean()) < 0.5        # far from the default 1
        # batch and running statistics now give the same rate map
        torch.testing.assert_close(snn.rate_map(a, drive, bn_mode="batch"), snn.rate_map(a, drive, bn_mode="running"),
                                   rtol=1e-2, atol=1e-2)


def test_calibration_happens_once_and_survives_a_checkpoint():
    x = fmnist_like_batch(16)
    net = fmnist_mpis().train()
    assert not bool(net.bn_calibrated)
    firing(net, x)
    assert bool(net.bn_calibrated)
    stats = net.snn.streams[0].forward_maps[0].bn.running_var.clone()
    copy = fmnist_mpis().train()
    copy.load_state_dict(net.state_dict())
    assert bool(copy.bn_calibrated)
    torch.testing.assert_close(copy.snn.streams[0].forward_maps[0].bn.running_var, stats)
    old = {k: v for k, v in net.state_dict().items() if k != "bn_calibrated"}   # written before the option
    fmnist_mpis().load_state_dict(old)


def test_forward_residual_falls_with_T_once_calibrated():
    """With consistent normalisation the SNN's rates approach the rate map's fixed point as T grows."""
    x = fmnist_like_batch()
    res = []
    for T in (5, 30, 100):
        net = fmnist_mpis(dropout=0.0).train()
        res.append(equilibrium_forward(net, x, T, backward="one_step").forward_rel_residual)
    assert res[0] > res[1] > res[2] and res[2] < 0.1, res
