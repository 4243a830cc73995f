"""Operation counts and energy, collected by forward hooks.

For every Conv/ConvTranspose/Linear call: dense MACs (fan-in x output elements) and, when
the input is a spike tensor (values in {0, c}), synaptic operations SOPs = exact count of
(nonzero input x its fan-out). Energy uses the 45 nm constants of Horowitz (ISSCC 2014):
0.9 pJ per accumulate (spike-fed layers) and 4.6 pJ per multiply-accumulate (others).
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.nn import functional as F

from .hooks import ModuleHooks, modules_of

E_AC_PJ = 0.9
E_MAC_PJ = 4.6
COUNTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def is_spike_tensor(x: torch.Tensor) -> bool:
    """True when every value is 0 or one common positive value (binary or scaled spikes)."""
    if x.is_floating_point() is False:
        return False
    nz = x[x != 0]
    if nz.numel() == 0:
        return True
    return bool((nz == nz.flatten()[0]).all() and nz.flatten()[0] > 0)


def layer_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Dense multiply-accumulates of one call (all samples of the batch)."""
    if isinstance(module, nn.Linear):
        return y.numel() * module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        k = 1
        for s in module.kernel_size:
            k *= s
        return y.numel() * (module.in_channels // module.groups) * k
    if isinstance(module, nn.ConvTranspose2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return x.numel() * (module.out_channels // module.groups) * k
    raise TypeError(f"no MAC rule for {type(module).__name__}")


def layer_sops(module: nn.Module, x: torch.Tensor) -> int:
    """Exact synaptic operations of one call: each nonzero input times the outputs it reaches."""
    mask = (x != 0).to(torch.float32)
    if isinstance(module, nn.Linear):
        return int(mask.sum().item()) * module.out_features
    g = module.groups
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
        ones = torch.ones(g, module.in_channels // g, *module.kernel_size, device=x.device)
        reached = conv(mask, ones, stride=module.stride, padding=module.padding, dilation=module.dilation, groups=g)
        return int(round(reached.sum().item())) * (module.out_channels // g)
    if isinstance(module, nn.ConvTranspose2d):   # k*k outputs per out channel (incl. those cropped by padding)
        k = module.kernel_size[0] * module.kernel_size[1]
        return int(mask.sum().item()) * k * (module.out_channels // g)
    raise TypeError(f"no SOP rule for {type(module).__name__}")


class OpCounter(ModuleHooks):
    """Context manager collecting per-layer MACs, SOPs and input firing rates.

    ``per_sample=True`` divides counts by the batch size (inputs are [B, ...] per call;
    a [T*B, ...] folded call counts T steps). Results: ``table()`` (one row per layer) and
    ``energy()`` (pJ per sample: spike-fed layers at E_AC x SOPs, others at E_MAC x MACs).
    """

    def __init__(self, model: nn.Module, batch_size: int | None = None):
        super().__init__(modules_of(model, COUNTED))
        self.model = model
        self.batch_size = batch_size
        self.stats = defaultdict(lambda: {"calls": 0, "macs": 0, "sops": 0, "spike_input": True,
                                          "input_elems": 0, "input_nonzero": 0, "type": ""})

    def record(self, name, module, inputs, output):
        x = inputs[0]
        st = self.stats[name]
        st["type"] = type(module).__name__
        st["calls"] += 1
        st["macs"] += layer_macs(module, x, output)
        spike = is_spike_tensor(x.detach())
        st["spike_input"] = st["spike_input"] and spike
        st["input_elems"] += x.numel()
        st["input_nonzero"] += int((x != 0).sum().item())
        if spike:
            st["sops"] += layer_sops(module, x.detach())

    def table(self, batch_size: int | None = None):
        import pandas as pd
        bs = batch_size or self.batch_size or 1
        rows = []
        for name, st in self.stats.items():
            rate = st["input_nonzero"] / max(st["input_elems"], 1)
            rows.append({"layer": name, "type": st["type"], "calls": st["calls"], "spike_input": st["spike_input"],
                         "input_rate": rate, "macs": st["macs"] / bs, "sops": st["sops"] / bs if st["spike_input"] else 0.0})
        return pd.DataFrame(rows)

    def energy(self, batch_size: int | None = None) -> dict:
        """Energy per sample in pJ, and the dense-MAC (ANN-like) energy of the same calls."""
        t = self.table(batch_size)
        if t.empty:
            return {"snn_pj": 0.0, "dense_pj": 0.0, "sops": 0.0, "macs": 0.0, "real_macs": 0.0}
        spike = t["spike_input"]
        snn = E_AC_PJ * t.loc[spike, "sops"].sum() + E_MAC_PJ * t.loc[~spike, "macs"].sum()
        return {"snn_pj": float(snn), "dense_pj": float(E_MAC_PJ * t["macs"].sum()),
                "sops": float(t.loc[spike, "sops"].sum()), "macs": float(t["macs"].sum()),
                "real_macs": float(t.loc[~spike, "macs"].sum())}
