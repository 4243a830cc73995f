"""MPIS-SNN: multi-parallel implicit streams (Cao et al., ECCV 2024; layout of kiritozc/MPIS-SNNs@0027f6f).

Two IDE-style feedback streams (own weights) at resolutions R and R/2 reach equilibrium together,
coupled by a fusion of their first layers (``StreamFusion``). A stream is
    layer 1 <- X(x) + Trans(s^3_{t-1});  layer 2 <- S1(s^1_t);  layer 3 <- S2(s^2_t)
with one stride-2 map (S2 for static inputs after the ANN stem, S1 for the event variant) and
Trans a stride-2 transposed conv back to layer 1's size. Head: z = DB(BN(Conv s2 (a_1^3))) + a_2^3
-> Conv1x1 + BN + DB -> flatten -> Linear, DB(v) = clamp(v / V, 0, 1).

Defaults implement the paper's intent (notes: docs/papers/ide_mpis.md, section 7):
current fusion in the SNN and in the rate map (so D learns), /V in the rate map, spectral-norm
feedback in both streams, zero input to stream 2, the head reading the SNN's rates a, and
BatchNorm running statistics set from the first training batch (``bn_init="data"``, below).
Released-code behaviour is available: ``fusion="membrane_snn_only"``, ``map_scale="V2"``,
``feedback_norm=False``, ``readout_source="rate_map"``, ``bn_init="default"`` (with T = 1 and the
method options ``backward="one_step"``, ``rate="step0"``; configs/runs/mpis_cifar10_released.yaml).
``streams=1`` is an IDE-like single stream. Any input size works (28x28 included): transposed
convs and the upsampling take their target size.

Why ``bn_init="data"``: the simulation normalises its loop maps with BatchNorm *running*
statistics (IDE's and the released code's choice), the rate map in training with *batch*
statistics. At initialisation the running variance is 1 while the loop maps' currents have a
variance of about 0.04-0.1 (unit-norm filters on sparse rates), so the simulation drives layers
2-3 about 3-5x more weakly than the rate map assumes: layer 3 is nearly silent in training and,
with the stem's and input maps' running statistics also at (0, 1), every layer is silent in
evaluation. ``bn_init="data"`` sets every BatchNorm's running statistics once, on the first
training batch, to that batch's statistics (the loop maps' at the rate map's fixed point,
reached by iterating f), so that simulation and rate map normalise alike from the first step.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from ..equilibrium.feedback import EquilibriumNet, FeedbackSNN, Stream, StreamFusion, SynapseMap, ide_init_
from ..layers.feedback_norm import feedback_norm as reparam_feedback
from . import register_model
from .ide import conv_out

STREAM2_INPUTS = ("zeros", "downsampled")
READOUT_SOURCES = ("rates", "rate_map")
BN_INITS = ("data", "default")
CALIBRATION_ITERS = 30


class RememberingFeedbackSNN(FeedbackSNN):
    """A ``FeedbackSNN`` that keeps the last batch's ``Drive`` (``last_drive``), so that the
    head can evaluate the rate map f at the SNN's rates (``readout_source="rate_map"``)."""

    last_drive = None

    def drive(self, inputs: list, *, events: bool = False):
        d = super().drive(inputs, events=events)
        self.last_drive = d
        return d


def batch_norms(module: nn.Module) -> list:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def bn_momentum(module: nn.Module, momentum: float):
    """Temporarily set the momentum of every BatchNorm in ``module`` (1.0: running = batch)."""
    bns = batch_norms(module)
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = momentum
    try:
        yield
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m


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
        readout_source: what the head reads: 'rates' (the SNN's last-layer rates a) or 'rate_map'
            (f(a), the analog rate map at the SNN's rates, as the released code does in training and
            evaluation; the gradient is the backward's, taken at a).
        bn_init: 'data' (set every BatchNorm's running statistics from the first training batch,
            see the module docstring) or 'default' (running statistics start at (0, 1); released).
    """

    def __init__(self, in_channels: int = 3, input_size=(32, 32), num_classes: int = 10, stem_channels=128,
                 channels=(256, 512, 1024), down_at: int = 2, streams: int = 2, fusion: str = "current",
                 stream2_input: str = "zeros", dropout: float = 0.2, leak: float = 0.999, v_th: float = 2.0,
                 u_rest: float = 0.0, map_scale: str = "V", feedback_norm: bool = True, sim_bn: str = "running",
                 input_crop: int | None = None, readout_source: str = "rates", bn_init: str = "data"):
        super().__init__()
        if readout_source not in READOUT_SOURCES:
            raise ValueError(f"readout_source must be one of {READOUT_SOURCES}, got {readout_source!r}")
        if bn_init not in BN_INITS:
            raise ValueError(f"bn_init must be one of {BN_INITS}, got {bn_init!r}")
        self.readout_source, self.bn_init = readout_source, bn_init
        # True once the running statistics are set from data (a buffer: checkpoints and resumes keep it)
        self.register_buffer("bn_calibrated", torch.tensor(bn_init == "default"))
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
        self.snn = RememberingFeedbackSNN(sts, fusion=fuse, fusion_mode=fusion, leak=leak, v_th=v_th,
                                          u_rest=u_rest, map_scale=map_scale, sim_bn=sim_bn)
        # last-layer size of stream 1, and of the head's output (= stream 2's last layer)
        h1, w1 = (_half(H), _half(W))
        self.downsamp = nn.Sequential(nn.Conv2d(c3, c3, 3, stride=2, padding=1), nn.BatchNorm2d(c3), DB(v_th))
        self.incre = nn.Sequential(nn.Conv2d(c3, c3, 1, bias=False), nn.BatchNorm2d(c3), DB(v_th))
        self.classifier = nn.Linear(c3 * _half(h1) * _half(w1), num_classes)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # checkpoints written before bn_init existed: their running statistics come from training
        state_dict.setdefault(prefix + "bn_calibrated", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def encode(self, x: torch.Tensor, T: int):
        if self.input_crop is not None:
            H, W = x.shape[-2:]
            top, left = (H - self.input_crop) // 2, (W - self.input_crop) // 2
            x = x[..., top:top + self.input_crop, left:left + self.input_crop]
        if self.training and not bool(self.bn_calibrated):
            self.calibrate_bn(x, T)
        return super().encode(x, T)

    def calibrate_bn(self, x: torch.Tensor, T: int, iters: int = CALIBRATION_ITERS) -> None:
        """Set every BatchNorm's running statistics to those of batch ``x`` (model in training mode):
        stem and input maps at their inputs, loop maps at the rate map's fixed point (``iters``
        iterations of a <- f(a) from a = 0, batch statistics), head at f's last layer. Marks the
        model calibrated. ``x`` as for ``encode`` (already cropped)."""
        if not self.training:
            raise RuntimeError("calibrate_bn needs the model in training mode (batch statistics)")
        with torch.no_grad(), bn_momentum(self, 1.0):
            inputs, events = super().encode(x, T)
            drive = self.snn.drive(inputs, events=events)
            a = [torch.zeros_like(s) for s in self.snn.simulate(drive, drive.T or 1).last]    # shapes only
            for _ in range(iters):
                a = self.snn.rate_map(a, drive, bn_mode="batch")
            a = self.snn.rate_map(a, drive, bn_mode="module")
            self.head(a)
        self.snn.last_drive = None
        self.bn_calibrated.fill_(True)

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
        """Logits [B, K] from the last-layer states of the streams (their rates a); with
        ``readout_source="rate_map"`` the head reads the value of f(a) instead, with a's gradient."""
        if self.readout_source == "rate_map":
            drive = self.snn.last_drive
            if drive is None:
                raise RuntimeError("readout_source='rate_map' needs the batch's drive: run the model through "
                                   "snnlib.equilibrium.equilibrium_forward (or the ide/mpis methods)")
            with torch.no_grad():
                fa = self.snn.rate_map([s.detach() for s in states], drive, bn_mode="batch")
            states = [s + (f - s.detach()) for s, f in zip(states, fa)]
        return self.head(states)

    def head(self, states: list) -> torch.Tensor:
        """z = DB(BN(Conv s2 (states[0]))) [+ states[1]] -> Conv1x1 + BN + DB -> flatten -> Linear."""
        z = self.downsamp(states[0])
        if self.n_streams == 2:
            if z.shape != states[1].shape:
                raise ValueError(f"head: stream 1 gives {tuple(z.shape)}, stream 2 {tuple(states[1].shape)}")
            z = z + states[1]
        return self.classifier(self.incre(z).flatten(1))
