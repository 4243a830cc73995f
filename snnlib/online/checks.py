"""Measurements behind notebook 03 (OTTT and SAF): each takes a model built from ``snnlib.online``
layers and returns plain Python data (lists of row dicts) ready for a tidy table.

* ``compare_spikes_and_grads``: spikes of every mode against the plain LIF network, and per-step /
  summed weight gradients of SAF (accumulating) against OTTT_A, at fixed weights.
* ``spike_flip_rate``: float32 against float64 spike disagreements.
* ``online_drift``: SAF-E against OTTT_O when the weights change at every step.
* ``forward_macs`` / ``train_step_macs``: multiply-accumulates per wrapped layer.
* ``memory_vs_T``: saved-tensor memory of one training step against T.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..data.loader import time_sequence
from ..methods import build_method
from ..metrics.memory import step_memory
from ..neurons import reset_net
from .export import export_lif, readout
from .modes import running
from .monitor import SpikeRateMonitor
from .synapse import TraceSynapse

#: label -> (method name, method arguments) of the variants compared in notebook 03. The reference OTTT
#: runs as released (first conv fed x[t], unwrapped); the lean one uses the input trace (paper's rule).
VARIANTS = {
    "OTTT_A (reference)": ("ottt_a", {"formulation": "reference", "first_layer": "raw"}),
    "OTTT_A (lean)": ("ottt_a", {"formulation": "lean"}),
    "OTTT_O (reference)": ("ottt_o", {"formulation": "reference", "first_layer": "raw"}),
    "OTTT_O (lean)": ("ottt_o", {"formulation": "lean"}),
    "SAF-E": ("saf_e", {}),
    "SAF-F": ("saf_f", {}),
    "BPTT": ("bptt", {"loss": "per_step"}),
}


def make_method(label_or_name: str, model: nn.Module, T: int, **overrides):
    """A method around a deep copy of ``model``: a ``VARIANTS`` label or a registry name."""
    name, kw = VARIANTS.get(label_or_name, (label_or_name, {}))
    return build_method(name, copy.deepcopy(model), T=T, **{**kw, **overrides})


def _spikes(method_or_model, fn) -> dict[str, list[torch.Tensor]]:
    net = getattr(method_or_model, "net", method_or_model)
    with SpikeRateMonitor(net, keep=True) as mon:
        out = fn()
    return dict(mon.spikes), out


def _is_bias(name: str) -> bool:
    return name.endswith("bias")


def compare_spikes_and_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int, *, seed: int = 0,
                             mse_weight: float = 0.05) -> dict:
    """Fixed weights, one batch: spikes of every mode vs the LIF network, and weight gradients.

    Returns ``{"spikes": rows(variant, layer, step, mismatches, spikes, neurons),
    "grads": rows(reference, param, step ('sum' for the total), max_abs_diff, max_abs_grad, rel_diff),
    "bias_ratio": rows(param, step, c_t, min_ratio, max_ratio)}``. Steps are 1-based.
    Gradient rows compare SAF (``saf_e`` with ``online_update=False``) with OTTT_A in the reference and
    the lean formulation, and the lean with the reference OTTT_A. Biases are compared through their
    ratio, which is c_t (SAF's c_t b) by construction.
    """
    variants = {"OTTT_A (reference)": ("ottt_a", {"formulation": "reference"}),
                "OTTT_A (lean)": ("ottt_a", {"formulation": "lean"}),
                "SAF": ("saf_e", {"online_update": False})}
    spikes, grads = {}, {}
    torch.manual_seed(seed)
    lif = copy.deepcopy(model)
    reset_net(lif)
    spikes["LIF"], _ = _spikes(lif, lambda: lif(time_sequence(x, T)))
    reset_net(lif)
    exported = export_lif(model)
    spikes["exported LIF"] = _exported_spikes(exported, time_sequence(x, T))
    for label, (name, kw) in variants.items():
        m = build_method(name, copy.deepcopy(model), T=T, mse_weight=mse_weight, **kw)
        torch.manual_seed(seed)
        spikes[label], grads[label] = _spikes(m, lambda m=m: m.per_step_grads(x, y))
    rows = []
    ref = spikes["LIF"]
    for label, sp in spikes.items():
        if label == "LIF":
            continue
        for layer, steps in ref.items():
            for t, s_ref in enumerate(steps):
                s = sp[layer][t]
                rows.append({"variant": label, "layer": layer, "step": t + 1, "mismatches": int((s != s_ref).sum()),
                             "spikes": int(s_ref.sum()), "neurons": s_ref.numel()})
    grad_rows, bias_rows = [], []
    pairs = [("SAF", "OTTT_A (reference)"), ("SAF", "OTTT_A (lean)"), ("OTTT_A (lean)", "OTTT_A (reference)")]
    leak = float(getattr(model, "leak", 0.5))
    for a, b in pairs:
        ga, gb = grads[a], grads[b]
        names = [n for n in gb[0] if not _is_bias(n)]
        for n in names:
            per = [(t + 1, ga[t][n], gb[t][n]) for t in range(T) if n in ga[t] and n in gb[t]]
            per.append(("sum", sum(p[1] for p in per), sum(p[2] for p in per)))
            for step, u, v in per:
                d, scale = float((u - v).abs().max()), float(v.abs().max())
                grad_rows.append({"pair": f"{a} vs {b}", "param": n, "step": step, "max_abs_diff": d,
                                  "max_abs_grad": scale, "rel_diff": d / scale if scale > 0 else 0.0})
        if a == "SAF" and b == "OTTT_A (reference)":
            for n in gb[0]:
                if not _is_bias(n):
                    continue
                for t in range(T):
                    u, v = ga[t][n], gb[t][n]
                    keep = v.abs() > 1e-12 * max(float(v.abs().max()), 1e-300)
                    r = (u[keep] / v[keep]) if keep.any() else torch.ones(1, dtype=u.dtype)
                    bias_rows.append({"param": n, "step": t + 1, "c_t": (1 - leak ** (t + 1)) / (1 - leak),
                                      "min_ratio": float(r.min()), "max_ratio": float(r.max())})
    return {"spikes": rows, "grads": grad_rows, "bias_ratio": bias_rows}


def _exported_spikes(net, x_seq) -> dict[str, list[torch.Tensor]]:
    out: dict[str, list] = {}
    handles = [n.register_forward_hook(lambda m, i, o, k=f"blocks.{j}.neuron": out.setdefault(k, []).append(o.detach()))
               for j, n in enumerate(net.neurons)]
    try:
        with torch.no_grad():
            net(x_seq)
    finally:
        for h in handles:
            h.remove()
    return out


def spike_flip_rate(model: nn.Module, x: torch.Tensor, T: int) -> list[dict]:
    """Spike disagreements per layer: SAF float32 vs LIF float32, and each vs LIF float64 (eval mode).

    Rows: (comparison, layer, flips, neurons_x_steps, rate)."""
    def run(dtype, mode):
        m = copy.deepcopy(model).to(dtype).eval()
        reset_net(m)
        with running(m, mode), torch.no_grad():
            sp, _ = _spikes(m, lambda: m(time_sequence(x.to(dtype), T)))
        return sp
    lif64, lif32, saf32 = run(torch.float64, "lif"), run(torch.float32, "lif"), run(torch.float32, "saf")
    rows = []
    for label, a, b in [("SAF fp32 vs LIF fp32", saf32, lif32), ("SAF fp32 vs LIF fp64", saf32, lif64),
                        ("LIF fp32 vs LIF fp64", lif32, lif64)]:
        for layer in b:
            flips = sum(int((u != v).sum()) for u, v in zip(a[layer], b[layer]))
            n = sum(v.numel() for v in b[layer])
            rows.append({"comparison": label, "layer": layer, "flips": flips, "neurons_x_steps": n,
                         "rate": flips / n})
    return rows


class _RecordingOptimizer:
    """SGD stand-in that snapshots the gradients at every ``step()`` before applying them."""

    def __init__(self, params, lr: float):
        self.inner = torch.optim.SGD(params, lr=lr, momentum=0.0)
        self.param_groups = self.inner.param_groups
        self.grads: list[list[torch.Tensor]] = []

    def zero_grad(self, set_to_none: bool = True):
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        self.grads.append([p.grad.detach().clone() if p.grad is not None else None
                           for g in self.param_groups for p in g["params"]])
        self.inner.step()


def online_drift(model: nn.Module, batches, T: int, lrs, *, seed: int = 0, mse_weight: float = 0.05) -> list[dict]:
    """SAF-E against OTTT_O with per-step SGD updates (no momentum), same start and data.

    For every learning rate: spike mismatch rate per layer over all steps of all ``batches``
    (list of (x, y)), the largest weight-gradient difference relative to OTTT_O's largest one, and
    the relative distance of the final parameters ||theta_SAF - theta_OTTT|| / ||theta_OTTT - theta_0||,
    separately for weights (and gains) and for biases (SAF's bias gradient is c_t times OTTT's, so
    biases drift apart even as lr -> 0).
    """
    rows = []

    def flat(net, bias):
        return torch.cat([p.detach().flatten() for n, p in net.named_parameters() if _is_bias(n) == bias])

    theta0 = {b: flat(model, b) for b in (False, True)}
    for lr in lrs:
        runs = {}
        for label, name in (("OTTT_O", "ottt_o"), ("SAF-E", "saf_e")):
            m = build_method(name, copy.deepcopy(model), T=T, mse_weight=mse_weight)
            opt = _RecordingOptimizer(m.net.parameters(), lr)
            torch.manual_seed(seed)
            with SpikeRateMonitor(m.net, keep=True) as mon:
                for x, y in batches:
                    m.train_step(x, y, opt)
            runs[label] = (dict(mon.spikes), opt.grads, {b: flat(m.net, b) for b in (False, True)})
        (sa, ga, wa), (sb, gb, wb) = runs["OTTT_O"], runs["SAF-E"]
        mism = {k: sum(int((u != v).sum()) for u, v in zip(sa[k], sb[k])) / sum(u.numel() for u in sa[k]) for k in sa}
        gdiff, gscale = 0.0, 0.0
        names = [n for n, _ in model.named_parameters()]
        for step_a, step_b in zip(ga, gb):
            for n, u, v in zip(names, step_a, step_b):
                if u is None or v is None or _is_bias(n):
                    continue
                gdiff = max(gdiff, float((u - v).abs().max()))
                gscale = max(gscale, float(u.abs().max()))
        div = {}
        for b, key in ((False, "weight_divergence"), (True, "bias_divergence")):
            moved = float((wa[b] - theta0[b]).norm())
            div[key] = float((wa[b] - wb[b]).norm()) / moved if moved > 0 else 0.0
        rows.append({"lr": lr, "spike_mismatch": sum(mism.values()) / len(mism),
                     **{f"mismatch:{k}": v for k, v in mism.items()},
                     "max_grad_diff": gdiff, "rel_grad_diff": gdiff / gscale if gscale else 0.0, **div})
    return rows


def _synapse_names(net: nn.Module) -> dict[str, str]:
    cls = type(net).__name__
    return {f"{cls}.{n}": n for n, m in net.named_modules() if isinstance(m, TraceSynapse)}


def _per_layer(fc: FlopCounterMode, net: nn.Module) -> dict[str, int]:
    counts = fc.get_flop_counts()
    out = {}
    for key, name in _synapse_names(net).items():
        out[name] = sum(counts.get(key, {}).values()) // 2     # FLOPs -> MACs
    return out


def forward_macs(model: nn.Module, x: torch.Tensor, T: int, mode: str, *, raw_input: bool = False) -> dict[str, int]:
    """Forward MACs per wrapped layer over T steps of one batch in ``mode`` (no backward).

    ``raw_input`` runs the input layer unwrapped, as in the authors' OTTT code."""
    m = copy.deepcopy(model)
    for s in m.modules():
        if isinstance(s, TraceSynapse) and s.input_layer:
            s.raw_input = raw_input
    reset_net(m)
    with running(m, mode), FlopCounterMode(display=False) as fc, torch.enable_grad():
        for xt in time_sequence(x, T):
            m(xt)
    reset_net(m)
    return _per_layer(fc, m)


def train_step_macs(method, x: torch.Tensor, y: torch.Tensor) -> int:
    """Total MACs (forward + backward) of one ``train_step`` (parameters are restored afterwards)."""
    net = method.net
    snapshot = copy.deepcopy(net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    with FlopCounterMode(display=False) as fc:
        method.train_step(x, y, opt)
    net.load_state_dict(snapshot)
    return fc.get_total_flops() // 2


def memory_vs_T(model: nn.Module, x: torch.Tensor, y: torch.Tensor, Ts, labels) -> list[dict]:
    """``step_memory`` of one training step for every variant label and T (rows, bytes)."""
    rows = []
    for label in labels:
        for T in Ts:
            m = make_method(label, model, T)
            torch.manual_seed(0)
            mem = step_memory(m, x, y)
            rows.append({"variant": label, "T": T, **{k: int(v) for k, v in mem.items()}})
    return rows


def lif_inference_agreement(method, dataset_batches, *, dtype=torch.float64) -> dict:
    """Predictions of a SAF method against the exported LIF network on the same batches.

    Both run in ``dtype``; the LIF readout is the method's ("mean" for SAF-E, "weighted_rate" for
    SAF-F). Returns counts of samples, disagreements, and each network's correct predictions.
    """
    net = method.net
    rule = getattr(method, "readout", "mean")
    rule = "weighted_rate" if rule == "weighted_rate" else "mean"
    orig_dtype = next(net.parameters()).dtype
    was_training = net.training
    net.to(dtype).eval()
    lif = export_lif(net)
    n = disagree = c_saf = c_lif = 0
    max_diff = 0.0
    try:
        with torch.no_grad():
            for x, y in dataset_batches:
                x = x.to(dtype)
                p_saf = method.predict(x)
                p_lif = readout(lif(time_sequence(x, method.T)), rule, method.leak)
                a, b = p_saf.argmax(1), p_lif.argmax(1)
                n += len(y)
                disagree += int((a != b).sum())
                c_saf += int((a == y).sum())
                c_lif += int((b == y).sum())
                max_diff = max(max_diff, float((p_saf - p_lif).abs().max()))
    finally:
        net.to(orig_dtype).train(was_training)
    return {"samples": n, "disagreements": disagree, "saf_acc": c_saf / max(n, 1), "lif_acc": c_lif / max(n, 1),
            "max_score_diff": max_diff, "dtype": str(dtype).replace("torch.", "")}



def time_per_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int, labels, *, rounds: int = 5,
                   reps: int = 3, warmup: int = 2, lr: float = 0.01) -> dict:
    """Seconds per ``train_step`` of every variant label on one batch, alternated in rounds.

    Each variant trains its own copy of ``model`` with SGD (momentum 0.9) at ``lr``; see
    ``timing.time_alternating`` for the protocol. Returns its result plus ``"labels"``."""
    from .timing import time_alternating
    fns = {}
    for label in labels:
        m = make_method(label, model, T)
        opt = torch.optim.SGD(m.net.parameters(), lr=lr, momentum=0.9)
        fns[label] = (lambda m=m, opt=opt: m.train_step(x, y, opt))
    out = time_alternating(fns, rounds=rounds, reps=reps, warmup=warmup)
    out["labels"] = list(labels)
    return out


def load_trained(record: dict):
    """(model, method) of a finished run record, from its checkpoint (``weights_only=True``), CPU, eval mode."""
    from ..experiments.io import load_torch
    from ..experiments.runs import run_dir_for
    from ..train import build
    cfg = record["config"]
    path = run_dir_for(cfg) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint for run {cfg.get('name')!r} at {path}; train it with run(cfg) first")
    model, method = build(cfg, "cpu")
    model.load_state_dict(load_torch(path, map_location="cpu")["model"])
    model.eval()
    return model, method
