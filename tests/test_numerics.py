"""Subnormal floats on CPU: every method's train_step and predict flush them to zero (the run config's
``flush_denormal``, on by default) and leave the caller's setting as it was."""
import pytest
import torch

from snnlib.methods import build_method
from snnlib.methods.numerics import flush_denormal_enabled, flushing_subnormals
from snnlib.models import build_model
from snnlib.train.trainer import build

SUBNORMAL = 1e-40
INFO = {"channels": 1, "size": (8, 8), "num_classes": 3}

needs_ftz = pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU has no flush-to-zero mode")


class SubnormalSeen(torch.nn.Module):
    """Records, during the forward, whether a subnormal times one still reads as a subnormal."""

    def __init__(self):
        super().__init__()
        self.kept = []

    def forward(self, x):
        self.kept.append(bool(torch.mul(torch.tensor([SUBNORMAL]), 1.0)[0] != 0))
        return x


def _bptt_with_probe():
    model = build_model({"name": "conv_snn", "channels": [2, 2], "neuron": {"leak": 0.5}}, INFO)
    probe = SubnormalSeen()
    model.features.insert(0, probe)
    return build_method("bptt", model, T=2), probe


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)


@needs_ftz
def test_a_cpu_step_flushes_subnormals_and_restores_the_callers_setting():
    method, probe = _bptt_with_probe()
    x, y = _batch()
    opt = torch.optim.SGD(method.net.parameters(), lr=0.1)
    assert not flush_denormal_enabled()
    method.train_step(x, y, opt)
    method.predict(x)
    assert probe.kept == [False, False]          # flushed inside both steps
    assert not flush_denormal_enabled()          # and off again after them


@needs_ftz
def test_the_switch_off_keeps_subnormals():
    method, probe = _bptt_with_probe()
    method.flush_denormal = False
    x, y = _batch()
    method.train_step(x, y, torch.optim.SGD(method.net.parameters(), lr=0.1))
    assert probe.kept == [True]


@needs_ftz
def test_a_caller_that_flushes_already_still_flushes_afterwards():
    torch.set_flush_denormal(True)
    try:
        with flushing_subnormals(True):
            assert flush_denormal_enabled()
        assert flush_denormal_enabled()
    finally:
        torch.set_flush_denormal(False)
    assert not flush_denormal_enabled()


@needs_ftz
def test_a_failing_step_restores_the_setting_too():
    method, _ = _bptt_with_probe()
    x, y = _batch()
    with pytest.raises(ValueError, match="batch size mismatch"):
        method.train_step(x, y[:2], torch.optim.SGD(method.net.parameters(), lr=0.1))

    def boom(*a):
        raise RuntimeError("boom")

    method.outputs = boom
    with pytest.raises(RuntimeError, match="boom"):
        method.train_step(x, y, torch.optim.SGD(method.net.parameters(), lr=0.1))
    assert not flush_denormal_enabled()


def test_the_run_config_sets_the_methods_switch():
    cfg = {"method": "ottt_a", "model": {"name": "online_conv", "cfg": "mini", "fc_hw": 7},
           "data": {"name": "synthetic"}}
    _, on = build(cfg)
    _, off = build({**cfg, "flush_denormal": False})
    assert on.flush_denormal is True and off.flush_denormal is False
