"""IDE feedback SNNs (Xiao et al., NeurIPS 2021; layouts of pkuxmq/IDE-FSNN@7da5907).

- ``ide_fc``: Fashion-MNIST F400: x -> FC 784->400 + BN -> [400 LIF] <-> FC 400->400 (feedback,
  spectral-norm reparametrised, no bias/BN) -> Linear 400 -> classes.
- ``ide_conv``: MNIST / N-MNIST F64C5: Conv C->64 k5 s2 + BN -> [64 ch] <-> Conv 64->64 k5
  (feedback) -> Linear. N-MNIST's code uses padding 1 on 34x34 (16x16 map); padding 2 gives 17x17.
- ``alexnet_f`` / ``cifarnet_f`` (and the general ``ide_multilayer``): Conv C->c0 k3 s2 + BN,
  then loop layers c0 -> c1 -> c2 (s2) -> c3 -> c4 (conv + BN), feedback ConvTranspose
  c4 -> c0 (k3 s2, reparametrised), Linear on layer N.

Every synapse is followed by variational dropout shared over time (p = ``dropout``); weights
start U(-1, 1) with unit-norm filters. Neurons: V_th = 2, leak 1 (IF) or < 1 (LIF).
Inputs are static [B, C, H, W] or events [B, T, C, H, W].
"""
from __future__ import annotations

import math

from torch import nn

from ..equilibrium.feedback import EquilibriumNet, FeedbackSNN, Stream, SynapseMap, ide_init_
from ..layers.feedback_norm import feedback_norm
from . import register_model


def conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _feedback(op: nn.Module, use_norm: bool, dropout: float) -> SynapseMap:
    ide_init_(op)
    if use_norm:
        feedback_norm(op)
    return SynapseMap(op, None, dropout)


def _snn(streams, neuron: dict) -> FeedbackSNN:
    return FeedbackSNN(streams, leak=neuron["leak"], v_th=neuron["v_th"], u_rest=neuron["u_rest"],
                       map_scale=neuron["map_scale"], sim_bn=neuron["sim_bn"])


def _neuron(leak, v_th, u_rest, map_scale, sim_bn) -> dict:
    return dict(leak=float(leak), v_th=float(v_th), u_rest=float(u_rest), map_scale=map_scale, sim_bn=sim_bn)


class _LinearReadout(EquilibriumNet):
    def readout(self, states):
        return self.classifier(states[0].flatten(1))


@register_model("ide_fc")
class IDEFC(_LinearReadout):
    """IDE single-layer FC feedback net (F400 on Fashion-MNIST: 478.8K parameters)."""

    def __init__(self, in_channels: int = 1, input_size=(28, 28), num_classes: int = 10, hidden: int = 400,
                 dropout: float = 0.2, leak: float = 1.0, v_th: float = 2.0, u_rest: float = 0.0,
                 feedback_norm: bool = True, map_scale: str = "V", sim_bn: str = "running"):
        super().__init__()
        d = in_channels * math.prod(input_size)
        lin = ide_init_(nn.Linear(d, hidden, bias=True))
        inp = SynapseMap(nn.Sequential(nn.Flatten(), lin), nn.BatchNorm1d(hidden), dropout)
        fb = _feedback(nn.Linear(hidden, hidden, bias=False), feedback_norm, dropout)
        self.snn = _snn([Stream(inp, [], fb)], _neuron(leak, v_th, u_rest, map_scale, sim_bn))
        self.classifier = nn.Linear(hidden, num_classes)


@register_model("ide_conv")
class IDEConv(_LinearReadout):
    """IDE single-layer conv feedback net F64C5 (MNIST: 229.6K params; N-MNIST: see ``padding``)."""

    def __init__(self, in_channels: int = 1, input_size=(28, 28), num_classes: int = 10, channels: int = 64,
                 kernel: int = 5, padding: int = 2, dropout: float = 0.2, leak: float = 1.0, v_th: float = 2.0,
                 u_rest: float = 0.0, feedback_norm: bool = True, map_scale: str = "V", sim_bn: str = "running"):
        super().__init__()
        conv = ide_init_(nn.Conv2d(in_channels, channels, kernel, stride=2, padding=padding, bias=True))
        inp = SynapseMap(conv, nn.BatchNorm2d(channels), dropout)
        fb = _feedback(nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False), feedback_norm, dropout)
        self.snn = _snn([Stream(inp, [], fb)], _neuron(leak, v_th, u_rest, map_scale, sim_bn))
        h, w = (conv_out(s, kernel, 2, padding) for s in input_size)
        self.classifier = nn.Linear(channels * h * w, num_classes)


PRESETS = {"alexnet_f": (96, 256, 384, 384, 256), "cifarnet_f": (128, 256, 512, 1024, 512)}


@register_model("ide_multilayer")
class IDEMultiLayer(_LinearReadout):
    """IDE multi-layer feedback conv net: ``channels = (c0, c1, c2, c3, c4)`` (AlexNet-F
    (96, 256, 384, 384, 256): 3.71M params on CIFAR-10; CIFARNet-F (128, 256, 512, 1024, 512):
    11.84M). Layer 1 (c0) is at half the input size; layers 3-5 at a quarter."""

    def __init__(self, in_channels: int = 3, input_size=(32, 32), num_classes: int = 10,
                 channels=(96, 256, 384, 384, 256), dropout: float = 0.2, leak: float = 1.0, v_th: float = 2.0,
                 u_rest: float = 0.0, feedback_norm: bool = True, map_scale: str = "V", sim_bn: str = "running"):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 5:
            raise ValueError(f"channels must list 5 layer widths (c0..c4), got {channels}")
        c0, c1, c2, c3, c4 = channels
        inp = SynapseMap(ide_init_(nn.Conv2d(in_channels, c0, 3, stride=2, padding=1)), nn.BatchNorm2d(c0), dropout)

        def layer(ci, co, stride=1):
            return SynapseMap(ide_init_(nn.Conv2d(ci, co, 3, stride=stride, padding=1)), nn.BatchNorm2d(co), dropout)

        fwd = [layer(c0, c1), layer(c1, c2, 2), layer(c2, c3), layer(c3, c4)]
        fb = _feedback(nn.ConvTranspose2d(c4, c0, 3, stride=2, padding=1, output_padding=1, bias=False),
                       feedback_norm, dropout)
        self.snn = _snn([Stream(inp, fwd, fb)], _neuron(leak, v_th, u_rest, map_scale, sim_bn))
        h, w = (conv_out(conv_out(s, 3, 2, 1), 3, 2, 1) for s in input_size)
        self.classifier = nn.Linear(c4 * h * w, num_classes)


@register_model("alexnet_f")
def alexnet_f(in_channels: int = 3, input_size=(32, 32), num_classes: int = 10, dropout: float = 0.2,
              leak: float = 1.0, v_th: float = 2.0, u_rest: float = 0.0, feedback_norm: bool = True,
              map_scale: str = "V", sim_bn: str = "running") -> IDEMultiLayer:
    """AlexNet-F (dropout 0.2: the ``--drop`` default of IDE's cifar_alexnetf.py [ref-code])."""
    return IDEMultiLayer(in_channels, input_size, num_classes, PRESETS["alexnet_f"], dropout, leak, v_th, u_rest,
                         feedback_norm, map_scale, sim_bn)


@register_model("cifarnet_f")
def cifarnet_f(in_channels: int = 3, input_size=(32, 32), num_classes: int = 10, dropout: float = 0.2,
               leak: float = 1.0, v_th: float = 2.0, u_rest: float = 0.0, feedback_norm: bool = True,
               map_scale: str = "V", sim_bn: str = "running") -> IDEMultiLayer:
    """CIFARNet-F."""
    return IDEMultiLayer(in_channels, input_size, num_classes, PRESETS["cifarnet_f"], dropout, leak, v_th, u_rest,
                         feedback_norm, map_scale, sim_bn)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (the reparametrised feedback counts W~ and its scale g)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
