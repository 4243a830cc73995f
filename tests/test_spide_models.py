"""SPIDE models: the reference structures (parameter counts), their initialisation and Frobenius
feedback bound, and one training step of every paper-scale config on a batch of 2."""
import glob
import math

import pytest
import torch
from torch import nn

from snnlib.experiments import load_config, published
from snnlib.models import build_model
from snnlib.models.spide import FrobeniusBound, ZeroMap, count_parameters, frobenius_bound
from snnlib.train import build
from snnlib.train.setup import make_optimizer

MNIST = {"channels": 1, "size": (28, 28), "num_classes": 10}
CIFAR10 = {"channels": 3, "size": (32, 32), "num_classes": 10}
CIFAR100 = {"channels": 3, "size": (32, 32), "num_classes": 100}
DVS = {"channels": 2, "size": (128, 128), "num_classes": 10}


@pytest.mark.parametrize("name, info, key, exact", [
    ("spide_lenet", MNIST, "spide.params.mnist_lenet", 606740),
    ("spide_convnet_f", MNIST, "spide.params.mnist_convnetf", 274826),
    ("spide_alexnet_f", CIFAR10, "spide.params.alexnetf.cifar10", 3706762),
    ("spide_alexnet_f", CIFAR100, "spide.params.alexnetf.cifar100", 5181412),
    ("spide_cifarnet_f", CIFAR10, "spide.params.cifarnetf.cifar10", 11835146),
    ("spide_cifarnet_f", CIFAR100, "spide.params.cifarnetf.cifar100", 14784356),
    ("spide_dvs_convnet", DVS, "spide.params.dvs_convnet", 9586186),
])
def test_reference_structures_have_the_published_parameter_counts(name, info, key, exact):
    n = count_parameters(build_model({"name": name}, info))
    assert n == exact
    assert round(n / 1e6, 2 if n > 1e6 else 3) == published(key)["value"]


def test_layer_shapes_of_the_reference_structures():
    def shapes(net, x, T=1):
        with torch.no_grad():
            inputs, events = net.encode(x, T)
            sim = net.snn.simulate(net.snn.drive(inputs, events=events), T)
        return [tuple(r.shape[1:]) for r in sim.rates[0]]
    assert shapes(build_model({"name": "spide_lenet"}, MNIST), torch.rand(1, 1, 28, 28)) == [
        (15, 28, 28), (15, 14, 14), (40, 14, 14), (40, 7, 7), (300,)]
    assert shapes(build_model({"name": "spide_convnet_f"}, MNIST), torch.rand(1, 1, 28, 28)) == [
        (64, 14, 14), (64, 7, 7), (64, 7, 7)]
    assert shapes(build_model({"name": "spide_alexnet_f"}, CIFAR10), torch.rand(1, 3, 32, 32)) == [
        (96, 16, 16), (256, 16, 16), (384, 8, 8), (384, 8, 8), (256, 8, 8)]
    dvs = build_model({"name": "spide_dvs_convnet", "channels": 8}, DVS)
    assert shapes(dvs, torch.rand(1, 2, 2, 128, 128), T=2) == [(8, 24, 24)]   # frames resized to 48


def test_neurons_use_the_modified_reset_by_default():
    snn = build_model({"name": "spide_convnet_f"}, MNIST).snn
    assert (snn.v_th, snn.u_rest, snn.V, snn.leak) == (1.0, -1.0, 2.0, 1.0)
    snn0 = build_model({"name": "spide_convnet_f", "u_rest": 0.0}, MNIST).snn
    assert snn0.V == 1.0


def test_initialisation_unit_filters_for_cifar_kaiming_for_mnist_and_scaled_transposed_feedback():
    torch.manual_seed(0)
    net = build_model({"name": "spide_multilayer", "channels": [8, 8, 8, 8, 8]}, CIFAR10)
    conv = net.snn.streams[0].forward_maps[0].op
    norms = conv.weight.reshape(conv.weight.shape[0], -1).norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6) and not conv.bias.any()
    fb = net.snn.streams[0].feedback.op.parametrizations.weight.original   # ConvT: filters are w[:, j]
    fb_norms = fb.pow(2).sum(dim=(0, 2, 3)).sqrt()
    assert torch.allclose(fb_norms, torch.full_like(fb_norms, 0.1), atol=1e-6)
    torch.manual_seed(0)
    big = build_model({"name": "spide_convnet_f"}, MNIST)
    w = big.snn.streams[0].forward_maps[0].op.weight.detach()
    assert abs(float(w.std()) - math.sqrt(2 / (64 * 25))) < 0.1 * math.sqrt(2 / (64 * 25))


def test_frobenius_bound_keeps_the_kernel_norm_at_most_the_bound():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, bias=False)
    with torch.no_grad():
        conv.weight.mul_(50.0)
    raw = conv.weight.detach().clone()
    frobenius_bound(conv, 2.0)
    assert float(conv.weight.detach().norm()) == pytest.approx(2.0, rel=1e-6)
    assert torch.allclose(conv.weight, raw * 2.0 / raw.norm())
    # the factor is computed without gradient (as in the reference): dW/dW~ is that factor
    conv.weight.sum().backward()
    orig = conv.parametrizations.weight.original
    assert torch.allclose(orig.grad, torch.full_like(orig, 2.0 / float(raw.norm())))
    small = nn.Linear(5, 5, bias=False)
    with torch.no_grad():
        small.weight.mul_(1e-3)
    ref = small.weight.detach().clone()
    frobenius_bound(small, 2.0)
    assert torch.equal(small.weight, ref)        # inside the bound: unchanged


def test_probe_estimate_of_the_frobenius_norm_is_unbiased_and_noisy():
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3)
    exact = float(FrobeniusBound(1.0).norm(w))
    est = [float(FrobeniusBound(1.0, probes=64).norm(w)) for _ in range(50)]
    assert abs(sum(est) / len(est) - exact) < 0.02 * exact
    assert max(est) != min(est)


def test_zero_feedback_makes_the_rate_map_independent_of_the_last_layer():
    net = build_model({"name": "spide_lenet", "dropout": 0.0}, MNIST).double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    drive = net.snn.drive([x])
    a1, a2 = torch.rand(2, 300, dtype=torch.float64), torch.rand(2, 300, dtype=torch.float64)
    assert torch.equal(net.snn.rate_map([a1], drive)[0], net.snn.rate_map([a2], drive)[0])
    zm = ZeroMap((300,), (15, 28, 28))
    assert zm.spide_transpose(torch.ones(3, 15, 28, 28)).shape == (3, 300)


def test_bad_model_arguments_are_named():
    with pytest.raises(ValueError, match="channels must list 5"):
        build_model({"name": "spide_multilayer", "channels": [8, 8]}, CIFAR10)
    with pytest.raises(ValueError, match="hidden"):
        build_model({"name": "spide_fc", "hidden": []}, MNIST)
    with pytest.raises(ValueError, match="Frobenius bound"):
        FrobeniusBound(0.0)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model({"name": "spide_lenet"}, {"channels": 1, "size": (30, 30), "num_classes": 10})


PAPER_CONFIGS = sorted(p for p in glob.glob("configs/runs/spide_*.yaml"))


def test_every_reference_structure_has_a_paper_config():
    names = {load_config(p)["model"]["name"] for p in PAPER_CONFIGS}
    assert {"spide_lenet", "spide_convnet_f", "spide_alexnet_f", "spide_cifarnet_f", "spide_dvs_convnet"} <= names


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.split("/")[-1])
def test_paper_config_builds_and_takes_one_training_step_on_two_samples(path):
    cfg = load_config(path)
    over = {"T": 2}
    if cfg["method"] == "spide":
        over["method_args"] = {"T_b": 2}
    cfg = load_config(path, over)
    torch.manual_seed(0)
    model, method = build(cfg)
    opt = make_optimizer(model.parameters(), cfg["optim"])
    name = cfg["data"]["name"]
    shape = {"mnist": (2, 1, 28, 28), "fashion_mnist": (2, 1, 28, 28), "cifar10": (2, 3, 32, 32),
             "cifar100": (2, 3, 32, 32), "cifar10dvs": (2, 2, 2, 128, 128)}[name]
    x = torch.rand(*shape) * (1.0 if len(shape) == 5 else 3.0)
    y = torch.tensor([0, 1])
    before = [p.detach().clone() for p in model.parameters()]
    st = method.train_step(x, y, opt)
    assert math.isfinite(st["loss"])
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert changed[-1] or changed[-2]            # at least the readout moved
    if cfg["method"] == "spide":
        assert "backward_firing" in st["spide"] and 0.0 <= st["spide"]["forward_firing"] <= 1.0
