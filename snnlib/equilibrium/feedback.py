"""Feedback spiking networks and the rate map whose fixed point they approximate (IDE, MPIS, SPIDE).

A ``FeedbackSNN`` holds one or more ``Stream``s. A stream has N layers of LIF neurons:

    layer 1  <- input current I_t = F(x_t)  +  W_fb s^N_{t-1}      (feedback: one-step delay)
    layer l  <- S_l(s^{l-1}_t)                                      (l = 2..N, same step)

Neurons follow ``snnlib.neurons.lif_step`` with a plain Heaviside (h = leak v + c;
s = H(h - V_th); v <- h - s (V_th - u_rest)); ``leak = 1`` is IF. With two streams (MPIS)
the layer-1 currents are fused before firing: c_1' = c_1 + Up(c_2), c_2' = D(c_1) + c_2
(``fusion_mode="current"``, the default), or the charged potentials h are fused the same way
(``"membrane_snn_only"``, the released MPIS code, which leaves the fusion out of the rate map).

``simulate(drive, T)`` runs T steps under no_grad and returns the lambda-weighted rates
a_l = sum_t leak^(T-1-t) s^l_t / c_T of every layer, accumulated online (memory flat in T).
``rate_map(a_N, drive)`` is the differentiable map f whose fixed point a_N = f(a_N) the rates
approximate: f(a) = sigma(S_N sigma(... sigma((W_fb a + I)/V) ...)/V) with sigma = clamp(., 0, 1)
and V = V_th - u_rest (with fusion inside when ``fusion_mode="current"``).

Synaptic maps (``SynapseMap``) are op -> [BatchNorm] -> [SharedDropout]. BatchNorm modes:
in the rate map, BN runs in the module's own mode (training: batch statistics and one
running-statistics update per batch). In the simulation, loop maps use the running
statistics (IDE's choice, ``sim_bn="running"``) or per-step batch statistics without
updating (``"batch"``); the input map's BN uses the batch statistics of F(x_bar) (static:
the very same current as the rate map; events: those of the lambda-weighted frame mean).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ..layers.dropout import SharedDropout
from ..neurons import lif_step, rate_normaliser
from ..neurons.surrogate import get_surrogate
from .implicit import clamp01, equilibrium_forward
from .transpose import dropout_mask, map_transpose, output_padding, transpose_of

FUSION_MODES = ("current", "membrane_snn_only", "none")
MAP_SCALES = ("V", "V2")
SIM_BN = ("running", "batch")
RATES = ("weighted", "step0")
BN_MODES = ("module", "running", "batch")


# ----------------------------------------------------------------------------------------------
# synaptic maps
# ----------------------------------------------------------------------------------------------
def ide_init_(op: nn.Module) -> nn.Module:
    """IDE's initialisation: weights U(-1, 1), each output filter scaled to unit L2 norm; zero bias."""
    with torch.no_grad():
        w = op.weight
        w.uniform_(-1.0, 1.0)
        if isinstance(op, nn.ConvTranspose2d):      # stored (in, out, k, k): filters are w[:, j]
            norms = w.pow(2).sum(dim=(0, 2, 3), keepdim=True).sqrt()
        else:
            norms = w.reshape(w.shape[0], -1).norm(dim=1).view(-1, *([1] * (w.dim() - 1)))
        w.div_(norms.clamp_min(1e-12))
        if getattr(op, "bias", None) is not None:
            op.bias.zero_()
    return op


def apply_bn(bn: nn.Module, y: torch.Tensor, mode: str = "module") -> torch.Tensor:
    """BatchNorm ``bn`` on ``y`` [B, C, ...]: 'module' = bn(y) (its own train/eval mode),
    'running' = running statistics, 'batch' = batch statistics without updating the running ones
    (running statistics in eval mode)."""
    if mode == "module":
        return bn(y)
    if mode == "running" or (mode == "batch" and not bn.training):
        return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    if mode == "batch":
        return F.batch_norm(y, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    raise ValueError(f"unknown BN mode {mode!r}; choose one of {BN_MODES}")


def bn_affine(bn: nn.Module, z: torch.Tensor):
    """Per-channel (scale, shift) of ``bn`` as an affine map: from the batch statistics of ``z``
    in training mode (biased variance, no running update), from the running ones otherwise.
    Returned shaped [1, C, 1, ...] to broadcast over ``z``."""
    C = z.shape[1]
    if bn.training:
        dims = [0] + list(range(2, z.dim()))
        mean = z.mean(dims)
        var = z.var(dims, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    w = bn.weight if bn.weight is not None else torch.ones_like(mean)
    b = bn.bias if bn.bias is not None else torch.zeros_like(mean)
    scale = w / torch.sqrt(var + bn.eps)
    shift = b - mean * scale
    shape = (1, C) + (1,) * (z.dim() - 2)
    return scale.view(shape), shift.view(shape)


LINEAR_MODULES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.AvgPool2d, nn.Flatten, nn.Unflatten, nn.Identity,
                  SharedDropout)


def _explicitly_transposable(m: nn.Module, *, feedback: bool) -> bool:
    """A loop map with an explicit transpose (``transpose.map_transpose``): every part of its op
    linear, and a BatchNorm only on a forward map (the rate map's VJP linearises it at its input,
    which it recomputes from the layer rates; a feedback's input is the state, not a layer rate)."""
    if getattr(m, "has_bn", False) and (feedback or not isinstance(m.bn, nn.modules.batchnorm._BatchNorm)):
        return False
    op = m.op if isinstance(m, SynapseMap) else m
    parts = list(op) if isinstance(op, nn.Sequential) else [op]
    return all(isinstance(p, LINEAR_MODULES) or hasattr(p, "spide_transpose") for p in parts)


class SynapseMap(nn.Sequential):
    """One synaptic map: op (Linear, Conv2d, ConvTranspose2d or a Sequential ending in one)
    -> optional BatchNorm -> optional ``SharedDropout`` (one mask per batch, shared by every time
    step and by the rate map). Input [B, ...]; output the target layer's current [B, ...].
    ``output_size`` (H, W) fixes a transposed convolution's output size (odd sizes, e.g. 28x28).
    """

    def __init__(self, op: nn.Module, bn: nn.Module | None = None, dropout: float = 0.0):
        mods = [op]
        if bn is not None:
            mods.append(bn)
        if dropout:
            mods.append(SharedDropout(dropout))
        super().__init__(*mods)
        self.has_bn = bn is not None
        self.has_dropout = bool(dropout)

    @property
    def op(self) -> nn.Module:
        return self[0]

    @property
    def bn(self) -> nn.Module | None:
        return self[1] if self.has_bn else None

    @property
    def drop(self) -> SharedDropout | None:
        return self[-1] if self.has_dropout else None

    def linear(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        op = self.op
        last = op[-1] if isinstance(op, nn.Sequential) else op
        if output_size is not None and isinstance(last, nn.ConvTranspose2d):
            if isinstance(op, nn.Sequential):
                for m in op[:-1]:
                    x = m(x)
            pad = output_padding(last, x.shape[-2:], tuple(output_size))
            return F.conv_transpose2d(x, last.weight, last.bias, last.stride, last.padding, pad, last.groups,
                                      last.dilation)
        return op(x)

    def forward(self, x: torch.Tensor, bn_mode: str = "module", output_size=None) -> torch.Tensor:
        y = self.linear(x, output_size)
        if self.has_bn:
            y = apply_bn(self.bn, y, bn_mode)
        if self.has_dropout:
            y = self.drop(y)
        return y

    def affine(self, z: torch.Tensor, scale, shift) -> torch.Tensor:
        """BN as a fixed affine map (``bn_affine``), then dropout; ``z`` is ``linear(x)``."""
        y = z * scale + shift if scale is not None else z
        return self.drop(y) if self.has_dropout else y


class Stream(nn.Module):
    """One feedback loop: ``input_map`` (x -> layer 1), ``forward_maps`` (layer l -> l+1, same
    step) and ``feedback`` (layer N -> layer 1, one-step delay). N = 1 + len(forward_maps)."""

    def __init__(self, input_map: SynapseMap, forward_maps, feedback: SynapseMap):
        super().__init__()
        self.input_map = input_map
        self.forward_maps = nn.ModuleList(forward_maps)
        self.feedback = feedback

    @property
    def n_layers(self) -> int:
        return 1 + len(self.forward_maps)

    def layer_maps(self) -> list:
        """maps[l] takes layer l to layer (l + 1) % N (0-based; maps[N-1] is the feedback)."""
        return list(self.forward_maps) + [self.feedback]


class StreamFusion(nn.Module):
    """MPIS fusion of two streams' layer-1 quantities: y1 = c1 + Up(c2) (nearest, to c1's size),
    y2 = D(c1) + c2 with D a stride-2 3x3 convolution (with bias). [B, C, H, W] each."""

    def __init__(self, channels: int):
        super().__init__()
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, c1: torch.Tensor, c2: torch.Tensor):
        up = F.interpolate(c2, size=c1.shape[-2:], mode="nearest")
        d = self.down(c1)
        if d.shape != c2.shape:
            raise ValueError(f"fusion: D maps stream 1 {tuple(c1.shape)} to {tuple(d.shape)}, "
                             f"but stream 2 is {tuple(c2.shape)}")
        return c1 + up, d + c2

    def transpose(self, shape1, shape2):
        """The fusion's transpose (g1, g2) -> (g1 + D^T g2, Up^T g1 + g2) for inputs shaped
        ``shape1``, ``shape2`` ([B, C, H, W]); Up^T sums each coarse pixel's nearest-neighbour copies.
        Reads D's weight once, here."""
        down_t = transpose_of(self.down, shape1, shape2)
        size1, size2 = list(shape1[-2:]), list(shape2)

        def fn(g1: torch.Tensor, g2: torch.Tensor):
            up_t = torch.ops.aten.upsample_nearest2d_backward(g1, size1, size2)
            return down_t(g2).add_(g1), up_t.add_(g2)
        return fn


# ----------------------------------------------------------------------------------------------
# input drive and simulation results
# ----------------------------------------------------------------------------------------------
@dataclass
class Drive:
    """Input currents of every stream for one batch.

    ``static[k]``: the layer-1 current of stream k used by the rate map, with its autograd
    graph (static inputs: F(x); events: F(x_bar), x_bar the lambda-weighted frame mean).
    ``frames[k]``: None for static inputs, else a list of the T frames [B, ...] of stream k;
    the simulation computes their currents one at a time. ``affine[k]``: BN as (scale, shift)
    for the frames. ``T``: number of frames (events) or None.
    """

    static: list
    frames: list
    affine: list
    T: int | None = None

    @property
    def events(self) -> bool:
        return self.T is not None


@dataclass
class Simulation:
    """Result of ``FeedbackSNN.simulate``.

    ``rates[k][l]``: lambda-weighted rate of layer l of stream k [B, ...] (``rate="step0"``:
    s_0 / c_T). ``firing[k][l]``: spikes per neuron per step (float). ``T``: steps.
    ``state_bytes``: bytes of the simulation state held at once (potentials, accumulators,
    last spikes), independent of T.
    """

    rates: list
    firing: list
    T: int
    state_bytes: int = 0
    names: list = field(default_factory=list)

    @property
    def last(self) -> list:
        """Last-layer rate of every stream (the equilibrium state a_N)."""
        return [r[-1] for r in self.rates]

    def firing_rates(self) -> dict:
        return {n: f for names, fs in zip(self.names, self.firing) for n, f in zip(names, fs)}


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` in channels-last memory order when it is an image batch [B, C, H, W] (same values;
    mkldnn's small convolutions and their transposes run 1.5-3x faster on it on CPU), else ``t``."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def weighted_frame_mean(frames: torch.Tensor, leak: float) -> torch.Tensor:
    """x_bar = sum_t leak^(T-1-t) x_t / c_T of frames [T, B, ...]."""
    T = frames.shape[0]
    w = leak ** torch.arange(T - 1, -1, -1, dtype=frames.dtype, device=frames.device)
    return torch.tensordot(w, frames, dims=([0], [0])) / rate_normaliser(T, leak)


# ----------------------------------------------------------------------------------------------
# the feedback SNN
# ----------------------------------------------------------------------------------------------
class FeedbackSNN(nn.Module):
    """Spiking feedback network of one or more ``Stream``s (see the module docstring).

    Args:
        streams: list of ``Stream`` (1: IDE; 2: MPIS, then ``fusion`` is a ``StreamFusion``).
        leak: lambda in (0, 1] (1 = IF). v_th: threshold. u_rest: soft-reset potential
            (SPIDE's modified reset: -v_th). V = v_th - u_rest scales the rate map.
        fusion_mode: 'current' (fused currents, in the SNN and in f), 'membrane_snn_only'
            (released MPIS: fused potentials, SNN only) or 'none'; default 'current' when a
            ``fusion`` module is given, else 'none'.
        map_scale: 'V' (f divides by V) or 'V2' (released MPIS: by V twice).
        sim_bn: BatchNorm of the loop maps during the simulation: 'running' or 'batch'.
    """

    def __init__(self, streams, *, fusion: nn.Module | None = None, fusion_mode: str | None = None,
                 leak: float = 1.0, v_th: float = 2.0, u_rest: float = 0.0, map_scale: str = "V",
                 sim_bn: str = "running"):
        super().__init__()
        streams = list(streams)
        if not streams:
            raise ValueError("a FeedbackSNN needs at least one stream")
        if fusion_mode is None:
            fusion_mode = "current" if fusion is not None else "none"
        if fusion_mode not in FUSION_MODES:
            raise ValueError(f"fusion_mode must be one of {FUSION_MODES}, got {fusion_mode!r}")
        if fusion_mode != "none" and (len(streams) != 2 or fusion is None):
            raise ValueError(f"fusion_mode={fusion_mode!r} needs exactly two streams and a fusion module "
                             f"(got {len(streams)} streams, fusion={type(fusion).__name__})")
        if map_scale not in MAP_SCALES:
            raise ValueError(f"map_scale must be one of {MAP_SCALES}, got {map_scale!r}")
        if sim_bn not in SIM_BN:
            raise ValueError(f"sim_bn must be one of {SIM_BN}, got {sim_bn!r}")
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        if not v_th - u_rest > 0:
            raise ValueError(f"V = v_th - u_rest must be > 0, got v_th={v_th}, u_rest={u_rest}")
        self.streams = nn.ModuleList(streams)
        self.fusion = fusion if fusion_mode != "none" else None
        self.fusion_mode = fusion_mode
        self.leak, self.v_th, self.u_rest = float(leak), float(v_th), float(u_rest)
        self.map_scale, self.sim_bn = map_scale, sim_bn

    # --- constants -----------------------------------------------------------------------------
    @property
    def V(self) -> float:
        """V = v_th - u_rest: the spike's effect on the potential, the rate map's scale."""
        return self.v_th - self.u_rest

    @property
    def map_divisor(self) -> float:
        return self.V if self.map_scale == "V" else self.V * self.V

    def layer_names(self) -> list:
        K = len(self.streams)
        return [[(f"s{k + 1}." if K > 1 else "") + f"layer{l + 1}" for l in range(st.n_layers)]
                for k, st in enumerate(self.streams)]

    # --- inputs --------------------------------------------------------------------------------
    def drive(self, inputs: list, *, events: bool = False) -> Drive:
        """Input currents of a batch. ``inputs[k]``: stream k's input, static [B, ...] or, with
        ``events=True``, frames [T, B, ...]. Builds the rate map's currents with autograd (when
        enabled) and updates the input BN's running statistics once."""
        if len(inputs) != len(self.streams):
            raise ValueError(f"{len(self.streams)} streams but {len(inputs)} inputs")
        static, frames, affine = [], [], []
        T = None
        for st, x in zip(self.streams, inputs):
            if not events:
                static.append(st.input_map(x))
                frames.append(None)
                affine.append(None)
                continue
            if x.dim() < 3:
                raise ValueError(f"event inputs must be frames [T, B, ...], got shape {tuple(x.shape)}")
            if T is not None and x.shape[0] != T:
                raise ValueError(f"streams have different frame counts ({T} and {x.shape[0]})")
            T = x.shape[0]
            zbar = st.input_map.linear(weighted_frame_mean(x, self.leak))
            if st.input_map.has_bn:
                static.append(st.input_map.affine(apply_bn(st.input_map.bn, zbar, "module"), None, None))
                # the statistics the rate map just used, without updating them again
                affine.append(bn_affine(st.input_map.bn, zbar))
            else:
                static.append(st.input_map.affine(zbar, None, None))
                affine.append((None, None))
            frames.append(x)
        return Drive(static=static, frames=frames, affine=affine, T=T)

    def _frame_current(self, drive: Drive, k: int, t: int, grad: bool) -> torch.Tensor:
        if drive.frames[k] is None:
            I = drive.static[k]
            return I if grad else I.detach()
        st = self.streams[k]
        scale, shift = drive.affine[k]
        if not grad and scale is not None:
            scale, shift = scale.detach(), shift.detach()
        return st.input_map.affine(st.input_map.linear(drive.frames[k][t]), scale, shift)

    # --- the spiking forward -----------------------------------------------------------------
    def simulate(self, drive: Drive, T: int, *, rate: str = "weighted", surrogate=None) -> Simulation:
        """Simulate ``T`` steps. Without ``surrogate`` call it under ``torch.no_grad()`` (the
        implicit methods do); with a surrogate (name, dict or ``Surrogate``) the spikes get a
        surrogate gradient and the whole unrolled graph is kept (BPTT; memory grows with T).
        Reparametrised weights are computed once per call (``parametrize.cached``)."""
        with parametrize.cached():
            return self._simulate(drive, T, rate, surrogate)

    def _simulate(self, drive: Drive, T: int, rate: str, surrogate) -> Simulation:
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive integer number of steps, got {T!r}")
        if drive.events and drive.T != T:
            raise ValueError(f"the input has {drive.T} frames but T = {T}")
        if rate not in RATES:
            raise ValueError(f"rate must be one of {RATES}, got {rate!r}")
        sur = get_surrogate(surrogate) if surrogate is not None else None
        grad = sur is not None
        if grad and not torch.is_grad_enabled():
            raise RuntimeError("a surrogate-gradient (BPTT) simulation needs autograd enabled")
        loop_bn = "module" if grad else self.sim_bn
        if not grad:
            with torch.no_grad():
                return self._simulate_no_grad(drive, T, rate, loop_bn)
        K = len(self.streams)
        kw = dict(leak=self.leak, v_th=self.v_th, reset="soft", u_rest=self.u_rest, surrogate=sur)
        v = [[0.0] * st.n_layers for st in self.streams]
        acc = [[None] * st.n_layers for st in self.streams]
        count = [[0.0] * st.n_layers for st in self.streams]
        last = [None] * K
        state = 0
        for t in range(T):
            c = []
            for k, st in enumerate(self.streams):
                I = self._frame_current(drive, k, t, grad)
                if t > 0:
                    I = I + st.feedback(last[k], bn_mode=loop_bn,
                                        output_size=I.shape[-2:] if I.dim() == 4 else None)
                c.append(I)
            if self.fusion_mode == "current":
                c = list(self.fusion(c[0], c[1]))
            elif self.fusion_mode == "membrane_snn_only":
                h = [self.leak * v[k][0] + c[k] for k in range(K)]
                h = list(self.fusion(h[0], h[1]))
                c, v0 = h, [0.0] * K        # fire on the fused potentials: h = 0 * leak + h
                for k in range(K):
                    v[k][0] = v0[k]
            for k, st in enumerate(self.streams):
                maps = [None] + list(st.forward_maps)
                s = None
                for l in range(st.n_layers):
                    x = c[k] if l == 0 else maps[l](s, bn_mode=loop_bn)
                    s, v[k][l] = lif_step(x, v[k][l], **kw)
                    if rate == "weighted":
                        acc[k][l] = s.clone() if acc[k][l] is None else self.leak * acc[k][l] + s
                    elif t == 0:
                        acc[k][l] = s.clone()
                    count[k][l] = count[k][l] + s.detach().sum()
                last[k] = s
            if t == 0:
                state = sum(2 * a.numel() * a.element_size() for row in acc for a in row)
                state += sum(s.numel() * s.element_size() for s in last)
        cT = rate_normaliser(T, self.leak)
        rates = [[a / cT for a in row] for row in acc]
        firing = [[float(n) / (T * a.numel()) for n, a in zip(cr, ar)] for cr, ar in zip(count, acc)]
        return Simulation(rates=rates, firing=firing, T=T, state_bytes=int(state), names=self.layer_names())

    def _simulate_no_grad(self, drive: Drive, T: int, rate: str, loop_bn: str) -> Simulation:
        """``_simulate`` without a surrogate: the same steps and values (Heaviside spikes, soft
        reset), with potentials and accumulators updated in place and image tensors in
        channels-last order (``channels_last``); the rates are returned in the usual order."""
        K = len(self.streams)
        leak, v_th, V = self.leak, self.v_th, self.V
        v = [[0.0] * st.n_layers for st in self.streams]
        acc = [[None] * st.n_layers for st in self.streams]
        count = [[0.0] * st.n_layers for st in self.streams]
        last = [None] * K
        state = 0
        static = [channels_last(I.detach()) if f is None else None for I, f in zip(drive.static, drive.frames)]

        def fire(x, v):
            """lif_step(x, v) with a Heaviside and soft reset; v's storage becomes v_next."""
            h = x + leak * v if not isinstance(v, torch.Tensor) else (v.mul_(leak) if leak != 1.0 else v).add_(x)
            s = torch.ge(h, v_th, out=torch.empty_like(h))      # = H(h - v_th): h - v_th is 0 only at h = v_th
            return s, h.sub_(s, alpha=V)            # h - s V (s V exact)

        for t in range(T):
            c = []
            for k, st in enumerate(self.streams):
                I = static[k] if static[k] is not None else channels_last(self._frame_current(drive, k, t, False))
                if t > 0:
                    I = st.feedback(last[k], bn_mode=loop_bn, output_size=I.shape[-2:] if I.dim() == 4 else None) + I
                c.append(I)
            if self.fusion_mode == "current":
                c = list(self.fusion(c[0], c[1]))
            elif self.fusion_mode == "membrane_snn_only":
                h = [leak * v[k][0] + c[k] for k in range(K)]
                c = list(self.fusion(h[0], h[1]))       # fire on the fused potentials: h = 0 * leak + h
                for k in range(K):
                    v[k][0] = 0.0
            for k, st in enumerate(self.streams):
                maps = [None] + list(st.forward_maps)
                s = None
                for l in range(st.n_layers):
                    x = c[k] if l == 0 else maps[l](s, bn_mode=loop_bn)
                    s, v[k][l] = fire(x, v[k][l])
                    if acc[k][l] is None:
                        acc[k][l] = s.clone()
                    elif rate == "weighted":
                        (acc[k][l].mul_(leak) if leak != 1.0 else acc[k][l]).add_(s)
                    count[k][l] = count[k][l] + s.sum()
                last[k] = s
            if t == 0:
                state = sum(2 * a.numel() * a.element_size() for row in acc for a in row)
                state += sum(s.numel() * s.element_size() for s in last)
        cT = rate_normaliser(T, self.leak)
        rates = [[(a / cT).contiguous() for a in row] for row in acc]
        firing = [[float(n) / (T * a.numel()) for n, a in zip(cr, ar)] for cr, ar in zip(count, acc)]
        return Simulation(rates=rates, firing=firing, T=T, state_bytes=int(state), names=self.layer_names())

    # --- the rate map ------------------------------------------------------------------------
    def rate_map(self, a_last: list, drive: Drive, *, all_layers: bool = False, bn_mode: str = "module"):
        """f(a_N) for every stream (list of [B, ...]); ``all_layers=True`` returns every layer's
        rate per stream (lists of lists). Differentiable in ``a_last``, the parameters and the
        drive's currents."""
        if len(a_last) != len(self.streams):
            raise ValueError(f"{len(self.streams)} streams but {len(a_last)} states")
        d = self.map_divisor
        c = []
        for k, st in enumerate(self.streams):
            I = drive.static[k]
            c.append(I + st.feedback(a_last[k], bn_mode=bn_mode, output_size=I.shape[-2:] if I.dim() == 4 else None))
        if self.fusion_mode == "current":
            c = list(self.fusion(c[0], c[1]))
        out = []
        for k, st in enumerate(self.streams):
            a = clamp01(c[k] / d)
            layers = [a]
            for m in st.forward_maps:
                a = clamp01(m(a, bn_mode=bn_mode) / d)
                layers.append(a)
            out.append(layers if all_layers else a)
        return out

    def rate_map_vjp(self, layers: list):
        """v -> J^T v for the Jacobian J = df/da_N of the rate map (``bn_mode="module"``) at the
        point where ``rate_map(..., all_layers=True)`` returned ``layers`` (per stream, every layer's
        rate, detached), with v and J^T v packed like ``pack`` ([B, n]); computed with explicit
        transposes (``transpose.map_transpose``) and the clamps' masks m = 1[0 < a < 1],
        without autograd. None when f has no such form here (a map that is not linear, BatchNorm
        in a feedback map, or a fusion other than ``StreamFusion``): then differentiate f with autograd.

        Per stream, layers 1..N: J^T v = W_fb^T(g_1 * S_2^T(g_2 * ... S_N^T(g_N * v))) with
        g_l = m_l / V (V the map divisor) and the maps' shared dropout masks (a forward map's mask
        folded into g_l of the layer it feeds, the feedback's inside W_fb^T); with
        ``fusion_mode="current"`` the fusion's transpose acts between g_1 and W_fb^T. A forward
        map's BatchNorm is linearised at its input, recomputed once from the layer rates (batch
        statistics in training mode, the running ones in evaluation mode). Everything runs in
        channels-last memory order (``channels_last``). The transposes read the weights at the
        first call (within one training step)."""
        if not all(_explicitly_transposable(m, feedback=m is st.feedback) for st in self.streams
                   for m in st.layer_maps()):
            return None
        fuse = self.fusion_mode == "current"
        if fuse and not isinstance(self.fusion, StreamFusion):
            return None
        d = self.map_divisor
        like = [rates[-1] for rates in layers]
        plans, fusion_t = [], []

        def build():
            with torch.no_grad(), parametrize.cached():
                for st, rates in zip(self.streams, layers):
                    rates = [channels_last(r) for r in rates]
                    gates = [((r > 0) & (r < 1)).to(r.dtype).div_(d) for r in rates]
                    maps, N = st.layer_maps(), len(rates)
                    tr = []
                    for l, m in enumerate(maps):
                        into = (l + 1) % N
                        bn_input = m.linear(rates[l]) if getattr(m, "has_bn", False) else None
                        forward = l < N - 1         # its dropout mask folds into the next layer's gate
                        tr.append(map_transpose(m, rates[l].shape, rates[into].shape, bn_input, dropout=not forward))
                        drop = getattr(m, "drop", None)
                        mask = dropout_mask(drop, rates[into].shape) if forward and drop is not None else None
                        if mask is not None:
                            gates[into] = channels_last(gates[into] * mask)
                    plans.append((tr, gates))
                if fuse:
                    fusion_t.append(self.fusion.transpose(layers[0][0].shape, layers[1][0].shape))

        def vjp(v: torch.Tensor) -> torch.Tensor:
            if not plans:
                build()
            currents = []                                   # dL/d(layer-1 current) per stream
            for (tr, gates), delta in zip(plans, self.unpack(v, like)):
                delta = channels_last(delta)
                for l in range(len(gates) - 1, 0, -1):      # layer l back to layer l - 1
                    delta = tr[l - 1](gates[l] * delta)
                currents.append(gates[0] * delta)
            if fuse:
                currents = fusion_t[0](*currents)
            return self.pack([tr[-1](g) for (tr, _), g in zip(plans, currents)])   # through the feedback
        return vjp

    # --- packing of the state ----------------------------------------------------------------
    @staticmethod
    def pack(tensors: list) -> torch.Tensor:
        """Concatenate per-stream states [B, ...] into one [B, n] vector (one stream: a view)."""
        if len(tensors) == 1:
            return tensors[0].reshape(tensors[0].shape[0], -1)
        return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)

    @staticmethod
    def unpack(vec: torch.Tensor, like: list) -> list:
        """Split [B, n] back into tensors shaped like ``like``."""
        out, i = [], 0
        for t in like:
            n = t[0].numel()
            out.append(vec[:, i:i + n].reshape(t.shape))
            i += n
        if i != vec.shape[1]:
            raise ValueError(f"state vector has {vec.shape[1]} entries, the streams need {i}")
        return out


# ----------------------------------------------------------------------------------------------
# whole models
# ----------------------------------------------------------------------------------------------
class EquilibriumNet(nn.Module):
    """Base of equilibrium models: optional ANN ``stem`` -> ``snn`` (a ``FeedbackSNN``) -> readout.

    Subclasses set ``self.snn`` and ``self.stem`` (or None) and implement ``readout(states)``
    (list of last-layer rates per stream -> logits [B, K]); ``stream_inputs(h)`` gives one input
    per stream (default: ``[h]``). Inputs: static [B, C, H, W] (or [B, D]) or events
    [B, T, C, H, W]. Train and evaluate through ``snnlib.methods`` (``ide``, ``mpis``);
    ``forward(x, T)`` returns evaluation logits.
    """

    def __init__(self):
        super().__init__()
        self.stem = None

    def encode(self, x: torch.Tensor, T: int):
        """(inputs per stream, events?) for a batch; events are made time-first [T, B, ...]."""
        events = x.dim() == 5
        if events:
            if x.shape[1] != T:
                raise ValueError(f"event batch has {x.shape[1]} frames but T = {T}")
            if self.stem is not None:
                raise ValueError(f"{type(self).__name__} has an ANN stem, which needs static inputs; "
                                 "use a stem-free variant for event frames")
            h = x.transpose(0, 1)
        else:
            h = self.stem(x) if self.stem is not None else x
        return self.stream_inputs(h, events), events

    def stream_inputs(self, h: torch.Tensor, events: bool) -> list:
        return [h]

    def readout(self, states: list) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """Evaluation logits [B, K] from a T-step simulation (no gradient)."""
        with torch.no_grad():
            return equilibrium_forward(self, x, T).logits
