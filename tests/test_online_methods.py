"""OTTT_A / OTTT_O as training methods: update schedule, formulations, first-layer convention,
memory flat in T, evaluation, DistributedDataParallel accumulation."""
import copy
import os

import pytest
import torch

from snnlib.methods import build_method, method_names
from snnlib.metrics import step_memory
from snnlib.models import build_model
from snnlib.neurons import rate_normaliser
from snnlib.online import running

INFO = {"channels": 1, "size": (28, 28), "num_classes": 10}


def tiny(dtype=torch.float32, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model({"name": "online_conv", "cfg": "tiny", **kw}, INFO).to(dtype)


def batch(n=6, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


class CountingSGD(torch.optim.SGD):
    def __init__(self, params, lr=0.05):
        super().__init__(params, lr=lr)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def test_methods_are_registered_and_bad_options_are_named():
    assert {"ottt_a", "ottt_o", "saf_e", "saf_f"} <= set(method_names())
    with pytest.raises(ValueError, match="formulation"):
        build_method("ottt_a", tiny(), T=2, formulation="fast")
    with pytest.raises(ValueError, match="first_layer"):
        build_method("ottt_o", tiny(), T=2, first_layer="x")
    with pytest.raises(ValueError, match="readout"):
        build_method("saf_f", tiny(), T=2, readout="sum")
    with pytest.raises(ValueError, match="mse_weight"):
        build_method("saf_e", tiny(), T=2, mse_weight=2.0)
    with pytest.raises(TypeError, match="online methods need a model"):
        build_method("ottt_a", build_model({"name": "conv_snn", "channels": [4]}, INFO), T=2)


@pytest.mark.parametrize("name,kw,updates", [("ottt_a", {}, 1), ("ottt_o", {}, 3), ("saf_e", {}, 3),
                                             ("saf_e", {"online_update": False}, 1), ("saf_f", {}, 1)])
def test_update_schedule_and_repeated_batches(name, kw, updates):
    m = build_method(name, tiny(), T=3, **kw)
    opt = CountingSGD(m.net.parameters())
    before = [p.detach().clone() for p in m.net.parameters()]
    x, y = batch()
    for _ in range(2):                  # a second batch trains without retain_graph (state was reset)
        st = m.train_step(x, y, opt)
        assert torch.isfinite(torch.tensor(st["loss"])) and 0 <= st["correct"] <= len(y)
    assert opt.steps == 2 * updates
    assert any(not torch.equal(a, b) for a, b in zip(before, m.net.parameters()))


def test_reference_and_lean_ottt_give_identical_gradients():
    x, y = batch(dtype=torch.float64)
    net = tiny(torch.float64)
    g_ref = build_method("ottt_a", copy.deepcopy(net), T=4, formulation="reference").per_step_grads(x, y)
    g_lean = build_method("ottt_a", copy.deepcopy(net), T=4, formulation="lean").per_step_grads(x, y)
    for a, b in zip(g_ref, g_lean):
        assert a.keys() == b.keys() and len(a) == len(list(net.parameters()))
        for n in a:
            assert torch.allclose(a[n], b[n], rtol=1e-10, atol=1e-15), n


@pytest.mark.parametrize("formulation", ["reference", "lean"])
def test_raw_first_layer_gradient_is_the_trace_gradient_over_c_t(formulation):
    """Static input: the input trace is c_t x, so the trace rule's first-layer gradient is c_t times
    the authors' raw-x[t] rule, every step; other layers are unchanged."""
    x, y = batch(dtype=torch.float64)
    net = tiny(torch.float64)
    g_tr = build_method("ottt_a", copy.deepcopy(net), T=4, formulation=formulation).per_step_grads(x, y)
    g_raw = build_method("ottt_a", copy.deepcopy(net), T=4, formulation=formulation,
                         first_layer="raw").per_step_grads(x, y)
    for t in range(4):
        c = rate_normaliser(t + 1, 0.5)
        for n in g_tr[t]:
            factor = c if n.startswith("blocks.0.synapse") and not n.endswith("bias") else 1.0
            assert torch.allclose(g_tr[t][n], factor * g_raw[t][n], rtol=1e-9, atol=1e-15), (t, n)


@pytest.mark.parametrize("name,kw", [("ottt_a", {"formulation": "reference"}), ("ottt_o", {"formulation": "lean"}),
                                     ("saf_e", {}), ("saf_f", {})])
def test_training_memory_is_flat_in_T(name, kw):
    x, y = batch(4)
    mem = {T: step_memory(build_method(name, tiny(), T=T, **kw), x, y) for T in (2, 8)}
    assert mem[8]["saved_peak_bytes"] <= 1.05 * mem[2]["saved_peak_bytes"]
    assert mem[8]["state_bytes"] == mem[2]["state_bytes"] > 0


def test_saf_keeps_less_than_reference_ottt():
    x, y = batch(4)
    total = {n: step_memory(build_method(n, tiny(), T=4, **kw), x, y)["total_bytes"]
             for n, kw in [("ottt_a", {}), ("saf_e", {}), ("saf_f", {})]}
    assert total["saf_e"] < total["ottt_a"] and total["saf_f"] <= total["saf_e"]


def test_ottt_evaluates_as_the_plain_lif_network():
    net = tiny()
    m = build_method("ottt_o", net, T=3)
    x, _ = batch()
    net.eval()
    scores = m.predict(x)
    with running(net, "lif"), torch.no_grad():
        expected = net(x.unsqueeze(0).expand(3, *x.shape)).mean(0)
    assert torch.allclose(scores, expected)
    with m.monitor() as mon:
        m.predict(x)
    assert set(mon.rates()) == {"blocks.0.neuron", "blocks.1.neuron"}


def test_accumulating_ottt_under_ddp_matches_a_single_process(tmp_path):
    """OTTT_A skips the all-reduce for t < T (no_sync) and still ends with the same gradients."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if dist.is_initialized():
        pytest.skip("a process group is already running")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        x, y = batch()
        net = tiny()
        plain = build_method("ottt_a", copy.deepcopy(net), T=3)
        wrapped_net = copy.deepcopy(net)
        ddp = DistributedDataParallel(wrapped_net, **plain.ddp_kwargs)
        wrapped = build_method("ottt_a", ddp, T=3)
        calls = []
        orig = ddp.no_sync
        ddp.no_sync = lambda: (calls.append(1), orig())[1]
        for m in (plain, wrapped):
            m.train_step(x, y, torch.optim.SGD(m.net.parameters(), lr=0.0))
        assert len(calls) == 2
        for (n, a), b in zip(plain.net.named_parameters(), wrapped.net.parameters()):
            assert torch.allclose(a.grad, b.grad, atol=1e-7), n
    finally:
        dist.destroy_process_group()
        os.environ.pop("MASTER_ADDR", None)
