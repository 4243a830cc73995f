"""The benchmark's conv SNN, built once in each framework with the same dynamics.

Network (Fashion-MNIST shape): conv3x3 1->32 -> LIF -> avgpool2 -> conv3x3 32->64 -> LIF ->
avgpool2 -> flatten -> linear 3136->10; input [T, B, 1, 28, 28] (the image repeated over T),
output per-step logits [T, B, 10]; loss = cross-entropy of the time-averaged logits.

The common neuron is the one every framework can express exactly (see ``DIFFERENCES``):
h = leak v + x, s = H(h - v_th), hard reset to 0 with the reset detached, surrogate
sigmoid'(alpha z) with alpha = 4. Weights are copied from one seeded snnlib model
(``canonical_params`` gives each network's parameters in the same order).

Every builder imports its framework lazily, so a missing peer only fails its own build.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from ..models import build_model
from ..neurons import reset_net

FRAMEWORKS = ("snnlib", "spikingjelly", "snntorch", "snntorch_folded", "norse")
DEFAULT_SPEC = dict(channels=(32, 64), in_channels=1, size=28, num_classes=10, leak=0.5, v_th=1.0,
                    alpha=4.0, detach_reset=True, gains=(2.0, 3.0))

#: How each peer is made equal to snnlib's neuron, and what stays different.
DIFFERENCES = {
    "snnlib": "LIFNode(leak=0.5, v_th=1, reset='hard', v_reset=0, detach_reset=True, surrogate=Sigmoid(4)), "
              "multi-step (fused backend); conv/pool/linear on T*B folded batches (SeqToBatch).",
    "spikingjelly": "neuron.LIFNode(tau=2, decay_input=False, v_threshold=1, v_reset=0, detach_reset=True, "
                    "surrogate.Sigmoid(alpha=4), step_mode='m'): h = v - v/tau + x equals h = 0.5 v + x bit for "
                    "bit. On CPU, float32, 2.0.0 runs this through its registered sj_lif op (a Python loop over "
                    "time with a hand-written backward that saves h, x and v0). Layers: layer.Conv2d/AvgPool2d/"
                    "Flatten/Linear with step_mode='m' (T folded into the batch).",
    "snntorch": "snn.Leaky(beta=0.5, threshold=1, reset_mechanism='zero', spike_grad=surrogate.sigmoid(slope=4)) "
                "in the tutorial idiom: the whole network is called once per time step (conv on B, not T*B). "
                "Its zero reset is applied at the start of the next step with the spike recomputed and "
                "detached, which equals a detached hard reset to 0. It fires on mem > threshold (strict), "
                "snnlib on h >= v_th: they differ only when h equals the threshold exactly.",
    "snntorch_folded": "the same snn.Leaky, but conv/pool/linear run once on T*B folded batches and only the "
                       "neurons loop over time (a faster way to use snnTorch; not its documented idiom).",
    "norse": "LIFBoxCell(LIFBoxParameters(tau_mem_inv=0.5, v_th=1, v_reset=0, method='tanh', alpha=2), dt=1) "
             "looped over time on T*B-folded layer outputs. Norse integrates dv = dt tau_inv (i - v), so the "
             "input current is scaled by 1/(dt tau_inv) = 2 to get h = 0.5 v + x (one extra multiply per step); "
             "its tanh surrogate 1 - tanh(2 z)^2 equals sigmoid'(4 z). Norse's reset (1 - z) v + z v_reset "
             "is not detached, so its gradients equal snnlib's with detach_reset=False, not the common network's "
             "(forward equal; checked separately). It fires on v > v_th (strict).",
}


def spec_with(**overrides) -> dict:
    spec = dict(DEFAULT_SPEC)
    spec.update(overrides)
    return spec


def _head_features(spec) -> int:
    return spec["channels"][-1] * (spec["size"] // 4) ** 2


class BenchNet(nn.Module):
    """Common interface: ``forward(x_seq) -> [T, B, K]``, ``reset()``, ``canonical_params()``."""

    framework = "base"

    def reset(self) -> None:
        pass

    def canonical_params(self) -> list[nn.Parameter]:
        """conv1.weight, conv1.bias, conv2.weight, conv2.bias, fc.weight, fc.bias."""
        raise NotImplementedError


class FoldedNet(BenchNet):
    """A peer's neurons looped over time by ``_loop(neuron, currents [T, B, ...]) -> spikes [T, B, ...]``;
    conv, pool and linear on T*B folded batches. Subclasses provide conv1, conv2, fc, lif1, lif2."""

    def _loop(self, neuron, cur):
        raise NotImplementedError

    def forward(self, x_seq):
        T, B = x_seq.shape[:2]
        c1 = self.conv1(x_seq.flatten(0, 1))
        s1 = self._loop(self.lif1, c1.view(T, B, *c1.shape[1:])).flatten(0, 1)
        c2 = self.conv2(F.avg_pool2d(s1, 2))
        s2 = self._loop(self.lif2, c2.view(T, B, *c2.shape[1:])).flatten(0, 1)
        return self.fc(F.avg_pool2d(s2, 2).flatten(1)).view(T, B, -1)


# ---------------------------------------------------------------- snnlib
class SnnlibNet(BenchNet):
    framework = "snnlib"

    def __init__(self, spec: dict, backend: str = "fused", detach_reset: bool | None = None):
        super().__init__()
        detach = spec["detach_reset"] if detach_reset is None else detach_reset
        neuron = dict(leak=spec["leak"], v_th=spec["v_th"], reset="hard", v_reset=0.0, detach_reset=detach,
                      surrogate={"name": "sigmoid", "alpha": spec["alpha"]}, backend=backend)
        self.net = build_model({"name": "conv_snn", "channels": list(spec["channels"]), "bn": False, "pool": "avg",
                                "neuron": neuron},
                               {"channels": spec["in_channels"], "size": (spec["size"], spec["size"]),
                                "num_classes": spec["num_classes"]})

    def forward(self, x_seq):
        return self.net(x_seq)

    def reset(self):
        reset_net(self.net)

    def canonical_params(self):
        f = self.net.features
        conv1, conv2, fc = f[0].body, f[3].body, self.net.head.body[1]
        return [conv1.weight, conv1.bias, conv2.weight, conv2.bias, fc.weight, fc.bias]


# ---------------------------------------------------------------- SpikingJelly
class SpikingJellyNet(BenchNet):
    framework = "spikingjelly"

    def __init__(self, spec: dict):
        super().__init__()
        from spikingjelly.activation_based import functional, layer, neuron, surrogate
        c1, c2 = spec["channels"]
        tau = 1.0 / (1.0 - spec["leak"])

        def lif():
            return neuron.LIFNode(tau=tau, decay_input=False, v_threshold=spec["v_th"], v_reset=0.0,
                                  surrogate_function=surrogate.Sigmoid(alpha=spec["alpha"]),
                                  detach_reset=spec["detach_reset"], step_mode="m")

        self.net = nn.Sequential(
            layer.Conv2d(spec["in_channels"], c1, 3, padding=1, step_mode="m"), lif(), layer.AvgPool2d(2, step_mode="m"),
            layer.Conv2d(c1, c2, 3, padding=1, step_mode="m"), lif(), layer.AvgPool2d(2, step_mode="m"),
            layer.Flatten(step_mode="m"), layer.Linear(_head_features(spec), spec["num_classes"], step_mode="m"))
        functional.set_step_mode(self.net, "m")
        self._functional = functional

    def forward(self, x_seq):
        return self.net(x_seq)

    def reset(self):
        self._functional.reset_net(self.net)

    def canonical_params(self):
        n = self.net
        return [n[0].weight, n[0].bias, n[3].weight, n[3].bias, n[7].weight, n[7].bias]


# ---------------------------------------------------------------- snnTorch
class _SnnTorchLayers(BenchNet):
    def __init__(self, spec: dict):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate
        c1, c2 = spec["channels"]
        if not spec["detach_reset"]:
            raise ValueError("snnTorch's reset is always detached; use detach_reset=True")
        self.conv1 = nn.Conv2d(spec["in_channels"], c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(_head_features(spec), spec["num_classes"])
        self.lif1, self.lif2 = (snn.Leaky(beta=spec["leak"], threshold=spec["v_th"], reset_mechanism="zero",
                                          spike_grad=surrogate.sigmoid(slope=spec["alpha"])) for _ in range(2))

    def canonical_params(self):
        return [self.conv1.weight, self.conv1.bias, self.conv2.weight, self.conv2.bias, self.fc.weight, self.fc.bias]


class SnnTorchNet(_SnnTorchLayers):
    """snnTorch's tutorial idiom: the whole network once per time step."""

    framework = "snntorch"

    def forward(self, x_seq):
        mem1, mem2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        out = []
        for x in x_seq:
            spk1, mem1 = self.lif1(self.conv1(x), mem1)
            spk2, mem2 = self.lif2(self.conv2(F.avg_pool2d(spk1, 2)), mem2)
            out.append(self.fc(F.avg_pool2d(spk2, 2).flatten(1)))
        return torch.stack(out)


class SnnTorchFoldedNet(FoldedNet, _SnnTorchLayers):
    """snnTorch neurons looped over time; stateless layers on T*B folded batches."""

    framework = "snntorch_folded"

    @staticmethod
    def _loop(lif, cur):
        mem = lif.reset_mem()
        spikes = []
        for c in cur:
            spk, mem = lif(c, mem)
            spikes.append(spk)
        return torch.stack(spikes)


# ---------------------------------------------------------------- Norse
class NorseNet(FoldedNet):
    framework = "norse"

    def __init__(self, spec: dict):
        super().__init__()
        from norse.torch import LIFBoxCell, LIFBoxParameters
        c1, c2 = spec["channels"]
        rate = 1.0 - spec["leak"]                    # dt * tau_mem_inv with dt = 1
        p = LIFBoxParameters(tau_mem_inv=torch.as_tensor(rate), v_leak=torch.as_tensor(0.0),
                             v_th=torch.as_tensor(spec["v_th"]), v_reset=torch.as_tensor(0.0),
                             method="tanh", alpha=spec["alpha"] / 2)
        self.input_gain = 1.0 / rate
        self.conv1 = nn.Conv2d(spec["in_channels"], c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(_head_features(spec), spec["num_classes"])
        self.lif1, self.lif2 = LIFBoxCell(p, dt=1.0), LIFBoxCell(p, dt=1.0)

    def _loop(self, cell, cur):
        state, spikes = None, []
        for c in cur:
            z, state = cell(self.input_gain * c, state)
            spikes.append(z)
        return torch.stack(spikes)

    def canonical_params(self):
        return [self.conv1.weight, self.conv1.bias, self.conv2.weight, self.conv2.bias, self.fc.weight, self.fc.bias]


# ---------------------------------------------------------------- the compute floor
class AnnFloor(nn.Module):
    """The same layers as an ANN (ReLU instead of LIF) on one image: [B, 1, 28, 28] -> [B, K]."""

    framework = "ann_relu"

    def __init__(self, spec: dict):
        super().__init__()
        c1, c2 = spec["channels"]
        self.body = nn.Sequential(nn.Conv2d(spec["in_channels"], c1, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                                  nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                                  nn.Linear(_head_features(spec), spec["num_classes"]))

    def forward(self, x):
        return self.body(x)

    def canonical_params(self):
        b = self.body
        return [b[0].weight, b[0].bias, b[3].weight, b[3].bias, b[7].weight, b[7].bias]


BUILDERS = {"snnlib": SnnlibNet, "spikingjelly": SpikingJellyNet, "snntorch": SnnTorchNet,
            "snntorch_folded": SnnTorchFoldedNet, "norse": NorseNet}


def canonical_weights(spec: dict, seed: int = 0) -> list[torch.Tensor]:
    """Seeded weights of the snnlib network, first two convs scaled by ``spec['gains']`` so the
    neurons fire (PyTorch's default init on [0, 1) images barely reaches the threshold)."""
    torch.manual_seed(seed)
    ws = [p.detach().clone() for p in SnnlibNet(spec).canonical_params()]
    g1, g2 = spec["gains"]
    for i, g in ((0, g1), (1, g1), (2, g2), (3, g2)):
        ws[i].mul_(g)
    return ws


def build(framework: str, spec: dict | None = None, seed: int = 0, **kwargs) -> BenchNet:
    """The network of ``framework`` with the canonical weights of ``seed``."""
    if framework not in BUILDERS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {FRAMEWORKS}")
    spec = spec or DEFAULT_SPEC
    net = BUILDERS[framework](spec, **kwargs)
    load_canonical(net, canonical_weights(spec, seed))
    return net


def load_canonical(net, weights) -> None:
    with torch.no_grad():
        for p, w in zip(net.canonical_params(), weights, strict=True):
            if p.shape != w.shape:
                raise ValueError(f"{type(net).__name__}: parameter shape {tuple(p.shape)} != {tuple(w.shape)}")
            p.copy_(w)


def loss_of(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the time-averaged logits ``out`` [T, B, K]."""
    return F.cross_entropy(out.mean(0), y)
