"""Building blocks of the minimum-latency (single time step) SNN: encoder, one-step LIF, the two
spiking token mixers, MLP and patch merging.

Maps are channels-last [B, H, W, C] as in the reference (a Sequencer2D fork). Everything runs
in one time step (T = 1): "recurrence" is across the windows of a block (and, in the RNN
variant, across blocks), never across time. Equations: docs/papers/minimum_latency.md §2.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..layers.projection import get_projection
from ..layers.windows import WindowGrid
from ..neurons import Rectangle, lif_step

LEAK = 0.4       # lambda of the reference's mem_update [ref-code]
V_TH = 0.5       # fixed threshold [ref-code]
ENCODINGS = ("bernoulli", "bernoulli_st", "threshold", "expected", "identity")
NEURONS = ("lif", "relu")
OVERLAP_MERGES = ("mean", "or")


def _check_choices(**chosen: str) -> None:
    """Raise a ValueError naming the first of ``encoding``, ``neuron``, ``overlap_merge`` not among its choices."""
    allowed = {"encoding": ENCODINGS, "neuron": NEURONS, "overlap_merge": OVERLAP_MERGES}
    for name, value in chosen.items():
        if value not in allowed[name]:
            raise ValueError(f"unknown {name.replace('_', ' ')} {value!r}; choose one of {allowed[name]}")


# --------------------------------------------------------------------------- encoding
class _BernoulliST(torch.autograd.Function):
    """Forward 1[x > U]; backward the derivative of its expectation clamp(x, 0, 1)."""

    @staticmethod
    def forward(ctx, x, u):
        ctx.save_for_backward(x)
        return (x > u).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ((x > 0) & (x < 1)).to(g.dtype), None


def encode(x: torch.Tensor, mode: str = "bernoulli") -> torch.Tensor:
    """Spike encoding S(x) at the input of every spiking mixer; output has x's shape and dtype.

    - 'bernoulli': 1[x > U], U ~ Uniform(0, 1) drawn fresh on every call (train and eval), no
      gradient to x: the released behaviour [ref-code].
    - 'bernoulli_st': the same spikes with a straight-through gradient d clamp(x, 0, 1)/dx
      = 1 on (0, 1) (a documented deviation).
    - 'threshold': deterministic 1[x > 0.5], no gradient. - 'expected': clamp(x, 0, 1), the
      expected value of the Bernoulli spike (real-valued). - 'identity': x (the ANN).
    Draws from the global torch RNG, so seeding it fixes the spikes.
    """
    if mode == "bernoulli":
        return (x > torch.rand_like(x)).to(x.dtype)
    if mode == "bernoulli_st":
        return _BernoulliST.apply(x, torch.rand_like(x))
    if mode == "threshold":
        return (x > 0.5).to(x.dtype)
    if mode == "expected":
        return x.clamp(0.0, 1.0)
    if mode == "identity":
        return x
    raise ValueError(f"unknown encoding {mode!r}; choose one of {ENCODINGS}")


REAL_ENCODINGS = ("expected", "identity")   # encodings whose output is real-valued, not spikes


def input_mode(encoding: str, neuron: str) -> str:
    """The encoding a mixer applies at its input: ``encoding`` itself for LIF neurons; for the ReLU
    ANN a real-valued encoding ('expected': clamp(x, 0, 1), the Bernoulli spike's expectation, or
    'identity') is kept and a spike encoding is replaced by 'identity' (an ANN takes no spikes).
    """
    if neuron == "relu" and encoding not in REAL_ENCODINGS:
        return "identity"
    return encoding


# --------------------------------------------------------------------------- neuron
_SURROGATE = Rectangle(width=1.0)   # dH/du = 1 on |u - 0.5| < 0.5, i.e. u in (0, 1) [ref-code]


def one_step_lif(current: torch.Tensor, carried, *, leak: float = LEAK, v_th: float = V_TH,
                 neuron: str = "lif") -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step without reset (``lif_step(reset="none")``): u = leak * carried + current;
    s = H(u - v_th).

    ``carried`` is a tensor broadcastable to ``current`` or the number 0. The spike has the
    rectangle surrogate (width 1, so gradient 1 on u in (0, 1)). ``neuron='relu'`` returns
    relu(u) instead (the same-architecture ANN). Returns ``(s, u)``.
    """
    if neuron not in NEURONS:
        raise ValueError(f"unknown neuron {neuron!r}; choose one of {NEURONS}")
    if isinstance(carried, (int, float)) and carried == 0:
        carried = 0.0
    surrogate = _SURROGATE if neuron == "lif" else None   # the ANN does not use the spike: no autograd node
    s, u = lif_step(current, carried, leak=leak, v_th=v_th, reset="none", surrogate=surrogate)
    return (s if neuron == "lif" else torch.relu(u)), u


class SpikeProbe(nn.Module):
    """Identity; a place for ``FiringRateMonitor`` hooks to read a spike tensor."""

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s


def _merge_outputs(grid: WindowGrid, o: torch.Tensor, overlap_merge: str) -> torch.Tensor:
    y = grid.merge(o)
    if overlap_merge == "or" and grid.overlap:
        # CIFAR-100 CNN file: any spike in the overlap counts; torch.where keeps the gradient of the
        # positions left as they were, as the released code does [ref-code]
        y = torch.where(y > 0.2, torch.ones_like(y), y)
    return y


# --------------------------------------------------------------------------- mixers
class SpikingConvMixer(nn.Module):
    """CNN variant: two convolutions shared by the windows, membranes carried window to window.

    For windows k = 1..n (a_0 = b_0 = 0):
        a_k = leak a_{k-1} + conv1(S(X_k));            s_k = H(a_k - 0.5)
        b_k = leak P(a_{k-1}, b_{k-1}) + conv2(s_k);   o_k = H(b_k - 0.5)
    then the o_k are merged (overlaps averaged) and mixed by a Linear(C -> C).
    ``recurrent=False`` zeroes the carried state in every window (a_k, b_k = the conv outputs).

    Input/output [B, H, W, C]; ``grid`` says how the map is cut.
    """

    def __init__(self, dim: int, *, projection: str = "sin", recurrent: bool = True, encoding: str = "bernoulli",
                 neuron: str = "lif", overlap_merge: str = "mean", leak: float = LEAK):
        super().__init__()
        _check_choices(encoding=encoding, neuron=neuron, overlap_merge=overlap_merge)
        self.projection_name, self.projection = projection, get_projection(projection)
        self.recurrent, self.encoding, self.neuron = bool(recurrent), encoding, neuron
        self.overlap_merge, self.leak = overlap_merge, float(leak)
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.fc = nn.Linear(dim, dim)
        self.probe_in, self.probe_hidden, self.probe_out = SpikeProbe(), SpikeProbe(), SpikeProbe()

    def _conv(self, conv: nn.Conv2d, w: torch.Tensor) -> torch.Tensor:
        """Windows [n, B, s, s, C] through ``conv`` in one batched call -> [n, B, C, s, s]."""
        n, B, s, _, C = w.shape
        y = conv(w.permute(0, 1, 4, 2, 3).reshape(n * B, C, s, s))
        return y.view(n, B, -1, s, s)

    def forward(self, x: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
        mode = input_mode(self.encoding, self.neuron)
        inp = self.probe_in(encode(grid.split(x), mode))
        i1 = self._conv(self.conv1, inp)
        a_prev, s = 0, []
        a_list = []
        for k in range(grid.n):
            sk, ak = one_step_lif(i1[k], a_prev if self.recurrent else 0, leak=self.leak, neuron=self.neuron)
            s.append(sk)
            a_list.append(ak)
            a_prev = ak
        s = self.probe_hidden(torch.stack(s).permute(0, 1, 3, 4, 2))
        i2 = self._conv(self.conv2, s)
        o, b_prev = [], 0
        for k in range(grid.n):
            if self.recurrent and k > 0:
                carried = self.projection(a_list[k - 1], b_prev)
            else:
                carried = 0
            ok, bk = one_step_lif(i2[k], carried, leak=self.leak, neuron=self.neuron)
            o.append(ok)
            b_prev = bk
        o = self.probe_out(torch.stack(o).permute(0, 1, 3, 4, 2))
        return self.fc(_merge_outputs(grid, o, self.overlap_merge))


class SpikingLSTMMixer(nn.Module):
    """RNN variant: a bidirectional LSTM synapse over each window's tokens and a membrane map
    carried across windows and blocks.

    I_k = BiLSTM(S(X_k)) over the s*s tokens of window k (raster order) -> 2C channels.
    With M the carried membrane map [B, H, W, 2C] (zero at the first block) and M_k its window:
      'released' order (4 windows, as the released code):
        u_1 = leak P(M_1, M_2) + I_1;  u_2 = leak P(u_1, M_2) + I_2;
        u_3 = leak P(M_3, u_2) + I_3;  u_4 = leak P(M_4, u_3) + I_4
      'uniform' order (any window count): u_k = leak P(M_k, u_{k-1}) + I_k, with u_0 = 0.
    o_k = H(u_k - 0.5); output Linear(2C -> C)(merge(o)); new membrane map merge(u).
    ``recurrent=False``: u_k = I_k (nothing carried).

    ``forward(x [B, H, W, C], grid, M [B, H, W, 2C] or None) -> (y [B, H, W, C], M')``.
    """

    def __init__(self, dim: int, *, projection: str = "sin", recurrent: bool = True, encoding: str = "bernoulli",
                 neuron: str = "lif", overlap_merge: str = "mean", order: str = "released", leak: float = LEAK):
        super().__init__()
        _check_choices(encoding=encoding, neuron=neuron, overlap_merge=overlap_merge)
        if order not in ("released", "uniform"):
            raise ValueError(f"unknown window order {order!r}; choose 'released' or 'uniform'")
        self.projection_name, self.projection = projection, get_projection(projection)
        self.recurrent, self.encoding, self.neuron = bool(recurrent), encoding, neuron
        self.overlap_merge, self.order, self.leak = overlap_merge, order, float(leak)
        self.dim = dim
        self.lstm = nn.LSTM(dim, dim, 1, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * dim, dim)
        self.probe_in, self.probe_out = SpikeProbe(), SpikeProbe()

    def _carried(self, k: int, Mw: torch.Tensor, u: list):
        P = self.projection
        if self.order == "released":
            if k == 0:
                return P(Mw[0], Mw[1])
            if k == 1:
                return P(u[0], Mw[1])
            return P(Mw[k], u[k - 1])
        return P(Mw[k], u[k - 1] if k else torch.zeros_like(Mw[k]))

    def forward(self, x: torch.Tensor, grid: WindowGrid, M: torch.Tensor | None = None):
        if self.order == "released" and self.recurrent and grid.n != 4:
            raise ValueError(f"the released window order is defined for 4 windows, got {grid.n}; use order='uniform'")
        B, H, W, C = x.shape
        mode = input_mode(self.encoding, self.neuron)
        inp = self.probe_in(encode(grid.split(x), mode))                   # [n, B, s, s, C]
        n, s = grid.n, grid.side
        I, _ = self.lstm(inp.reshape(n * B, s * s, C))
        I = I.reshape(n, B, s, s, 2 * self.dim)
        if M is None:
            M = x.new_zeros(B, H, W, 2 * self.dim)
        Mw = grid.split(M)
        o, u = [], []
        for k in range(n):
            carried = self._carried(k, Mw, u) if self.recurrent else 0
            ok, uk = one_step_lif(I[k], carried, leak=self.leak, neuron=self.neuron)
            o.append(ok)
            u.append(uk)
        o = self.probe_out(torch.stack(o))
        y = self.fc(_merge_outputs(grid, o, self.overlap_merge))
        return y, grid.merge(torch.stack(u))


# --------------------------------------------------------------------------- backbone parts
class MLP(nn.Module):
    """Linear(C -> r C) -> GELU -> Linear(r C -> C), real-valued, channels last."""

    def __init__(self, dim: int, ratio: float = 3.0):
        super().__init__()
        hidden = int(ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PatchMerging(nn.Module):
    """Concatenate 2x2 neighbours (4 C_in channels) -> Linear(4 C_in -> C_out, no bias). [B, H, W, C]."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim_in, dim_out, bias=False)

    def forward(self, x):
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"patch merging needs an even map size, got {tuple(x.shape[1:3])}")
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(x)


class Block(nn.Module):
    """x <- x + mixer(x); x <- x + MLP(x). The RNN mixer also threads the membrane map M."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float, grid: WindowGrid):
        super().__init__()
        self.mixer = mixer
        self.mlp = MLP(dim, mlp_ratio)
        self.grid = grid

    def forward(self, x, M=None):
        if isinstance(self.mixer, SpikingLSTMMixer):
            y, M = self.mixer(x, self.grid, M)
        else:
            y = self.mixer(x, self.grid)
        x = x + y
        return x + self.mlp(x), M

    def extra_repr(self) -> str:
        g = self.grid
        return f"windows={g.n} ({g.grid}x{g.grid}, side {g.side}), overlap={g.overlap}"


def lecun_normal_(w: torch.Tensor) -> torch.Tensor:
    """Truncated normal (+-2 sd) with variance 1/fan_in, as timm's lecun_normal_ (resampling
    the values outside +-2 sd, which is much faster on CPU than inverse-CDF sampling)."""
    fan_in = w.shape[1] * (w[0][0].numel() if w.dim() > 2 else 1)
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        w.normal_(0.0, std)
        out = w.abs() > 2 * std
        while out.any():
            w[out] = torch.empty(int(out.sum()), dtype=w.dtype, device=w.device).normal_(0.0, std)
            out = w.abs() > 2 * std
    return w


def init_reference_(model: nn.Module) -> None:
    """The reference initialisation: Linear xavier-uniform (MLP biases N(0, 1e-6), others 0),
    Conv lecun-normal with zero bias, LSTM U(+-1/sqrt(h)), head zeros."""
    for name, m in model.named_modules():
        if name.startswith("reference_unused"):
            continue   # never used: keep PyTorch's default initialisation
        if isinstance(m, nn.Linear):
            if name.startswith("head"):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
                continue
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                if ".mlp." in f".{name}.":
                    nn.init.normal_(m.bias, std=1e-6)
                else:
                    nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            lecun_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LSTM):
            bound = 1.0 / math.sqrt(m.hidden_size)
            for p in m.parameters():
                nn.init.uniform_(p, -bound, bound)
