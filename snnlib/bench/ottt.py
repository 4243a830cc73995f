"""OTTT on the benchmark's conv SNN: snnlib's ``ottt_a``/``ottt_o`` against SpikingJelly's OTTT.

Both run conv 32 -> LIF -> avgpool -> conv 64 -> LIF -> avgpool -> linear with OTTT's neuron
(soft reset, leak 0.5, v_th 1, sigmoid alpha 4, potential detached every step) and the same
per-step loss ((1 - g) CE + g MSE(onehot)) / T, g = 0.05. snnlib: the ``online_conv`` model
(cfg "small", no weight standardisation, spike scale 1, fc_hw 7 so the head sees 7x7x64) with
``first_layer="raw"`` (SpikingJelly's first layer learns from x[t], not from an input trace).
SpikingJelly: ``layer.OTTTSequential`` of ``nn.Conv2d``, ``neuron.OTTTLIFNode(tau=2,
decay_input=False, v_reset=None)``, ``nn.AvgPool2d``, ``nn.Flatten``, ``nn.Linear``, trained by
``learning.online_learning.ottt_online_training`` (one forward and backward per step).
"""
from __future__ import annotations

import torch
from torch import nn

from .nets import DEFAULT_SPEC, _head_features, canonical_weights
from ..models import build_model
from ..methods import build_method
from ..methods.online import mixed_loss

OTTT_VARIANTS = ("snnlib_ottt_a", "snnlib_ottt_a_lean", "spikingjelly_ottt_a",
                 "snnlib_ottt_o", "snnlib_ottt_o_lean", "spikingjelly_ottt_o")
MSE_WEIGHT = 0.05


def _online_conv(spec: dict):
    c1, c2 = spec["channels"]
    return build_model({"name": "online_conv", "cfg": [c1, "M", c2, "M"], "ws": False, "spike_scale": 1.0,
                        "fc_hw": spec["size"] // 4, "leak": spec["leak"], "v_th": spec["v_th"],
                        "surrogate": {"name": "sigmoid", "alpha": spec["alpha"]}},
                       {"channels": spec["in_channels"], "size": (spec["size"], spec["size"]),
                        "num_classes": spec["num_classes"]})


def _snnlib_params(model):
    b = model.blocks
    return [b[0].synapse.op.weight, b[0].synapse.op.bias, b[1].synapse.op.weight, b[1].synapse.op.bias,
            model.head.op.weight, model.head.op.bias]


class SnnlibOTTT:
    """snnlib's ``ottt_a``/``ottt_o`` method on the benchmark network."""

    def __init__(self, spec: dict, T: int, online: bool, formulation: str = "reference", seed: int = 0, lr=1e-3):
        self.model = _online_conv(spec)
        with torch.no_grad():
            for p, w in zip(_snnlib_params(self.model), canonical_weights(spec, seed), strict=True):
                p.copy_(w)
        self.method = build_method("ottt_o" if online else "ottt_a", self.model, T=T, formulation=formulation,
                                   first_layer="raw", mse_weight=MSE_WEIGHT)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)

    def params(self):
        return _snnlib_params(self.model)

    def step(self, x, y) -> float:
        return self.method.train_step(x, y, self.opt)["loss"]


class SpikingJellyOTTT:
    """SpikingJelly 2.0's OTTT: ``OTTTSequential`` + ``OTTTLIFNode`` + ``ottt_online_training``."""

    def __init__(self, spec: dict, T: int, online: bool, seed: int = 0, lr=1e-3):
        from spikingjelly.activation_based import functional, layer, neuron, surrogate
        from spikingjelly.activation_based.learning import online_learning
        c1, c2 = spec["channels"]
        tau = 1.0 / (1.0 - spec["leak"])

        def lif():
            return neuron.OTTTLIFNode(tau=tau, decay_input=False, v_threshold=spec["v_th"], v_reset=None,
                                      surrogate_function=surrogate.Sigmoid(alpha=spec["alpha"]))

        self.net = layer.OTTTSequential(
            nn.Conv2d(spec["in_channels"], c1, 3, padding=1), lif(), nn.AvgPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), lif(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(_head_features(spec), spec["num_classes"]))
        with torch.no_grad():
            for p, w in zip(self.params(), canonical_weights(spec, seed), strict=True):
                p.copy_(w)
        self.T, self.online = T, online
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr)
        self._train = online_learning.ottt_online_training
        self._reset = functional.reset_net
        self._loss = lambda out, target: mixed_loss(out, target, MSE_WEIGHT) / T

    def params(self):
        n = self.net
        return [n[0].weight, n[0].bias, n[3].weight, n[3].bias, n[7].weight, n[7].bias]

    def step(self, x, y) -> float:
        x_seq = x.unsqueeze(1).expand(x.shape[0], self.T, *x.shape[1:])     # [B, T, ...] as it expects
        y_seq = y.unsqueeze(1).expand(y.shape[0], self.T)
        loss, _ = self._train(self.net, self.opt, x_seq, y_seq, self._loss, self.online)
        self._reset(self.net)
        return float(loss)


def make_ottt(variant: str, spec: dict | None, T: int, seed: int = 0):
    """One of ``OTTT_VARIANTS``."""
    spec = spec or DEFAULT_SPEC
    if variant not in OTTT_VARIANTS:
        raise ValueError(f"unknown OTTT variant {variant!r}; choose one of {OTTT_VARIANTS}")
    online = variant.endswith("_o") or variant.endswith("_o_lean")
    if variant.startswith("spikingjelly"):
        return SpikingJellyOTTT(spec, T, online, seed)
    return SnnlibOTTT(spec, T, online, "lean" if variant.endswith("lean") else "reference", seed)
