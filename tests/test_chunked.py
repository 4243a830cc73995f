"""Time-chunked execution (``snnlib.neurons.chunked``): exact against the reference lif_step loop."""
import pytest
import torch

from snnlib.models import build_model
from snnlib.neurons import LIFNode, chunk_size, chunked, chunked_forward, memory_modules, reset_net

T, B = 7, 3
CHUNKS = [None, 1, 3, 7, 10, "auto", "auto_small"]       # 3 does not divide T; auto_small: a cache of 2 steps


def _neuron(reset, detach_reset, backend):
    return {"leak": 0.75, "v_th": 0.6, "reset": reset, "detach_reset": detach_reset, "backend": backend,
            "surrogate": {"name": "sigmoid", "alpha": 4.0}}


def _model(kind, neuron, chunk, bn=False):
    data = {"channels": 1, "size": (8, 8), "num_classes": 5}
    if kind == "conv":
        spec = {"name": "conv_snn", "channels": [4, 6], "bn": bn, "pool": "avg", "first_layer_gain": 3.0}
    else:
        spec = {"name": "fc_snn", "hidden": [16, 12]}
    torch.manual_seed(0)
    return build_model({**spec, "neuron": neuron, "chunk": chunk}, data).double()


def _input(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 1, 8, 8, generator=g, dtype=torch.float64) * 2


def _run(net, x):
    out = net(x)
    out.square().sum().backward()
    state = [m.v.detach().clone() for m in memory_modules(net)]
    grads = [p.grad.clone() for p in net.parameters()]
    reset_net(net)
    return out.detach(), grads, state


SMALL_CACHE = 2 * B * 4 * 8 * 8 * 8     # two steps of the conv model's largest activation (4 x 8 x 8 doubles x B)


@pytest.fixture
def small_cache(monkeypatch):
    monkeypatch.setattr(chunked, "last_level_cache_bytes", lambda: SMALL_CACHE)


def _assert_same(run, ref, exact: bool):
    (out, g, v), (ref_out, ref_g, ref_v) = run, ref
    assert ref_out.abs().sum() > 0
    if exact:
        assert torch.equal(out, ref_out)
        assert all(torch.equal(a, b) for a, b in zip(v, ref_v))      # the state carried out of the last chunk
    else:
        assert (out - ref_out).abs().max() <= 1e-12 * ref_out.abs().max()
        assert all((a - b).abs().max() <= 1e-12 * b.abs().max() for a, b in zip(v, ref_v))
    for a, b in zip(g, ref_g):
        assert (a - b).abs().max() <= 1e-10 * max(1.0, b.abs().max())


@pytest.mark.parametrize("kind", ["conv", "fc"])
@pytest.mark.parametrize("reset,detach_reset", [("hard", True), ("hard", False), ("soft", False), ("soft", True)])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_every_chunking_matches_the_reference_lif_step_loop(kind, reset, detach_reset, chunk, monkeypatch):
    """The fused neurons in chunks of c steps are bit-identical to the reference loop over ``lif_step``
    (backend 'torch') run with the same chunks, gradients within 1e-10. Against the whole sequence in
    one call, only the conv / linear layers round differently (their batch is c*B instead of T*B)."""
    cache = 2**40 if chunk == "auto" else SMALL_CACHE           # auto: all fits, one call after the first step
    monkeypatch.setattr(chunked, "last_level_cache_bytes", lambda: cache)
    chunk = "auto" if chunk == "auto_small" else chunk
    x = _input()
    fused = _model(kind, _neuron(reset, detach_reset, "fused"), chunk)
    reference = _model(kind, _neuron(reset, detach_reset, "torch"), chunk)
    whole = _run(_model(kind, _neuron(reset, detach_reset, "torch"), None), x)
    for _ in range(2):          # 'auto': the first call measures the step, the second knows it
        for net in (fused, reference):
            net.zero_grad(set_to_none=True)
        run = _run(fused, x)
        _assert_same(run, _run(reference, x), exact=True)
        _assert_same(run, whole, exact=False)


class _Neurons(torch.nn.Module):
    """Only neurons and elementwise layers: no layer whose rounding depends on the batch size."""

    def __init__(self, neuron, chunk):
        super().__init__()
        self.chunk = chunk
        self.lif1, self.lif2 = LIFNode(step_mode="m", **neuron), LIFNode(step_mode="m", **neuron)
        self.gain = torch.nn.Parameter(torch.tensor(1.7, dtype=torch.float64))

    def forward(self, x_seq):
        return chunked_forward(self, lambda xs: self.lif2(self.lif1(xs) * self.gain + xs), x_seq, self.chunk)


@pytest.mark.parametrize("reset,detach_reset", [("hard", True), ("hard", False), ("soft", False), ("none", False)])
@pytest.mark.parametrize("backend", ["fused", "torch"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
def test_chunk_boundaries_change_no_bit_of_the_neuron_arithmetic(reset, detach_reset, backend, chunk):
    x = _input().flatten(2).requires_grad_()
    runs = {}
    for name, net in (("chunked", _Neurons(_neuron(reset, detach_reset, backend), chunk)),
                      ("reference", _Neurons(_neuron(reset, detach_reset, "torch"), None))):
        out = net(x)
        (out * torch.linspace(-1, 2, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        runs[name] = (out.detach(), [net.gain.grad.view(1), x.grad.clone()],
                      [net.lif1.v.detach(), net.lif2.v.detach()])
        x.grad = None
    _assert_same(runs["chunked"], runs["reference"], exact=True)


def test_auto_runs_the_first_step_alone_then_chunks_that_fit_the_cache(small_cache):
    net = _model("conv", _neuron("hard", True, "fused"), "auto")
    batches = []
    net.features[0].register_forward_hook(lambda m, i, o: batches.append(i[0].shape[0]))   # [c, B, ...]
    net(_input())
    assert batches == [1, 2, 2, 2]                 # 1 + 6 steps in chunks of 2
    batches.clear()
    net(_input(seed=2))
    assert batches == [2, 2, 2, 1]                 # the step size is known: 7 steps in chunks of 2


def test_chunk_size_takes_the_fewest_even_chunks_that_fit():
    assert chunk_size(16, step_bytes=10, cache_bytes=50) == 4        # 5 fit: 4 chunks of 4
    assert chunk_size(15, step_bytes=10, cache_bytes=50) == 5
    assert chunk_size(32, step_bytes=10, cache_bytes=50) == 5        # 7 chunks: 6 x 5 + 2
    assert chunk_size(8, step_bytes=10, cache_bytes=1000) == 8       # all fit: one chunk
    assert chunk_size(8, step_bytes=10**9, cache_bytes=50) == 1      # nothing fits: one step at a time
    with pytest.raises(ValueError, match="T must be >= 1"):
        chunk_size(0, step_bytes=1)


def test_batchnorm_in_training_runs_the_whole_sequence_and_refuses_explicit_chunks():
    x = _input()
    whole, _, _ = _run(_model("conv", _neuron("soft", False, "fused"), None, bn=True), x)
    auto, _, _ = _run(_model("conv", _neuron("soft", False, "fused"), "auto", bn=True), x)
    assert torch.equal(auto, whole)
    with pytest.raises(ValueError, match="BatchNorm in training mode"):
        _model("conv", _neuron("soft", False, "fused"), 2, bn=True)(x)
    net = _model("conv", _neuron("soft", False, "fused"), 2, bn=True).eval()    # running statistics: exact
    ref = _model("conv", _neuron("soft", False, "torch"), None, bn=True).eval()
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))


def test_bad_chunk_is_named():
    with pytest.raises(ValueError, match="chunk must be 'auto', None or an int >= 1, got 0"):
        _model("fc", _neuron("soft", False, "fused"), 0)(_input())
