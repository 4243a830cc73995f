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

FRAMEWORKS = ("snnlib", "plain_loop", "spikingjelly", "spikingjelly_single", "snntorch", "snntorch_folded", "norse",
              "norse_per_step")
DEFAULT_SPEC = dict(channels=(32, 64), in_channels=1, size=28, num_classes=10, leak=0.5, v_th=1.0,
                    alpha=4.0, detach_reset=True, gains=(2.0, 3.0))

#: How each peer is made equal to snnlib's neuron, and what stays different.
DIFFERENCES = {
    "snnlib": "LIFNode(leak=0.5, v_th=1, reset='hard', v_reset=0, detach_reset=True, surrogate=Sigmoid(4)), "
              "multi-step (fused backend); conv/pool/linear on folded batches (SeqToBatch), the sequence run "
              "in time chunks sized to the CPU cache (conv_snn's default chunk='auto': the first step alone, "
              "then chunks of c steps through every layer, c*B*largest activation <= last-level cache).",
    "spikingjelly": "neuron.LIFNode(tau=2, decay_input=False, v_threshold=1, v_reset=0, detach_reset=True, "
                    "surrogate.Sigmoid(alpha=4), step_mode='m'): h = v - v/tau + x equals h = 0.5 v + x bit for "
                    "bit. On CPU, float32, 2.0.0 runs this through its registered sj_lif op (a Python loop over "
                    "time with a hand-written backward that saves h, x and v0). Layers: layer.Conv2d/AvgPool2d/"
                    "Flatten/Linear with step_mode='m' (T folded into the batch).",
    "plain_loop": "what a researcher writes in ten lines of PyTorch: the whole network called once per time step "
                  "on [B, ...] (nn.Conv2d, F.avg_pool2d, nn.Linear), h = 0.5 v + x, s = SpikeFn(h - 1) (a "
                  "torch.autograd.Function: Heaviside forward, sigmoid'(4 z) backward), v = h (1 - s.detach()). "
                  "Nothing fused.",
    "spikingjelly_single": "the same SpikingJelly layers and LIFNode in single-step mode (step_mode='s', its "
                           "default and the mode of its first tutorials): the network called once per time "
                           "step on [B, ...].",
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
    "norse_per_step": "the same LIFBoxCell in Norse's documented idiom: a SequentialState of torch layers and "
                      "cells called once per time step on [B, ...] with its state list (the input gain 2 as a "
                      "layer in front of each cell).",
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

    def __init__(self, spec: dict, backend: str = "fused", detach_reset: bool | None = None, chunk="auto"):
        super().__init__()
        detach = spec["detach_reset"] if detach_reset is None else detach_reset
        neuron = dict(leak=spec["leak"], v_th=spec["v_th"], reset="hard", v_reset=0.0, detach_reset=detach,
                      surrogate={"name": "sigmoid", "alpha": spec["alpha"]}, backend=backend)
        self.net = build_model({"name": "conv_snn", "channels": list(spec["channels"]), "bn": False, "pool": "avg",
                                "neuron": neuron, "chunk": chunk},
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


# ---------------------------------------------------------------- the plain per-step PyTorch loop
class SpikeFn(torch.autograd.Function):
    """Heaviside forward, sigmoid'(alpha z) backward: the surrogate a researcher writes by hand."""

    @staticmethod
    def forward(ctx, z, alpha):
        ctx.save_for_backward(z)
        ctx.alpha = alpha
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.alpha * z)
        return grad * ctx.alpha * sig * (1 - sig), None


class PlainLoopNet(BenchNet):
    """The whole network once per time step on [B, ...]; LIF with a detached hard reset to 0."""

    framework = "plain_loop"

    def __init__(self, spec: dict):
        super().__init__()
        if not spec["detach_reset"]:
            raise ValueError("the plain loop detaches its reset; use detach_reset=True")
        c1, c2 = spec["channels"]
        self.conv1 = nn.Conv2d(spec["in_channels"], c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(_head_features(spec), spec["num_classes"])
        self.leak, self.v_th, self.alpha = spec["leak"], spec["v_th"], spec["alpha"]

    def _lif(self, x, v):
        h = x if v is None else self.leak * v + x
        s = SpikeFn.apply(h - self.v_th, self.alpha)
        return s, h * (1 - s.detach())

    def forward(self, x_seq):
        v1 = v2 = None
        out = []
        for x in x_seq:
            s1, v1 = self._lif(self.conv1(x), v1)
            s2, v2 = self._lif(self.conv2(F.avg_pool2d(s1, 2)), v2)
            out.append(self.fc(F.avg_pool2d(s2, 2).flatten(1)))
        return torch.stack(out)

    def canonical_params(self):
        return [self.conv1.weight, self.conv1.bias, self.conv2.weight, self.conv2.bias, self.fc.weight, self.fc.bias]


# ---------------------------------------------------------------- SpikingJelly
class SpikingJellyNet(BenchNet):
    """Multi-step mode (``step_mode='m'``): every layer on [T, B, ...]."""

    framework = "spikingjelly"
    step_mode = "m"

    def __init__(self, spec: dict):
        super().__init__()
        from spikingjelly.activation_based import functional, layer, neuron, surrogate
        c1, c2 = spec["channels"]
        tau = 1.0 / (1.0 - spec["leak"])
        mode = self.step_mode

        def lif():
            return neuron.LIFNode(tau=tau, decay_input=False, v_threshold=spec["v_th"], v_reset=0.0,
                                  surrogate_function=surrogate.Sigmoid(alpha=spec["alpha"]),
                                  detach_reset=spec["detach_reset"], step_mode=mode)

        self.net = nn.Sequential(
            layer.Conv2d(spec["in_channels"], c1, 3, padding=1, step_mode=mode), lif(),
            layer.AvgPool2d(2, step_mode=mode),
            layer.Conv2d(c1, c2, 3, padding=1, step_mode=mode), lif(), layer.AvgPool2d(2, step_mode=mode),
            layer.Flatten(step_mode=mode), layer.Linear(_head_features(spec), spec["num_classes"], step_mode=mode))
        functional.set_step_mode(self.net, mode)
        self._functional = functional

    def forward(self, x_seq):
        return self.net(x_seq)

    def reset(self):
        self._functional.reset_net(self.net)

    def canonical_params(self):
        n = self.net
        return [n[0].weight, n[0].bias, n[3].weight, n[3].bias, n[7].weight, n[7].bias]


class SpikingJellySingleStepNet(SpikingJellyNet):
    """Single-step mode (``step_mode='s'``): the network called once per time step."""

    framework = "spikingjelly_single"
    step_mode = "s"

    def forward(self, x_seq):
        return torch.stack([self.net(x) for x in x_seq])


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


class _Gain(nn.Module):
    def __init__(self, gain: float):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        return self.gain * x


class NorsePerStepNet(BenchNet):
    """Norse's documented idiom: ``SequentialState`` of layers and cells, called once per step."""

    framework = "norse_per_step"

    def __init__(self, spec: dict):
        super().__init__()
        from norse.torch import LIFBoxCell, LIFBoxParameters, SequentialState
        c1, c2 = spec["channels"]
        rate = 1.0 - spec["leak"]
        p = LIFBoxParameters(tau_mem_inv=torch.as_tensor(rate), v_leak=torch.as_tensor(0.0),
                             v_th=torch.as_tensor(spec["v_th"]), v_reset=torch.as_tensor(0.0),
                             method="tanh", alpha=spec["alpha"] / 2)
        self.net = SequentialState(
            nn.Conv2d(spec["in_channels"], c1, 3, padding=1), _Gain(1.0 / rate), LIFBoxCell(p, dt=1.0),
            nn.AvgPool2d(2), nn.Conv2d(c1, c2, 3, padding=1), _Gain(1.0 / rate), LIFBoxCell(p, dt=1.0),
            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(_head_features(spec), spec["num_classes"]))

    def forward(self, x_seq):
        state, out = None, []
        for x in x_seq:
            o, state = self.net(x, state)
            out.append(o)
        return torch.stack(out)

    def canonical_params(self):
        n = self.net
        return [n[0].weight, n[0].bias, n[4].weight, n[4].bias, n[9].weight, n[9].bias]


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


BUILDERS = {"snnlib": SnnlibNet, "plain_loop": PlainLoopNet, "spikingjelly": SpikingJellyNet,
            "spikingjelly_single": SpikingJellySingleStepNet, "snntorch": SnnTorchNet,
            "snntorch_folded": SnnTorchFoldedNet, "norse": NorseNet, "norse_per_step": NorsePerStepNet}


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
