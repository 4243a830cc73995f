"""MPIS-SNN: multi-parallel implicit streams (Cao et al., ECCV 2024; layout of kiritozc/MPIS-SNNs@0027f6f).

Two IDE-style feedback streams (own weights) at resolutions R and R/2 reach equilibrium together,
coupled by a fusion of their first layers (``StreamFusion``). A stream is
    layer 1 <- X(x) + Trans(s^3_{t-1});  layer 2 <- S1(s^1_t);  layer 3 <- S2(s^2_t)
with one stride-2 map (S2 for static inputs after the ANN stem, S1 for the event variant) and
Trans a stride-2 transposed conv back to layer 1's size. Head: z = DB(BN(Conv s2 (a_1^3))) + a_2^3
-> Conv1x1 + BN + DB -> flatten -> Linear, DB(v) = clamp(v / V, 0, 1).

Defaults implement the paper's intent (notes: docs/papers/ide_mpis.md, section 7):
current fusion in the SNN and in the rate map (so D learns), /V in the rate map, spectral-norm
feedback in both streams, zero input to stream 2. Released-code behaviour is available:
``fusion="membrane_snn_only"``, ``map_scale="V2"``, ``feedback_norm=False`` (with the method
options ``backward="one_step"``, ``rate="step0"``). ``streams=1`` is an IDE-like single stream.
Any input size works (28x28 included): transposed convs and the upsampling take their target size.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..equilibrium.feedback import EquilibriumNet, FeedbackSNN, Stream, StreamFusion, SynapseMap, ide_init_
from ..layers.feedback_norm import feedback_norm as reparam_feedback
from . import register_model
from .ide import conv_out

STREAM2_INPUTS = ("zeros", "downsampled")


class DB(nn.Module):
    """MPIS's clamp activation DB(v) = clamp(v / V, 0, 1)."""

    def __init__(self, V: float):
        super().__init__()
        self.V = float(V)

    def forward(self, v):
        return torch.clamp(v / self.V, 0.0, 1.0)

    def extra_repr(self):
        return f"V={self.V}"


def _half(n: int) -> int:
    return conv_out(n, 3, 2, 1)


def _stream(c_in, c1, c2, c3, down_at: int, use_norm: bool, dropout: float) -> Stream:
    def conv(ci, co, stride):
        return SynapseMap(ide_init_(nn.Conv2d(ci, co, 3, stride=stride, padding=1)), nn.BatchNorm2d(co), dropout)

    x_map = conv(c_in, c1, 1)
    s1 = conv(c1, c2, 2 if down_at == 1 else 1)
    s2 = conv(c2, c3, 2 if down_at == 2 else 1)
    trans = ide_init_(nn.ConvTranspose2d(c3, c1, 3, stride=2, padding=1, output_padding=1, bias=False))
    if use_norm:
        reparam_feedback(trans)
    return Stream(x_map, [s1, s2], SynapseMap(trans, None, dropout))


@register_model("mpis")
class MPIS(EquilibriumNet):
    """MPIS-SNN. Static CIFAR defaults (28.51M params on CIFAR-10): stem (3->128, 128->128 s2),
    streams 128 -> (256, 512, 1024). Event (N-MNIST) layout: ``stem_channels=None``,
    ``channels=(32, 32, 64)``, ``down_at=1`` (0.186M params on 2x32x32).

    Args:
        stem_channels: width of the ANN stem (Conv k3 + BN + DB, then Conv k3 s2 + BN + DB), or None.
        channels: (c1, c2, c3) widths of a stream's three layers.
        down_at: which loop map has stride 2 (2: S2 as in the static code; 1: S1 as in N-MNIST's).
        streams: 1 (IDE-like) or 2. fusion: 'current' | 'membrane_snn_only' | 'none' (2 streams).
        stream2_input: 'zeros' (released code; MDEQ feeds only its top branch) or 'downsampled'
            (2x2 average pool of stream 1's input).
        leak, v_th, u_rest, map_scale ('V' | 'V2'), sim_bn, feedback_norm, dropout: see FeedbackSNN.
        input_crop: centre-crop inputs to this square size first (released N-MNIST: 34 -> 32).
    """

    def __init__(self, in_channels: int = 3, input_size=(32, 32), num_classes: int = 10, stem_channels=128,
                 channels=(256, 512, 1024), down_at: int = 2, streams: int = 2, fusion: str = "current",
                 stream2_input: str = "zeros", dropout: float = 0.2, leak: float = 0.999, v_th: float = 2.0,
                 u_rest: float = 0.0, map_scale: str = "V", feedback_norm: bool = True, sim_bn: str = "running",
                 input_crop: int | None = None):
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        if streams not in (1, 2):
            raise ValueError(f"MPIS supports 1 or 2 streams, got {streams}")
        if down_at not in (1, 2):
            raise ValueError(f"down_at must be 1 (S1 strided) or 2 (S2 strided), got {down_at}")
        if stream2_input not in STREAM2_INPUTS:
            raise ValueError(f"stream2_input must be one of {STREAM2_INPUTS}, got {stream2_input!r}")
        if streams == 1 and fusion != "none":
            fusion = "none"
        H, W = input_size
        if input_crop is not None:
            if not 0 < input_crop <= min(H, W):
                raise ValueError(f"input_crop must be in 1..{min(H, W)} for {H}x{W} inputs, got {input_crop}")
            H = W = int(input_crop)
        self.input_crop = input_crop
        if stem_channels:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_channels, 3, padding=1), nn.BatchNorm2d(stem_channels), DB(v_th),
                nn.Conv2d(stem_channels, stem_channels, 3, stride=2, padding=1), nn.BatchNorm2d(stem_channels),
                DB(v_th))
            c_in, H, W = stem_channels, _half(H), _half(W)
        else:
            self.stem = None
            c_in = in_channels
        self.n_streams, self.stream2_input = streams, stream2_input
        sts = [_stream(c_in, c1, c2, c3, down_at, feedback_norm, dropout) for _ in range(streams)]
        fuse = StreamFusion(c1) if fusion != "none" else None
        self.snn = FeedbackSNN(sts, fusion=fuse, fusion_mode=fusion, leak=leak, v_th=v_th, u_rest=u_rest,
                               map_scale=map_scale, sim_bn=sim_bn)
        # last-layer size of stream 1, and of the head's output (= stream 2's last layer)
        h1, w1 = (_half(H), _half(W))
        self.downsamp = nn.Sequential(nn.Conv2d(c3, c3, 3, stride=2, padding=1), nn.BatchNorm2d(c3), DB(v_th))
        self.incre = nn.Sequential(nn.Conv2d(c3, c3, 1, bias=False), nn.BatchNorm2d(c3), DB(v_th))
        self.classifier = nn.Linear(c3 * _half(h1) * _half(w1), num_classes)

    def encode(self, x: torch.Tensor, T: int):
        if self.input_crop is not None:
            H, W = x.shape[-2:]
            top, left = (H - self.input_crop) // 2, (W - self.input_crop) // 2
            x = x[..., top:top + self.input_crop, left:left + self.input_crop]
        return super().encode(x, T)

    def stream_inputs(self, h: torch.Tensor, events: bool) -> list:
        if self.n_streams == 1:
            return [h]
        flat = h.flatten(0, 1) if events else h
        low = F.avg_pool2d(flat, 2, ceil_mode=True)
        if self.stream2_input == "zeros":
            low = torch.zeros_like(low)
        if events:
            low = low.view(h.shape[0], h.shape[1], *low.shape[1:])
        return [h, low]

    def readout(self, states: list) -> torch.Tensor:
        z = self.downsamp(states[0])
        if self.n_streams == 2:
            if z.shape != states[1].shape:
                raise ValueError(f"head: stream 1 gives {tuple(z.shape)}, stream 2 {tuple(states[1].shape)}")
            z = z + states[1]
        return self.classifier(self.incre(z).flatten(1))
