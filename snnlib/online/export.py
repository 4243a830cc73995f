"""Export of an online-trained network to an ordinary LIF network for inference.

``export_lif(model)`` copies the weights an ``OnlineVGG`` actually applies (standardised sWS
weights are frozen into plain ``nn.Conv2d``) into a network of ``snnlib.neurons.LIFNode``s that
adds the bias at every step and computes spikes from the membrane potential: the standard LIF
inference the SAF paper claims its weights run on. It shares no code with the SAF forward.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ..layers.weight_standardization import effective_weight
from ..neurons import LIFNode, weighted_rate
from .synapse import TraceSynapse

READOUTS = ("mean", "weighted_rate")


def _plain(op: nn.Module) -> nn.Module:
    """A plain Conv2d/Linear applying ``op``'s effective weight (detached copy)."""
    if isinstance(op, nn.Conv2d):
        new = nn.Conv2d(op.in_channels, op.out_channels, op.kernel_size, op.stride, op.padding, op.dilation,
                        op.groups, bias=op.bias is not None)
    elif isinstance(op, nn.Linear):
        new = nn.Linear(op.in_features, op.out_features, bias=op.bias is not None)
    else:
        raise TypeError(f"cannot export {type(op).__name__}")
    new = new.to(device=op.weight.device, dtype=op.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(effective_weight(op))
        if op.bias is not None:
            new.bias.copy_(op.bias)
    return new


class LIFNetwork(nn.Module):
    """Feed-forward (optionally feedback) LIF network: [T, B, C, H, W] -> per-step outputs [T, B, K].

    Per step: (optional resize of the input frame,) for each layer, I = conv(input) (+ feedback into the first layer), s = LIF(I),
    then the post ops (x2.74, pooling); output o[t] = Linear(GAP(features)).
    """

    def __init__(self, convs, neurons, posts, pool, head, feedback=None, upsample=None, resize=None):
        super().__init__()
        self.resize = resize
        self.convs, self.neurons, self.posts = nn.ModuleList(convs), nn.ModuleList(neurons), nn.ModuleList(posts)
        self.pool, self.head = pool, head
        self.feedback, self.upsample = feedback, upsample

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() != 5:
            raise ValueError(f"LIFNetwork expects [T, B, C, H, W], got shape {tuple(x_seq.shape)}")
        for n in self.neurons:
            n.reset()
        outs, last = [], None
        for x in x_seq:
            h = x
            if self.resize is not None and tuple(x.shape[-2:]) != (self.resize, self.resize):
                h = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", antialias=True,
                                  align_corners=False)
            for i, (conv, neuron, post) in enumerate(zip(self.convs, self.neurons, self.posts)):
                h = conv(h)
                if i == 0 and self.feedback is not None and last is not None:
                    h = h + self.feedback(self.upsample(last))
                h = post(neuron(h))
            last = h
            outs.append(self.head(self.pool(h).flatten(1)))
        return torch.stack(outs)


def export_lif(model: nn.Module) -> LIFNetwork:
    """Plain LIF copy of an ``OnlineVGG`` (eval mode, no dropout). Weights are copied, not shared."""
    net = getattr(model, "module", model)
    if not hasattr(net, "blocks") or not isinstance(getattr(net, "head", None), TraceSynapse):
        raise TypeError(f"export_lif expects an OnlineVGG-like model, got {type(net).__name__}")
    convs, neurons, posts = [], [], []
    for blk in net.blocks:
        convs.append(_plain(blk.synapse.op))
        n = blk.neuron
        neurons.append(LIFNode(leak=n.leak, v_th=n.v_th, reset="soft", surrogate=n.surrogate, step_mode="s"))
        posts.append(copy.deepcopy(blk.post))
    fb = _plain(net.feedback.op) if net.feedback is not None else None
    up = copy.deepcopy(net.upsample) if net.feedback is not None else None
    return LIFNetwork(convs, neurons, posts, copy.deepcopy(net.pool), _plain(net.head.op), fb, up,
                      getattr(net, "resize", None)).eval()


def readout(outputs: torch.Tensor, rule: str, leak: float) -> torch.Tensor:
    """Class scores from per-step outputs [T, B, K]: "mean" (sum_t o[t] / T, OTTT and SAF-E) or
    "weighted_rate" (sum_t leak^(T-t) o[t] / c_T = a[T], SAF-F)."""
    if rule == "mean":
        return outputs.mean(0)
    if rule == "weighted_rate":
        return weighted_rate(outputs, leak)
    raise ValueError(f"unknown readout {rule!r}; choose one of {READOUTS}")
