"""OTTT's VGG with scaled weight standardisation (VGG(sWS)), its feedback variant VGG-F, and small
conv variants of the same class for Fashion-MNIST.

Layout (``cfg`` lists conv widths and 'M' for 2x2 average pooling; OTTT's VGG is cfg "A"):

    [sWS-conv3x3 -> LIF -> x2.74 (-> AvgPool2)] per entry -> global average pool -> Linear

Every conv and the Linear head are ``TraceSynapse`` layers and every neuron an ``OnlineLIF``, so
one model runs as a plain LIF network (BPTT, inference), as OTTT (reference or lean) or as SAF
(see ``snnlib.online.modes``). Only average pooling is offered: SAF propagates accumulations,
which commute with linear maps but not with max-pooling.

``forward(x)``: x [B, C, H, W] is one time step (returns the step's output [B, K]); x
[T, B, C, H, W] runs T steps (returns [T, B, K]). In ``saf`` mode the output is the accumulated
readout O_hat[t] = W a_hat[t] + c_t b. Call ``snnlib.neurons.reset_net`` between batches.

VGG-F adds a zero-initialised 3x3 conv (last width -> first width) from the previous step's last
features (detached, nearest-upsampled back to the input size) to the first conv's output, t > 1.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..layers.weight_standardization import ScaledWSConv2d
from ..neurons import MemoryModule
from ..online.modes import ModeModule
from ..online.neuron import OnlineLIF
from ..online.synapse import TraceSynapse
from . import register_model

CFGS = {
    "A": [64, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],   # OTTT's VGG-11 layout
    "small": [32, "M", 64, "M"],                                    # Fashion-MNIST (paper notes)
    "mini": [16, "M", 32, "M"],                                     # Fashion-MNIST at cpu scale
    "tiny": [8, "M", 16, "M"],                                      # tests and smoke runs
}
SPIKE_SCALE = 2.74


def resolve_cfg(cfg) -> list:
    if isinstance(cfg, str):
        if cfg not in CFGS:
            raise ValueError(f"unknown VGG cfg {cfg!r}; choose one of {sorted(CFGS)} or give a list")
        return list(CFGS[cfg])
    cfg = list(cfg)
    if not cfg or not isinstance(cfg[0], int):
        raise ValueError(f"a VGG cfg must start with a conv width (int), got {cfg!r}")
    for v in cfg:
        if not (v == "M" or (isinstance(v, int) and v > 0)):
            raise ValueError(f"VGG cfg entries are positive ints or 'M', got {v!r}")
    return cfg


class Scale(nn.Module):
    """Multiply by a constant (OTTT scales spikes by 2.74 after every LIF)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x):
        return x if self.scale == 1.0 else x * self.scale

    def extra_repr(self):
        return f"{self.scale}"


class Block(nn.Module):
    """synapse -> neuron -> post (scale, optional average pooling)."""

    def __init__(self, synapse: TraceSynapse, neuron: OnlineLIF, post: nn.Module):
        super().__init__()
        self.synapse, self.neuron, self.post = synapse, neuron, post

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """neuron -> post on the synaptic input ``u`` [B, ...]. Returns the output and, in
        ``ottt_reference`` mode, the post-processed presynaptic trace for the next layer (else None)."""
        out = self.post(self.neuron(u))
        if self.neuron.mode != "ottt_reference":
            return out, None
        with torch.no_grad():
            trace = self.post(self.neuron.trace)
        return out, trace


class FeedbackState(MemoryModule):
    """The previous step's last features for VGG-F (never called; reset by ``reset_net``)."""

    def __init__(self):
        super().__init__("s")
        self.register_memory("features", None)
        self.register_memory("trace", None)


class OnlineVGG(ModeModule):
    """VGG(sWS) / VGG-F / small conv nets for OTTT, SAF and BPTT (see module doc).

    Args:
        cfg: preset name ("A", "small", "mini", "tiny") or list of widths and 'M'.
        in_channels, num_classes, input_size: filled from the dataset info.
        feedback: VGG-F's feedback conv.
        leak, v_th, surrogate: LIF parameters (OTTT: 0.5, 1.0, sigmoid alpha 4).
        dropout: neuron dropout probability (mask fixed over T).
        ws: scaled weight standardisation on the convs (VGG(sWS)); False gives plain convs.
        spike_scale: factor after every LIF (2.74).
        fc_hw: the classifier sees the last features average-pooled to fc_hw x fc_hw (OTTT's option;
            1 = global average pooling, the reference setting; the small nets use more).
        resize: resample every input frame to resize x resize (bilinear, antialiased) before the first
            conv; OTTT feeds CIFAR10-DVS at 48x48. A linear map, so SAF's equivalence is kept.
        channels_last: store the conv weights channels-last, so activations stay NHWC on CPU (faster
            convolutions and pooling, as in ``conv_snn``; same values up to rounding).
    """

    def __init__(self, cfg="A", in_channels: int = 3, num_classes: int = 10, input_size=(32, 32),
                 feedback: bool = False, leak: float = 0.5, v_th: float = 1.0, surrogate="sigmoid",
                 dropout: float = 0.0, ws: bool = True, spike_scale: float = SPIKE_SCALE, resize: int | None = None,
                 fc_hw: int = 1, channels_last: bool = True):
        super().__init__()
        if not isinstance(fc_hw, int) or fc_hw <= 0:
            raise ValueError(f"fc_hw must be a positive int, got {fc_hw!r}")
        cfg = resolve_cfg(cfg)
        if resize is not None and (not isinstance(resize, int) or resize <= 0):
            raise ValueError(f"resize must be a positive int (pixels) or None, got {resize!r}")
        self.resize = resize
        if resize is not None:
            input_size = (resize, resize)
        self.leak, self.feedback_enabled = float(leak), bool(feedback)
        blocks, c, pools = [], in_channels, 0
        for i, v in enumerate(cfg):
            if v == "M":
                continue
            conv = (ScaledWSConv2d if ws else nn.Conv2d)(c, v, 3, padding=1)
            pool = i + 1 < len(cfg) and cfg[i + 1] == "M"
            post = nn.Sequential(Scale(spike_scale), *([nn.AvgPool2d(2)] if pool else []))
            neuron = OnlineLIF(leak=leak, v_th=v_th, surrogate=surrogate, dropout=dropout)
            blocks.append(Block(TraceSynapse(conv, leak=leak, input_layer=not blocks), neuron, post))
            c, pools = v, pools + int(pool)
        self.blocks = nn.ModuleList(blocks)
        self.fc_hw = fc_hw
        self.pool = nn.AdaptiveAvgPool2d(fc_hw)
        self.head = TraceSynapse(nn.Linear(c * fc_hw * fc_hw, num_classes), leak=leak)
        self.input_size = tuple(input_size)
        if feedback:
            if input_size[0] % 2**pools or input_size[1] % 2**pools:
                raise ValueError(f"VGG-F needs an input size divisible by {2**pools}, got {tuple(input_size)}")
            self.upsample = nn.Upsample(scale_factor=2**pools, mode="nearest")
            self.feedback = TraceSynapse(nn.Conv2d(c, cfg[0], 3, padding=1), leak=leak)
            self.feedback_state = FeedbackState()
        else:
            self.feedback = None
        self._init_weights()
        if channels_last:
            self.to(memory_format=torch.channels_last)     # 4-d parameters only: the convs

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        if self.feedback is not None:
            nn.init.zeros_(self.feedback.op.weight)
            nn.init.zeros_(self.feedback.op.bias)

    def neurons(self) -> dict[str, OnlineLIF]:
        """The spiking layers by name, input to output."""
        return {f"blocks.{i}.neuron": b.neuron for i, b in enumerate(self.blocks)}

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One time step: x [B, C, H, W] -> output [B, K]."""
        h = x
        if self.resize is not None and tuple(x.shape[-2:]) != (self.resize, self.resize):
            h = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", antialias=True,
                              align_corners=False)
        trace = None   # the presynaptic trace travelling beside h (ottt_reference mode only)
        fb = self.feedback_state if self.feedback is not None else None
        for i, blk in enumerate(self.blocks):
            h = blk.synapse(h, trace)
            if i == 0 and self.feedback is not None and fb.features is not None:
                fb_trace = None if fb.trace is None else self.upsample(fb.trace)
                h = h + self.feedback(self.upsample(fb.features), fb_trace)
            h, trace = blk(h)
        if self.feedback is not None:
            fb.features, fb.trace = h.detach(), trace
        if tuple(h.shape[-2:]) != (self.fc_hw, self.fc_hw):   # pooling to the same size is the identity
            h = self.pool(h)
            trace = None if trace is None else self.pool(trace)
        return self.head(h.flatten(1), None if trace is None else trace.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            return torch.stack([self.step(xt) for xt in x])
        if x.dim() != 4:
            raise ValueError(f"OnlineVGG expects one step [B, C, H, W] or a sequence [T, B, C, H, W], "
                             f"got shape {tuple(x.shape)}")
        return self.step(x)


@register_model("online_vgg")
def online_vgg(cfg="A", in_channels: int = 3, num_classes: int = 10, input_size=(32, 32), leak: float = 0.5,
               v_th: float = 1.0, surrogate="sigmoid", dropout: float = 0.0, ws: bool = True,
               spike_scale: float = SPIKE_SCALE, resize: int | None = None, fc_hw: int = 1,
               channels_last: bool = True) -> OnlineVGG:
    """OTTT's VGG(sWS) (cfg "A"): 64,128,AP,256,256,AP,512,512,AP,512,512, GAP, Linear."""
    return OnlineVGG(cfg, in_channels, num_classes, input_size, False, leak, v_th, surrogate, dropout, ws,
                     spike_scale, resize, fc_hw, channels_last)


@register_model("online_vggf")
def online_vggf(cfg="A", in_channels: int = 3, num_classes: int = 10, input_size=(32, 32), leak: float = 0.5,
                v_th: float = 1.0, surrogate="sigmoid", dropout: float = 0.0, ws: bool = True,
                spike_scale: float = SPIKE_SCALE, resize: int | None = None, fc_hw: int = 1,
                channels_last: bool = True) -> OnlineVGG:
    """OTTT's VGG-F: VGG(sWS) plus the feedback conv from the last features to the first layer."""
    return OnlineVGG(cfg, in_channels, num_classes, input_size, True, leak, v_th, surrogate, dropout, ws,
                     spike_scale, resize, fc_hw, channels_last)


@register_model("online_conv")
def online_conv(cfg="small", in_channels: int = 1, num_classes: int = 10, input_size=(28, 28),
                feedback: bool = False, leak: float = 0.5, v_th: float = 1.0, surrogate="sigmoid",
                dropout: float = 0.0, ws: bool = True, spike_scale: float = SPIKE_SCALE, fc_hw: int = 1,
                channels_last: bool = True) -> OnlineVGG:
    """Small variant for Fashion-MNIST: sWS-conv 32, AP, 64, AP, pool to fc_hw x fc_hw, Linear (cfg "small")."""
    return OnlineVGG(cfg, in_channels, num_classes, input_size, feedback, leak, v_th, surrogate, dropout, ws,
                     spike_scale, None, fc_hw, channels_last)
