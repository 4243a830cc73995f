"""SPIDE feedback SNNs (Xiao et al., Neural Networks 2023; layouts of pkuxmq/SPIDE-FSNN@54e4338).

Every model is an ``EquilibriumNet`` around a one-stream ``FeedbackSNN`` (IF neurons, V_th = 1,
modified reset u_rest = -V_th, so V = 2), read out by a non-spiking Linear on the flattened
last layer. No BatchNorm anywhere. Parameter counts on 10 classes (derived, see tests):

| name                | spiking layers (input -> ... -> feedback)                          | params |
|---------------------|--------------------------------------------------------------------|--------|
| ``spide_lenet``     | 15C5 (28^2) -> AP2 (14^2) -> 40C5 -> AP2 (7^2) -> FC300; zero feedback | 607K |
| ``spide_convnet_f`` | 64C5s2 (14^2) -> 64C5s2 (7^2) -> 64C5; ConvT3 s2 back to 14^2          | 275K |
| ``spide_alexnet_f`` | 96C3s2 -> 256C3 -> 384C3s2 -> 384C3 -> 256C3; ConvT3 256->96 s2        | 3.71M |
| ``spide_cifarnet_f``| 128C3s2 -> 256 -> 512s2 -> 1024 -> 512; ConvT3 512->128 s2             | 11.84M |
| ``spide_dvs_convnet``| 512C9s2p4 (48^2 -> 24^2), self-feedback C5 512->512                   | 9.59M |
| ``spide_fc``        | FC 784 -> hidden[0] -> ... -> hidden[-1]; FC feedback to hidden[0]     | cpu scale |

Initialisation: Kaiming normal (fan-in) for the MNIST, DVS and FC models; U(-1, 1) filters of
unit L2 norm for the CIFAR models (``ide_init_``); transposed-conv feedback additionally x 0.1;
zero biases. The feedback weight is bounded in Frobenius norm (``FrobeniusBound``: 2 for
MNIST/CIFAR/FC, 10 for DVS). Dropout is variational (``SharedDropout``, one mask per batch,
reused by every step and by the backward): 0.2 (ConvNet-F, AlexNet-F), 0.25 (CIFARNet-F),
0 (DVS), 0.5 on LeNet's FC layer only.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..equilibrium.feedback import EquilibriumNet, FeedbackSNN, Stream, SynapseMap, ide_init_
from . import register_model

INITS = ("kaiming", "unit_uniform")


# ----------------------------------------------------------------------------------------------
# constraint and building blocks
# ----------------------------------------------------------------------------------------------
class FrobeniusBound(nn.Module):
    """Parametrisation W -> W * min(1, bound / ||W||_F), the factor computed without gradient.

    This is SPIDE's feedback constraint: the Frobenius norm of the kernel reshaped to
    (dim 0, rest) -- which equals the norm of the whole tensor -- is kept at most ``bound``.
    It bounds the reshaped kernel, not the convolution operator. ``probes=None`` uses the
    exact norm (deterministic, the default); ``probes=64`` reproduces the released estimate
    sqrt(mean_i ||v_i^T W_mat||^2) with Gaussian v_i, redrawn at every evaluation.
    """

    def __init__(self, bound: float, probes: int | None = None):
        super().__init__()
        if not bound > 0:
            raise ValueError(f"Frobenius bound must be > 0, got {bound}")
        if probes is not None and int(probes) < 1:
            raise ValueError(f"probes must be a positive integer or None, got {probes}")
        self.bound = float(bound)
        self.probes = None if probes is None else int(probes)

    def norm(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.probes is None:
                return w.norm()
            mat = w.reshape(w.shape[0], -1)
            v = torch.randn(self.probes, mat.shape[0], dtype=w.dtype, device=w.device)
            return ((v @ mat).pow(2).sum(1).mean() + 1e-12).sqrt()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n = self.norm(w)
        factor = torch.clamp(self.bound / n.clamp_min(1e-30), max=1.0)
        return w * factor

    def extra_repr(self) -> str:
        return f"bound={self.bound}, probes={self.probes}"


def frobenius_bound(module: nn.Module, bound: float, probes: int | None = None) -> nn.Module:
    """Bound ``module.weight`` in Frobenius norm (in place); returns ``module``."""
    if parametrize.is_parametrized(module, "weight"):
        raise ValueError(f"{type(module).__name__}.weight is already parametrised")
    parametrize.register_parametrization(module, "weight", FrobeniusBound(bound, probes))
    return module


class ZeroMap(nn.Module):
    """A synapse that carries nothing: [B, *in] -> zeros [B, *out_shape] (LeNet's feedback).

    ``spide_transpose`` gives its transpose (zeros shaped like the input) to the spiking backward.
    """

    def __init__(self, in_shape, out_shape):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros((x.shape[0], *self.out_shape))

    def spide_transpose(self, y: torch.Tensor) -> torch.Tensor:
        return y.new_zeros((y.shape[0], *self.in_shape))

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


def init_weights_(op: nn.Module, init: str) -> nn.Module:
    """'kaiming' (normal, fan-in, gain sqrt 2) or 'unit_uniform' (``ide_init_``); zero bias;
    transposed convolutions are then scaled by 0.1 (both cases, as in the reference)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "kaiming":
        nn.init.kaiming_normal_(op.weight, a=0, mode="fan_in")
        if op.bias is not None:
            nn.init.zeros_(op.bias)
    else:
        ide_init_(op)
    if isinstance(op, nn.ConvTranspose2d):
        with torch.no_grad():
            op.weight.mul_(0.1)
    return op


def _snn(stream: Stream, leak: float, v_th: float, u_rest: float | None) -> FeedbackSNN:
    u = -float(v_th) if u_rest is None else float(u_rest)
    return FeedbackSNN([stream], leak=leak, v_th=v_th, u_rest=u)


class SPIDENet(EquilibriumNet):
    """An ``EquilibriumNet`` with one stream and a Linear readout on the flattened last layer."""

    def readout(self, states):
        return self.classifier(states[0].flatten(1))


def _out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


# ----------------------------------------------------------------------------------------------
# the reference structures
# ----------------------------------------------------------------------------------------------
@register_model("spide_lenet")
class SPIDELeNet(SPIDENet):
    """MNIST LeNet: 15C5 -> AP2 -> 40C5 -> AP2 -> FC300, zero feedback (feed-forward; SPIDE is then
    spike-based backpropagation). Pooling layers are IF layers of their own. 606.7K params."""

    def __init__(self, in_channels: int = 1, input_size=(28, 28), num_classes: int = 10, c1: int = 15,
                 c2: int = 40, fc: int = 300, dropout: float = 0.5, leak: float = 1.0, v_th: float = 1.0,
                 u_rest: float | None = None):
        super().__init__()
        H, W = input_size
        if H % 4 or W % 4:
            raise ValueError(f"spide_lenet needs input sizes divisible by 4, got {tuple(input_size)}")
        inp = SynapseMap(init_weights_(nn.Conv2d(in_channels, c1, 5, padding=2), "kaiming"))
        pool1 = SynapseMap(nn.AvgPool2d(2))
        conv2 = SynapseMap(init_weights_(nn.Conv2d(c1, c2, 5, padding=2), "kaiming"))
        pool2 = SynapseMap(nn.AvgPool2d(2))
        fc_op = nn.Sequential(nn.Flatten(), init_weights_(nn.Linear(c2 * (H // 4) * (W // 4), fc), "kaiming"))
        fcmap = SynapseMap(fc_op, None, dropout)
        fb = SynapseMap(ZeroMap((fc,), (c1, H, W)))
        self.snn = _snn(Stream(inp, [pool1, conv2, pool2, fcmap], fb), leak, v_th, u_rest)
        self.classifier = nn.Linear(fc, num_classes)


@register_model("spide_convnet_f")
class SPIDEConvNetF(SPIDENet):
    """MNIST ConvNet-F: 64C5s2 -> 64C5s2 -> 64C5, ConvTranspose 3x3 s2 feedback (no bias).

    ``channels`` scales every layer (64: the reference, 274.8K params; smaller for cpu runs).
    """

    def __init__(self, in_channels: int = 1, input_size=(28, 28), num_classes: int = 10, channels: int = 64,
                 dropout: float = 0.2, leak: float = 1.0, v_th: float = 1.0, u_rest: float | None = None,
                 fb_bound: float = 2.0, fb_probes: int | None = None):
        super().__init__()
        c = int(channels)
        h1, w1 = (_out(s, 5, 2, 2) for s in input_size)
        h2, w2 = (_out(s, 5, 2, 2) for s in (h1, w1))
        if (2 * h2, 2 * w2) != (h1, w1):
            raise ValueError(f"spide_convnet_f: the stride-2 feedback needs an even layer-1 map, got {h1}x{w1} "
                             f"from input {tuple(input_size)}")
        inp = SynapseMap(init_weights_(nn.Conv2d(in_channels, c, 5, stride=2, padding=2), "kaiming"), None, dropout)
        l2 = SynapseMap(init_weights_(nn.Conv2d(c, c, 5, stride=2, padding=2), "kaiming"), None, dropout)
        l3 = SynapseMap(init_weights_(nn.Conv2d(c, c, 5, stride=1, padding=2), "kaiming"), None, dropout)
        fbop = init_weights_(nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1, bias=False), "kaiming")
        fb = SynapseMap(frobenius_bound(fbop, fb_bound, fb_probes), None, dropout)
        self.snn = _snn(Stream(inp, [l2, l3], fb), leak, v_th, u_rest)
        self.classifier = nn.Linear(c * h2 * w2, num_classes)


PRESETS = {"alexnet_f": (96, 256, 384, 384, 256), "cifarnet_f": (128, 256, 512, 1024, 512)}


@register_model("spide_multilayer")
class SPIDEMultiLayer(SPIDENet):
    """IDE's multi-layer structure without BatchNorm: C->c0 k3 s2, then c0 -> c1 -> c2 (s2) -> c3
    -> c4 (3x3 convs with bias), ConvTranspose c4 -> c0 (k3 s2, no bias) feedback."""

    def __init__(self, in_channels: int = 3, input_size=(32, 32), num_classes: int = 10,
                 channels=PRESETS["alexnet_f"], dropout: float = 0.2, leak: float = 1.0, v_th: float = 1.0,
                 u_rest: float | None = None, init: str = "unit_uniform", fb_bound: float = 2.0,
                 fb_probes: int | None = None):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 5:
            raise ValueError(f"channels must list 5 layer widths (c0..c4), got {channels}")
        c0, c1, c2, c3, c4 = channels
        h1, w1 = (_out(s, 3, 2, 1) for s in input_size)
        h2, w2 = (_out(s, 3, 2, 1) for s in (h1, w1))
        if (2 * h2, 2 * w2) != (h1, w1):
            raise ValueError(f"spide_multilayer: the stride-2 feedback needs an even layer-1 map, got {h1}x{w1}")

        def conv(ci, co, stride=1):
            return SynapseMap(init_weights_(nn.Conv2d(ci, co, 3, stride=stride, padding=1), init), None, dropout)

        inp = conv(in_channels, c0, 2)
        fwd = [conv(c0, c1), conv(c1, c2, 2), conv(c2, c3), conv(c3, c4)]
        fbop = init_weights_(nn.ConvTranspose2d(c4, c0, 3, stride=2, padding=1, output_padding=1, bias=False), init)
        fb = SynapseMap(frobenius_bound(fbop, fb_bound, fb_probes), None, dropout)
        self.snn = _snn(Stream(inp, fwd, fb), leak, v_th, u_rest)
        self.classifier = nn.Linear(c4 * h2 * w2, num_classes)


@register_model("spide_alexnet_f")
def spide_alexnet_f(in_channels: int = 3, input_size=(32, 32), num_classes: int = 10, dropout: float = 0.2,
                    leak: float = 1.0, v_th: float = 1.0, u_rest: float | None = None,
                    fb_probes: int | None = None) -> SPIDEMultiLayer:
    """AlexNet-F without BatchNorm (3.71M params on CIFAR-10, 5.18M on CIFAR-100)."""
    return SPIDEMultiLayer(in_channels, input_size, num_classes, PRESETS["alexnet_f"], dropout, leak, v_th, u_rest,
                           "unit_uniform", 2.0, fb_probes)


@register_model("spide_cifarnet_f")
def spide_cifarnet_f(in_channels: int = 3, input_size=(32, 32), num_classes: int = 10, dropout: float = 0.25,
                     leak: float = 1.0, v_th: float = 1.0, u_rest: float | None = None,
                     fb_probes: int | None = None) -> SPIDEMultiLayer:
    """CIFARNet-F without BatchNorm (11.84M params on CIFAR-10, 14.78M on CIFAR-100)."""
    return SPIDEMultiLayer(in_channels, input_size, num_classes, PRESETS["cifarnet_f"], dropout, leak, v_th, u_rest,
                           "unit_uniform", 2.0, fb_probes)


@register_model("spide_dvs_convnet")
class SPIDEDVSConvNet(SPIDENet):
    """CIFAR10-DVS ConvNet: 512C9 s2 p4 on 2x48x48 event frames (-> 24x24), self-recurrent 5x5
    conv feedback 512 -> 512 without bias (Frobenius bound 10), no dropout. 9.59M params.

    Frames of another size (the DVS128's 128x128) are resized to ``frame_size`` inside ``encode``
    (bilinear, as the reference resizes its frames to 48); ``input_size`` is then ignored.
    """

    def __init__(self, in_channels: int = 2, input_size=(48, 48), num_classes: int = 10, channels: int = 512,
                 frame_size: int | None = 48, dropout: float = 0.0, leak: float = 1.0, v_th: float = 1.0,
                 u_rest: float | None = None, fb_bound: float = 10.0, fb_probes: int | None = None):
        super().__init__()
        c = int(channels)
        self.frame_size = None if frame_size is None else (int(frame_size), int(frame_size))
        size = self.frame_size or tuple(input_size)
        inp = SynapseMap(init_weights_(nn.Conv2d(in_channels, c, 9, stride=2, padding=4), "kaiming"), None, dropout)
        fbop = init_weights_(nn.Conv2d(c, c, 5, padding=2, bias=False), "kaiming")
        fb = SynapseMap(frobenius_bound(fbop, fb_bound, fb_probes), None, dropout)
        self.snn = _snn(Stream(inp, [], fb), leak, v_th, u_rest)
        h, w = (_out(s, 9, 2, 4) for s in size)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def encode(self, x: torch.Tensor, T: int):
        inputs, events = super().encode(x, T)
        h = inputs[0]
        if self.frame_size is not None and tuple(h.shape[-2:]) != self.frame_size:
            lead = h.shape[:-3]
            flat = h.reshape(-1, *h.shape[-3:])
            flat = nn.functional.interpolate(flat, size=self.frame_size, mode="bilinear", align_corners=False)
            h = flat.reshape(*lead, *flat.shape[1:])
        return [h], events


@register_model("spide_fc")
class SPIDEFC(SPIDENet):
    """Fully connected feedback net for cpu-scale runs: x -> FC -> hidden[0] -> ... -> hidden[-1],
    FC feedback hidden[-1] -> hidden[0] (no bias, Frobenius bound ``fb_bound``). Kaiming init."""

    def __init__(self, in_channels: int = 1, input_size=(28, 28), num_classes: int = 10, hidden=(256,),
                 dropout: float = 0.0, leak: float = 1.0, v_th: float = 1.0, u_rest: float | None = None,
                 fb_bound: float = 2.0, fb_probes: int | None = None):
        super().__init__()
        hidden = [int(h) for h in (hidden if isinstance(hidden, (list, tuple)) else [hidden])]
        if not hidden or min(hidden) <= 0:
            raise ValueError(f"hidden must list positive layer widths, got {hidden}")
        d = in_channels * math.prod(input_size)
        inp = SynapseMap(nn.Sequential(nn.Flatten(), init_weights_(nn.Linear(d, hidden[0]), "kaiming")), None, dropout)
        fwd = [SynapseMap(init_weights_(nn.Linear(a, b), "kaiming"), None, dropout)
               for a, b in zip(hidden[:-1], hidden[1:])]
        fbop = init_weights_(nn.Linear(hidden[-1], hidden[0], bias=False), "kaiming")
        fb = SynapseMap(frobenius_bound(fbop, fb_bound, fb_probes), None, dropout)
        self.snn = _snn(Stream(inp, fwd, fb), leak, v_th, u_rest)
        self.classifier = nn.Linear(hidden[-1], num_classes)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (a Frobenius-bounded weight counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
