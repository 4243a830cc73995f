"""NIR (Neuromorphic Intermediate Representation, ``nir`` 1.0.8) export and import.

``to_nir(model, input_shape=(C, H, W), dt=...)`` turns a feed-forward LIF/IF network of snnlib
(``conv_snn``, ``fc_snn``, the ``LIFNetwork`` of ``snnlib.online.export_lif`` or an ``OnlineVGG``
directly, a plain ``nn.Sequential``) into a ``nir.NIRGraph``; ``from_nir(graph)`` builds an
snnlib network (``NIRNetwork``) back; ``nir.write`` / ``nir.read`` store graphs in HDF5.

Discretisation (forward Euler with step ``dt`` in seconds, the convention Norse and snnTorch use
when they import NIR). NIR's LIF is continuous in time:

    tau dv/dt = (v_leak - v) + r I,   z = H(v - v_threshold) (fires when v > v_threshold),   v <- v_reset on z = 1
    Euler:  v[t] = (1 - dt/tau) v[t-1] + (r dt / tau) I[t]        (v_leak = 0)
    NIR IF: dv/dt = r I  ->  v[t] = v[t-1] + r dt I[t]

snnlib's LIF (``neurons.functional.lif_step``, hard reset), x the input current of step t:

    h = leak v + x,   s = H(h - v_th) (fires when h >= v_th),   v' = h (1 - s) + s v_reset

Export: tau = dt / (1 - leak), r = tau / dt (input gain r dt / tau = 1), v_threshold = v_th,
v_reset = v_reset, v_leak = 0; IF (leak = 1): r = 1 / dt. With ``unit_r=True`` r = 1 and the
potential is stored in units scaled by the gain g = dt / tau (IF: g = dt): v_threshold = g v_th,
v_reset = g v_reset. Both give the same spikes (the dynamics are linear between resets); Norse
ignores r, so it needs ``unit_r``. Import inverts: leak = 1 - dt/tau, g = r dt / tau,
v_th = v_threshold / g, v_reset = v_reset / g. Floating point does not invert tau = dt / (1 - leak)
exactly, so every exported neuron node also carries snnlib's leak, v_th and v_reset in its metadata;
``from_nir`` uses them when they agree with tau, r and dt to 1e-9 (relative), else the formulas.
Threshold equality fires in snnlib (>=) and not in NIR, Norse or snnTorch (>); in float arithmetic
it is rare (the interop tests count disagreements).

NIR has no subtractive ("soft") reset, snnlib's default (v' = h - (v_th - u_rest) s, OTTT, SAF, IDE).
Soft-reset neurons are refused unless ``soft_reset="as_hard"``: they are then exported as a reset
to u_rest, which drops the overshoot h - v_th and changes the spikes (``peer_agreement`` measures
by how much). BatchNorm is folded into the preceding convolution with its running statistics.
Graphs with cycles (IDE/SPIDE feedback nets, VGG-F) are not exported or imported: see ``to_nir``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from ..data.loader import time_sequence
from ..equilibrium.feedback import EquilibriumNet
from ..models.baselines import ConvSNN, FCSNN
from ..models.online_vgg import OnlineVGG, Scale
from ..neurons import LIFNode, MemoryModule, SeqToBatch, reset_net
from ..online.export import LIFNetwork, export_lif, readout

SOFT_RESET = ("error", "as_hard")
POOLS = ("avg", "sum")
PEERS = ("norse", "snntorch")
SNNTORCH_DT = 1e-4   # snnTorch's NIR import hard-codes dt = 1e-4 s (snntorch/import_nir.py)
_META_TOL = 1e-9


class _ElementScale(nn.Module):
    """Elementwise product with a fixed tensor (a non-uniform NIR Scale): [B, *shape] -> [B, *shape]."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x):
        return x * self.scale


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def _unwrap(mods) -> list:
    """Flatten Sequential / SeqToBatch containers into their leaf modules, in order."""
    out = []
    for m in mods:
        if isinstance(m, SeqToBatch):
            out += _unwrap([m.body])
        elif isinstance(m, nn.Sequential):
            out += _unwrap(list(m))
        else:
            out.append(m)
    return out


def _layers(model: nn.Module) -> list:
    """The modules of a supported network in execution order (one time step)."""
    net = getattr(model, "module", model)
    if isinstance(net, EquilibriumNet):
        raise NotImplementedError(
            f"{type(net).__name__} is an IDE/SPIDE equilibrium net and is not exported to NIR: its neurons "
            "use a soft (subtractive) reset, which NIR 1.0 cannot express; its feedback loop needs the "
            "feedback map as a recurrent edge (ConvTranspose feedback has no NIR primitive); and its "
            "normalisation and map scaling are simulation-mode specific. Export a feed-forward model instead.")
    if isinstance(net, OnlineVGG):
        net = export_lif(net)
    if isinstance(net, LIFNetwork):
        if net.resize is not None:
            raise NotImplementedError("LIFNetwork resizes its input (bilinear, antialiased): NIR has no resampling "
                                      "primitive; resize the data before the network instead")
        if net.feedback is not None:
            raise NotImplementedError("VGG-F's feedback goes through nearest upsampling into the first layer: NIR 1.0 "
                                      "has no upsampling primitive and snnlib's import runs no cycles; export the "
                                      "feed-forward VGG instead")
        mods = []
        for conv, neuron, post in zip(net.convs, net.neurons, net.posts):
            mods += [conv, neuron, post]
        return _unwrap(mods + [net.pool, nn.Flatten(1), net.head])
    if isinstance(net, FCSNN):
        return _unwrap([nn.Flatten(1), net.features, net.head])
    if isinstance(net, ConvSNN):
        return _unwrap([net.features, net.head])
    if isinstance(net, nn.Sequential):
        return _unwrap([net])
    if isinstance(net, NIRNetwork):
        if any(len(net.preds[k]) != 1 for k in net.order):
            raise NotImplementedError("only a chain-shaped NIRNetwork (one input per node) is re-exported")
        return [net.nodes[k] for k in net.order]
    raise TypeError(f"to_nir supports conv_snn, fc_snn, OnlineVGG / LIFNetwork (export_lif), NIRNetwork and nn.Sequential "
                    f"of supported layers; got {type(net).__name__}")


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d equal to conv followed by bn in eval mode (running statistics)."""
    if bn.running_mean is None:
        raise ValueError("BatchNorm2d without running statistics cannot be folded into the convolution")
    new = copy.deepcopy(conv)
    with torch.no_grad():
        gain = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new.weight = nn.Parameter(conv.weight * gain.view(-1, 1, 1, 1).to(conv.weight.dtype))
        new.bias = nn.Parameter(((b - bn.running_mean) * gain + shift).to(conv.weight.dtype))
    return new


def _fold_pairs(mods: list) -> list:
    out = []
    for m in mods:
        if isinstance(m, nn.BatchNorm2d):
            if not out or not isinstance(out[-1], nn.Conv2d):
                raise NotImplementedError("BatchNorm2d is exported only right after a Conv2d (folded into it)")
            out[-1] = _fold_bn(out[-1], m)
        else:
            out.append(m)
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _neuron_node(n: LIFNode, shape: tuple, dt: float, unit_r: bool, soft_reset: str, name: str):
    if n.reset_mode == "none":
        raise ValueError(f"{name}: reset='none' (a leaky integrator that fires without reset) has no NIR neuron; "
                         "use reset='hard'")
    if n.reset_mode == "soft":
        if soft_reset == "error":
            raise ValueError(
                f"{name} uses a soft (subtractive) reset, v <- h - (v_th - u_rest) s; NIR's LIF and IF only reset "
                "to a value (v <- v_reset). Train with a hard reset (neuron={'reset': 'hard'}) for an exact export, "
                "or pass soft_reset='as_hard' to export it as a reset to u_rest, an approximation that drops the "
                "overshoot h - v_th and changes the spikes (measure it with snnlib.interop.peer_agreement).")
        v_reset, how = n.u_rest, "soft_as_hard"
    else:
        v_reset, how = n.v_reset, "hard"
    leak, v_th = n.leak, n.v_th
    full = lambda v: np.full(shape, v, dtype=np.float64)  # noqa: E731
    meta = {"snnlib_leak": leak, "snnlib_v_th": v_th, "snnlib_v_reset": v_reset, "snnlib_reset": how}
    if leak == 1.0:
        g = dt if unit_r else 1.0
        r = 1.0 if unit_r else 1.0 / dt
        return nir.IF(r=full(r), v_threshold=full(g * v_th), v_reset=full(g * v_reset), metadata=meta)
    tau = dt / (1.0 - leak)
    g = dt / tau if unit_r else 1.0
    r = 1.0 if unit_r else tau / dt
    return nir.LIF(tau=full(tau), r=full(r), v_leak=full(0.0), v_threshold=full(g * v_th),
                   v_reset=full(g * v_reset), metadata=meta)


def to_nir(model: nn.Module, input_shape, dt: float = 1e-4, *, soft_reset: str = "error", unit_r: bool = False,
           pool: str = "avg", fold_scale: bool = False) -> nir.NIRGraph:
    """NIR graph of a feed-forward snnlib LIF/IF network (see the module doc for the equations).

    Args:
        model: ``conv_snn`` / ``fc_snn`` (BatchNorm folded), ``LIFNetwork`` from ``export_lif`` or an
            ``OnlineVGG`` (exported with ``export_lif`` first), or ``nn.Sequential`` of Conv2d, BatchNorm2d,
            Linear, Flatten, AvgPool2d, Scale and LIFNode/IFNode. IDE/SPIDE equilibrium nets and VGG-F raise
            ``NotImplementedError`` (soft reset, feedback through ops NIR lacks).
        input_shape: one time step's input without batch, e.g. (1, 28, 28); the input current of the first
            layer at every step (direct encoding).
        dt: the time step in seconds (> 0) that maps leak to tau = dt / (1 - leak).
        soft_reset: "error" (default) or "as_hard" (export soft-reset neurons as a reset to u_rest).
        unit_r: store r = 1 with the threshold scaled by dt / tau (same spikes; Norse needs it).
        pool: "avg" (AvgPool2d) or "sum" (SumPool2d, with 1/k^2 folded into the next Conv2d/Linear).
        fold_scale: fold constant Scale nodes into the next Conv2d/Linear weights instead of emitting them.
    ``pool="sum"`` and ``fold_scale`` describe the same maths with a different rounding order, for
    consumers without AvgPool2d / Scale (``peer_options``). Arrays keep the model's dtype; neuron
    parameters are float64. Returns a type-checked ``nir.NIRGraph`` (Input -> ... -> Output).
    """
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    if soft_reset not in SOFT_RESET:
        raise ValueError(f"unknown soft_reset {soft_reset!r}; choose one of {SOFT_RESET}")
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {POOLS}")
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or any(s <= 0 for s in input_shape):
        raise ValueError(f"input_shape must list positive sizes without the batch, e.g. (1, 28, 28); got {input_shape}")
    mods = _fold_pairs(_layers(model))
    params = [p for m in mods for p in m.parameters()]
    dtype = params[0].dtype if params else torch.float32
    x = torch.zeros(1, *input_shape, dtype=dtype)
    nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    order = ["input"]
    pending = 1.0      # a scalar factor waiting to be folded into the next Conv2d / Linear
    counts: dict[str, int] = {}

    def add(kind, node):
        i = counts.get(kind, 0)
        counts[kind] = i + 1
        name = f"{kind}{i}"
        nodes[name] = node
        order.append(name)

    def flush():
        nonlocal pending
        if pending != 1.0:
            add("scale", nir.Scale(scale=np.full(tuple(x.shape[1:]), pending, dtype=_np(x).dtype)))
            pending = 1.0

    with torch.no_grad():
        for i, m in enumerate(mods):
            where = f"layer {i} ({type(m).__name__})"
            if isinstance(m, nn.Conv2d):
                if m.padding_mode != "zeros":
                    raise NotImplementedError(f"{where}: padding_mode {m.padding_mode!r}; NIR pads with zeros")
                w = m.weight * pending if pending != 1.0 else m.weight
                b = m.bias if m.bias is not None else torch.zeros(m.out_channels, dtype=m.weight.dtype)
                pending = 1.0
                add("conv", nir.Conv2d(input_shape=tuple(x.shape[2:]), weight=_np(w), stride=m.stride,
                                       padding=m.padding, dilation=m.dilation, groups=m.groups, bias=_np(b)))
                x = m(x)
            elif isinstance(m, nn.Linear):
                w = m.weight * pending if pending != 1.0 else m.weight
                pending = 1.0
                add("affine" if m.bias is not None else "linear",
                    nir.Affine(weight=_np(w), bias=_np(m.bias)) if m.bias is not None else nir.Linear(weight=_np(w)))
                x = m(x)
            elif isinstance(m, LIFNode):
                flush()
                add("lif" if m.leak != 1.0 else "if",
                    _neuron_node(m, tuple(x.shape[1:]), float(dt), unit_r, soft_reset, where))
            elif isinstance(m, Scale):
                if fold_scale:
                    pending *= m.scale
                elif m.scale != 1.0:
                    add("scale", nir.Scale(scale=np.full(tuple(x.shape[1:]), m.scale, dtype=_np(x).dtype)))
            elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                if isinstance(m, nn.AdaptiveAvgPool2d):
                    out = _pair(m.output_size)
                    hw = tuple(x.shape[-2:])
                    if out == hw:
                        continue        # pooling to the same size is the identity
                    if hw[0] % out[0] or hw[1] % out[1]:
                        raise NotImplementedError(f"{where}: adaptive pooling {hw} -> {out} is not a fixed-kernel "
                                                  "pooling; NIR has only fixed kernels")
                    k = (hw[0] // out[0], hw[1] // out[1])
                    m = nn.AvgPool2d(k, k)
                if m.ceil_mode or _pair(m.padding) != (0, 0) or m.divisor_override is not None:
                    raise NotImplementedError(f"{where}: only AvgPool2d without padding, ceil_mode or divisor_override "
                                              "is exported")
                k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
                args = dict(kernel_size=np.array(k), stride=np.array(s), padding=np.array([0, 0]))
                if pool == "sum":
                    add("sumpool", nir.SumPool2d(**args))
                    pending /= k[0] * k[1]
                else:
                    add("avgpool", nir.AvgPool2d(**args))
                x = m(x)
            elif isinstance(m, nn.Flatten):
                nd = x.dim()
                start = (m.start_dim % nd) - nd        # negative: the same dims with and without the batch
                end = (m.end_dim % nd) - nd
                if start + nd == 0:
                    raise ValueError(f"{where}: flattening the batch dimension is not a per-sample operation")
                add("flatten", nir.Flatten(input_type={"input": np.array(x.shape[1:])}, start_dim=start, end_dim=end))
                x = m(x)
            elif isinstance(m, nn.MaxPool2d):
                raise NotImplementedError(f"{where}: NIR 1.0 has no max pooling; build the model with pool='avg'")
            elif isinstance(m, (nn.Identity, nn.Dropout)):
                continue
            else:
                raise TypeError(f"{where} has no NIR export; supported: Conv2d, BatchNorm2d (after a conv), Linear, "
                                "Flatten, AvgPool2d, Scale, LIFNode/IFNode")
        flush()
    nodes["output"] = nir.Output(output_type={"output": np.array(x.shape[1:])})
    order.append("output")
    edges = list(zip(order[:-1], order[1:]))
    meta = {"source": "snnlib", "dt": float(dt), "discretisation": "forward_euler",
            "input": "the input current of the first layer at every time step"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


# ----------------------------------------------------------------------------------------------
# import
# ----------------------------------------------------------------------------------------------
def _uniform(a, what: str, name: str) -> float:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0 or not np.all(a == a.flat[0]):
        raise NotImplementedError(f"node {name!r}: {what} differs between neurons; snnlib's LIFNode has one value "
                                  "per layer")
    return float(a.flat[0])


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _META_TOL * max(1.0, abs(a), abs(b))


def _import_neuron(node, name: str, dt: float, step_mode: str) -> LIFNode:
    if isinstance(node, nir.LIF):
        if not np.allclose(np.asarray(node.v_leak, dtype=np.float64), 0.0, rtol=0.0, atol=0.0):
            raise NotImplementedError(f"node {name!r}: v_leak != 0 (a constant drive); snnlib's LIF leaks to 0")
        tau, r = _uniform(node.tau, "tau", name), _uniform(node.r, "r", name)
        if not tau > 0:
            raise ValueError(f"node {name!r}: tau must be > 0, got {tau}")
        leak, g = 1.0 - dt / tau, r * dt / tau
    else:
        leak, g = 1.0, _uniform(node.r, "r", name) * dt
    if not 0.0 < leak <= 1.0:
        raise ValueError(f"node {name!r}: dt/tau = {dt / tau:.3g} >= 1 makes the forward-Euler leak 1 - dt/tau <= 0; "
                         "choose dt < tau")
    if not g > 0:
        raise ValueError(f"node {name!r}: the input gain r dt/tau must be > 0, got {g}")
    v_th = _uniform(node.v_threshold, "v_threshold", name) / g
    v_reset = _uniform(node.v_reset, "v_reset", name) / g
    meta = node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}
    if all(k in meta for k in ("snnlib_leak", "snnlib_v_th", "snnlib_v_reset")):
        exact = [float(np.asarray(meta[k])) for k in ("snnlib_leak", "snnlib_v_th", "snnlib_v_reset")]
        if all(_close(a, b) for a, b in zip(exact, (leak, v_th, v_reset))):
            leak, v_th, v_reset = exact
    return LIFNode(leak=leak, v_th=v_th, reset="hard", v_reset=v_reset, surrogate="sigmoid", step_mode=step_mode)


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True))


def _import_node(node, name: str, dt: float, step_mode: str) -> nn.Module:
    if isinstance(node, (nir.LIF, nir.IF)):
        return _import_neuron(node, name, dt, step_mode)
    if isinstance(node, nir.Conv2d):
        w = _tensor(node.weight)
        m = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                      stride=tuple(int(v) for v in node.stride),
                      padding=node.padding if isinstance(node.padding, str) else tuple(int(p) for p in node.padding),
                      dilation=tuple(int(v) for v in node.dilation), groups=int(node.groups), bias=True).to(w.dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(_tensor(node.bias) if node.bias is not None else torch.zeros(w.shape[0]))
        return m
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _tensor(node.weight)
        bias = isinstance(node, nir.Affine) and node.bias is not None
        m = nn.Linear(w.shape[1], w.shape[0], bias=bias).to(w.dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            if bias:
                m.bias.copy_(_tensor(node.bias))
        return m
    if isinstance(node, nir.Scale):
        s = np.asarray(node.scale)
        if s.size and np.all(s == s.flat[0]):
            return Scale(float(s.flat[0]))
        return _ElementScale(_tensor(s))
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        k, s = tuple(int(v) for v in node.kernel_size), tuple(int(v) for v in node.stride)
        p = tuple(int(v) for v in node.padding)
        return nn.AvgPool2d(k, s, p, divisor_override=1 if isinstance(node, nir.SumPool2d) else None)
    if isinstance(node, nir.Flatten):
        # NIR dims exclude the batch: non-negative ones move by one, negative ones are the same
        shift = lambda d: int(d) + 1 if int(d) >= 0 else int(d)  # noqa: E731
        return nn.Flatten(shift(node.start_dim), shift(node.end_dim))
    raise NotImplementedError(f"node {name!r} of type {type(node).__name__} has no snnlib import; supported: Conv2d, "
                              "Affine, Linear, Scale, AvgPool2d, SumPool2d, Flatten, LIF, IF")


class NIRNetwork(nn.Module):
    """An snnlib network built from an acyclic NIR graph: [T, B, *input] -> [T, B, *output].

    Nodes run in topological order; a node with several inputs gets their sum (NIR's edge rule).
    ``step_mode="m"``: stateless nodes run on the T*B folded batch and neurons over the whole
    sequence (like ``conv_snn``); ``"s"``: one time step at a time (like ``LIFNetwork``). Both give
    the same spikes up to the rounding of batched kernels. State is reset at every call.
    """

    def __init__(self, modules: dict, order: list, preds: dict, input_name: str, output_name: str,
                 step_mode: str = "m", dt: float | None = None):
        super().__init__()
        if step_mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
        self.nodes = nn.ModuleDict(modules)
        self.order, self.preds = list(order), {k: list(v) for k, v in preds.items()}
        self.input_name, self.output_name, self.step_mode, self.dt = input_name, output_name, step_mode, dt

    def neurons(self) -> dict:
        """The spiking nodes by name, input to output."""
        return {k: self.nodes[k] for k in self.order if isinstance(self.nodes[k], MemoryModule)}

    def _run(self, x, fold: bool):
        vals = {self.input_name: x}
        for k in self.order:
            ins = [vals[p] for p in self.preds[k]]
            h = ins[0]
            for extra in ins[1:]:
                h = h + extra
            m = self.nodes[k]
            if fold and not isinstance(m, MemoryModule):
                T, B = h.shape[:2]
                y = m(h.flatten(0, 1))
                vals[k] = y.view(T, B, *y.shape[1:])
            else:
                vals[k] = m(h)
        return vals[self.output_name]

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() < 3:
            raise ValueError(f"NIRNetwork expects [T, B, ...], got shape {tuple(x_seq.shape)}")
        reset_net(self)
        if self.step_mode == "m":
            return self._run(x_seq, True)
        return torch.stack([self._run(x, False) for x in x_seq])


def from_nir(graph, dt: float | None = None, *, step_mode: str = "m") -> NIRNetwork:
    """snnlib network of a NIR graph (or a path to a ``.nir`` HDF5 file written by ``nir.write``).

    ``dt`` (seconds) discretises the continuous graph (module doc: leak = 1 - dt/tau, v_th =
    v_threshold / (r dt / tau)); default: the graph's ``metadata["dt"]`` (set by ``to_nir``). Neurons
    become hard-reset ``LIFNode``s (sigmoid surrogate, for fine-tuning). Supported nodes: Conv2d, Affine,
    Linear, Scale, AvgPool2d, SumPool2d, Flatten, LIF, IF; one Input, one Output, no cycles.
    """
    if isinstance(graph, (str, Path)):
        graph = nir.read(str(graph))
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir expects a nir.NIRGraph or a path to a .nir file, got {type(graph).__name__}")
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if dt is None:
        if "dt" not in meta:
            raise ValueError("dt is needed to discretise a continuous-time NIR graph: pass from_nir(graph, dt=...) "
                             "(the graph's metadata has no 'dt')")
        dt = float(np.asarray(meta["dt"]))
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NotImplementedError(f"from_nir needs exactly one Input and one Output node; got inputs {inputs}, "
                                  f"outputs {outputs}")
    preds = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise ValueError(f"edge ({a!r}, {b!r}) names a node that is not in the graph")
        preds[b].append(a)
    # topological order (Kahn); a leftover node means a cycle
    indeg = {k: len(v) for k, v in preds.items()}
    succ = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        succ[a].append(b)
    ready, order = [k for k in graph.nodes if indeg[k] == 0], []
    while ready:
        k = ready.pop(0)
        order.append(k)
        for b in succ[k]:
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
    if len(order) != len(graph.nodes):
        cyc = sorted(set(graph.nodes) - set(order))
        raise NotImplementedError(f"the graph has a cycle through {cyc}: recurrent NIR graphs are not imported by "
                                  "snnlib (feed-forward graphs only)")
    names = {k: k.replace(".", "_") for k in graph.nodes}
    modules, run = {}, []
    for k in order:
        node = graph.nodes[k]
        if isinstance(node, nir.Input):
            continue
        if not preds[k]:
            raise ValueError(f"node {k!r} has no input edge")
        if isinstance(node, nir.Output):
            modules[names[k]] = nn.Identity()
        else:
            modules[names[k]] = _import_node(node, k, dt, step_mode)
        run.append(names[k])
    preds_s = {names[k]: [names[p] for p in v] for k, v in preds.items()}
    return NIRNetwork(modules, run, preds_s, names[inputs[0]], names[outputs[0]], step_mode, dt).eval()


# ----------------------------------------------------------------------------------------------
# peers
# ----------------------------------------------------------------------------------------------
def peer_options(peer: str) -> dict:
    """``to_nir`` options a peer's NIR import needs (the graph means the same; rounding may differ).

    norse 1.1.0 (``norse.torch.from_nir``): no AvgPool2d (SumPool2d is LPPool2d with p = 1), no Scale,
    and it ignores r (the input gain is dt/tau): ``pool="sum", fold_scale=True, unit_r=True``.
    snntorch 1.0.0 (``snntorch.import_nir.import_from_nir``): no Scale: ``fold_scale=True``; dt must be 1e-4.
    """
    if peer == "norse":
        return {"pool": "sum", "fold_scale": True, "unit_r": True}
    if peer == "snntorch":
        return {"fold_scale": True}
    raise ValueError(f"unknown peer {peer!r}; choose one of {PEERS}")


def run_peer(graph: nir.NIRGraph, x_seq: torch.Tensor, peer: str, dt: float | None = None) -> torch.Tensor:
    """Outputs [T, B, K] (float32) of ``graph`` imported by a peer framework, fed ``x_seq`` [T, B, ...].

    norse: ``from_nir(graph, dt=dt)``, LIFBoxCell: v += dt/tau (i + v_leak - v), z = H(v - v_th) (>),
    reset to 0, state threaded step by step. snntorch: ``import_from_nir(graph)``, Leaky with beta = 1 -
    1e-4/tau, threshold v_threshold / (r 1e-4 / tau) unless that gain is close to 1, reset to zero, fires
    when mem > threshold; hidden state reset before the sequence. Raises ``ImportError`` when absent.
    """
    if dt is None:
        dt = float(np.asarray(graph.metadata.get("dt"))) if isinstance(graph.metadata, dict) and "dt" in graph.metadata \
            else None
    if dt is None:
        raise ValueError("run_peer needs dt (the graph's metadata has none)")
    g = copy.deepcopy(graph)     # peers rewrite graphs in place
    x_seq = x_seq.float()
    outs = []
    with torch.no_grad():
        if peer == "norse":
            from norse.torch import from_nir as norse_from_nir   # optional peer
            net = norse_from_nir(g, dt=dt)
            state = None
            for x in x_seq:
                out, state = net(x, state)
                outs.append(out)
        elif peer == "snntorch":
            if abs(dt - SNNTORCH_DT) > 1e-12 * SNNTORCH_DT:
                raise ValueError(f"snnTorch's NIR import assumes dt = {SNNTORCH_DT} s (beta = 1 - 1e-4/tau); export "
                                 f"with dt={SNNTORCH_DT} to compare with it, got dt={dt}")
            from snntorch.import_nir import import_from_nir   # optional peer
            with contextlib.redirect_stdout(io.StringIO()):     # it prints progress notes
                net = import_from_nir(g)
            for m in net.modules():
                if hasattr(m, "reset_mem"):
                    m.reset_mem()
            for x in x_seq:
                out = net(x)
                outs.append(out[0] if isinstance(out, tuple) else out)
        else:
            raise ValueError(f"unknown peer {peer!r}; choose one of {PEERS}")
    return torch.stack(outs)


def peer_agreement(graph: nir.NIRGraph, references: dict, batches, T: int, peer: str, *, rule: str = "mean",
                   leak: float = 1.0, dt: float | None = None) -> dict:
    """Predictions of a peer running ``graph`` against snnlib networks, on the same batches.

    ``references``: name -> network mapping [T, B, ...] to per-step outputs [T, B, K] (run in its
    own dtype, state reset around every batch). ``batches``: iterable of (x [B, ...] static or [B, T, ...] events, y [B]). Scores are
    ``readout(outputs, rule, leak)`` ("mean" or "weighted_rate"), predictions their argmax. Returns
    samples, the peer's accuracy, and per reference ``<name>_agreement`` (fraction of identical
    predictions) and ``<name>_acc``.
    """
    n, peer_ok = 0, 0
    same = {k: 0 for k in references}
    ok = {k: 0 for k in references}
    for x, y in batches:
        xs = time_sequence(x, T)
        p_peer = readout(run_peer(graph, xs, peer, dt), rule, leak).argmax(1)
        n += len(y)
        peer_ok += int((p_peer == y).sum())
        for k, net in references.items():
            dtype = next(net.parameters()).dtype
            reset_net(net)
            with torch.no_grad():
                p = readout(net(xs.to(dtype)), rule, leak).argmax(1)
            reset_net(net)
            same[k] += int((p == p_peer).sum())
            ok[k] += int((p == y).sum())
    out = {"peer": peer, "samples": n, "peer_acc": peer_ok / max(n, 1)}
    for k in references:
        out[f"{k}_agreement"] = same[k] / max(n, 1)
        out[f"{k}_acc"] = ok[k] / max(n, 1)
    return out
