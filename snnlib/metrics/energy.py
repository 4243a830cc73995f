"""Energy tables from counted operations, extending ``OpCounter`` by composition.

``EnergyCounter`` runs ``OpCounter`` (Conv/Linear: dense MACs, exact SOPs on spike inputs) and
adds LSTMs: the input-to-gate product W_ih x (SOPs when x is a spike tensor) and the
hidden-to-gate product W_hh h (always real-valued: MACs). Energy per sample, 45 nm constants:
E_SNN = 0.9 pJ x SOPs (spike-fed layers) + 4.6 pJ x MACs (real-valued inputs);
E_ANN = 4.6 pJ x dense MACs of the same layers. Not counted (state them beside any table):
neuron updates, projections, activations, biases, normalisation, memory traffic.

``ptflops_convention`` reproduces what ptflops (the reference's counter) reports: dense MACs
plus conv bias adds per output, one bias add per Linear call, one op per GELU output, and its
LSTM rule (gate matmuls + 18 h elementwise ops per token and direction).
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from .hooks import ModuleHooks, modules_of
from .ops import E_AC_PJ, E_MAC_PJ, OpCounter, is_spike_tensor


class EnergyCounter(ModuleHooks):
    """Context manager: per-layer MACs/SOPs of every Conv, Linear and LSTM call inside it.

    Args:
        model: the network. part_fn: layer name -> part label (for shares); default: the name.
    ``table(batch_size)``: one row per layer and per-sample counts, energy in pJ.
    ``summary(batch_size)``: totals, E_SNN, E_ANN and their ratio.
    """

    def __init__(self, model: nn.Module, part_fn=None):
        super().__init__(modules_of(model, nn.LSTM))
        self.model = model
        self.part_fn = part_fn or (lambda n: n)
        self.ops = OpCounter(model)
        self.lstm = defaultdict(lambda: {"calls": 0, "macs": 0, "sops": 0, "spike_input": True,
                                         "input_elems": 0, "input_nonzero": 0})

    def record(self, name, module, inputs, output):
        x = inputs[0].detach()
        if not module.batch_first:
            x = x.transpose(0, 1)
        N, L, Cin = x.shape
        H, dirs = module.hidden_size, 2 if module.bidirectional else 1
        if module.num_layers != 1:
            raise NotImplementedError("EnergyCounter counts single-layer LSTMs only")
        ih, hh = self.lstm[f"{name}.ih"], self.lstm[f"{name}.hh"]
        spike = is_spike_tensor(x)
        nz = int((x != 0).sum().item())
        ih["calls"] += 1
        ih["macs"] += N * L * 4 * H * Cin * dirs
        ih["spike_input"] = ih["spike_input"] and spike
        ih["input_elems"] += x.numel()
        ih["input_nonzero"] += nz
        if spike:
            ih["sops"] += nz * 4 * H * dirs
        hh["calls"] += 1
        hh["macs"] += N * L * 4 * H * H * dirs
        hh["spike_input"] = False

    def __enter__(self):
        self.ops.__enter__()
        try:
            return super().__enter__()
        except BaseException:
            self.ops.__exit__()
            raise

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self.ops.__exit__(*exc)

    def table(self, batch_size: int):
        """Per-sample counts per layer: macs (dense), sops, input_rate, part, snn_pj, ann_pj."""
        import pandas as pd
        t = self.ops.table(batch_size)
        rows = []
        for name, st in self.lstm.items():
            rate = st["input_nonzero"] / st["input_elems"] if st["input_elems"] else None
            rows.append({"layer": name, "type": "LSTM", "calls": st["calls"], "spike_input": st["spike_input"],
                         "input_rate": rate, "macs": st["macs"] / batch_size,
                         "sops": st["sops"] / batch_size if st["spike_input"] else 0.0})
        if rows:
            t = pd.concat([t, pd.DataFrame(rows)], ignore_index=True)
        if t.empty:
            return t
        t["part"] = [self.part_fn(n) for n in t["layer"]]
        t["snn_pj"] = [E_AC_PJ * s if sp else E_MAC_PJ * m for s, m, sp in zip(t["sops"], t["macs"], t["spike_input"])]
        t["ann_pj"] = E_MAC_PJ * t["macs"]
        return t

    def summary(self, batch_size: int) -> dict:
        """Totals per sample: macs, real_macs, sops, snn_pj, ann_pj, ann_over_snn."""
        t = self.table(batch_size)
        sp = t["spike_input"].astype(bool)
        snn, ann = float(t["snn_pj"].sum()), float(t["ann_pj"].sum())
        return {"macs": float(t["macs"].sum()), "real_macs": float(t.loc[~sp, "macs"].sum()),
                "sops": float(t.loc[sp, "sops"].sum()), "snn_pj": snn, "ann_pj": ann,
                "real_pj": float(t.loc[~sp, "snn_pj"].sum()), "ann_over_snn": ann / snn if snn else None,
                "bound_ann_over_snn": ann / float(t.loc[~sp, "snn_pj"].sum()) if (~sp).any() else None}


def shares(table, by: str = "part"):
    """Energy per part (SNN and ANN pJ) and its share of the total; one row per part."""
    g = table.groupby(by)[["macs", "sops", "snn_pj", "ann_pj"]].sum()
    g["real_valued"] = table.groupby(by)["spike_input"].apply(lambda s: not bool(s.all()))
    g["snn_share"] = g["snn_pj"] / g["snn_pj"].sum()
    g["ann_share"] = g["ann_pj"] / g["ann_pj"].sum()
    return g.reset_index().sort_values("snn_pj", ascending=False, ignore_index=True)


def ptflops_convention(model: nn.Module, x: torch.Tensor) -> dict:
    """Operation count in ptflops' convention for one forward of ``x`` (use batch 1).

    Returns {'total', 'dense_macs', 'extra'}: dense MACs (weights x inputs) plus ptflops' extra
    terms (biases, GELU, LSTM elementwise). Only modules that run are counted.
    """
    counts = {"dense": 0, "extra": 0}

    def conv_hook(m, inp, out):
        k = 1
        for s in m.kernel_size:
            k *= s
        active = out.numel() // out.shape[1]
        counts["dense"] += active * k * (m.in_channels // m.groups) * m.out_channels
        if m.bias is not None:
            counts["extra"] += active * m.out_channels

    def linear_hook(m, inp, out):
        counts["dense"] += inp[0].numel() * m.out_features
        if m.bias is not None:
            counts["extra"] += m.out_features

    def gelu_hook(m, inp, out):
        counts["extra"] += out.numel()

    def lstm_hook(m, inp, out):
        x0 = inp[0] if m.batch_first else inp[0].transpose(0, 1)
        N, L = x0.shape[:2]
        dirs = 2 if m.bidirectional else 1
        H = m.hidden_size
        counts["dense"] += N * L * dirs * (4 * H * m.input_size + 4 * H * H)
        counts["extra"] += N * L * dirs * (4 * H + 6 * H + (8 * H if m.bias else 0))

    hooks = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.GELU):
            hooks.append(m.register_forward_hook(gelu_hook))
        elif isinstance(m, nn.LSTM):
            hooks.append(m.register_forward_hook(lstm_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return {"total": counts["dense"] + counts["extra"], "dense_macs": counts["dense"], "extra": counts["extra"]}
