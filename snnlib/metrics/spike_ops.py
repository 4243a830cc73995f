"""Operation counts of SPIDE training (per sample), for the energy estimate.

- forward: synaptic operations (accumulates) of the spiking maps over T steps = spikes of each
  presynaptic neuron x its fan-out (exact for IF: the spike count is T a; for LIF the mean
  firing rate times the mean fan-out). The input map on static images is a dense
  multiply-accumulate pass computed once; on event frames every nonzero input is an accumulate.
- backward: nonzero ternary spikes x their gated fan-out over T_b steps (exact count from the
  solve). The readout and dL/da_N are full precision (dense MACs).
- update: one multiply-accumulate per synapse and sample for the outer products
  (m * beta) a^T (for a convolution: the MACs of the forward convolution).
- references: the dense MAC count of the same network evaluated once (an ANN forward), an ANN
  training step (about 3x: forward, input gradients, weight gradients), and IDE's implicit
  backward with float vector-Jacobian products ((nstep + 2) passes through the loop maps).

Fan-outs come from the explicit transposed operators (``TransposedOp.reach``), so pooling and
transposed convolutions count exactly, without padding or cropped outputs. Energy uses
``E_AC_PJ`` / ``E_MAC_PJ`` (45 nm, Horowitz 2014): an assumption, not a hardware measurement.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..equilibrium.spiking_backward import layer_masks, ternary_solve
from ..equilibrium.transpose import map_transpose, stream_transposes
from .ops import E_AC_PJ, E_MAC_PJ


def _fanout(op, out_shape, like: torch.Tensor) -> torch.Tensor:
    """Fan-out of every presynaptic neuron through ``op`` (a ``TransposedOp``), shaped like ``like``."""
    return op.reach(torch.ones(out_shape, dtype=like.dtype, device=like.device))


@torch.no_grad()
def spide_op_counts(net, x: torch.Tensor, y: torch.Tensor, *, T: int, T_b: int, scale: float,
                    v_th_b: float = 0.5, u_rest_b: float | None = None, ide_nstep: int | None = None) -> dict:
    """Per-sample operation counts of one SPIDE training step on the batch ``x``, ``y``.

    Returns a dict: forward_sops, input_macs (static) or input_sops (events), readout_macs,
    backward_sops, update_macs, dense_forward_macs, ann_train_macs, loop_macs (dense MACs of the
    loop maps once), ide_backward_macs (when ``ide_nstep`` is given), forward_firing,
    backward_firing, T, T_b.
    """
    snn = net.snn
    if len(snn.streams) != 1:
        raise ValueError("spide_op_counts supports one-stream feedback SNNs")
    stream = snn.streams[0]
    B = x.shape[0]
    inputs, events = net.encode(x, T)
    drive = snn.drive(inputs, events=events)
    sim = snn.simulate(drive, T)
    rates = sim.rates[0]
    N = len(rates)
    shapes = [tuple(r.shape) for r in rates]
    tr = stream_transposes(stream, shapes)

    fwd_sops, loop_macs = 0.0, 0.0
    for l in range(N):
        fan = _fanout(tr[l], shapes[(l + 1) % N], rates[l])
        loop_macs += float(fan.sum())
        if snn.leak == 1.0:
            spikes = rates[l] * T                       # exact spike counts of IF neurons
            fwd_sops += float((spikes * fan).sum())
        else:
            fwd_sops += sim.firing[0][l] * T * float(fan.sum())
    h0 = inputs[0]
    in_shape = tuple(h0.shape[1:]) if events else tuple(h0.shape)
    t_in = map_transpose(stream.input_map, (B, *in_shape[1:]), shapes[0])
    fan_in = _fanout(t_in, shapes[0], rates[0])
    input_macs = float(fan_in.sum())
    input_sops = None
    if events:
        input_sops = float(sum(((frame != 0).to(fan_in.dtype) * fan_in).sum() for frame in h0))

    with torch.enable_grad():
        a = sim.last[0].detach().requires_grad_()
        logits = net.readout([a])
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y), a)
    readout_macs = float(sum(p.numel() for n, p in net.named_parameters() if "classifier" in n and p.dim() > 1)) * B
    masks = layer_masks(rates)
    sol = ternary_solve(g, tr, masks, T_b=int(T_b), V=snn.map_divisor, scale=float(scale), v_th_b=v_th_b,
                        u_rest_b=u_rest_b, leak=snn.leak, count_sops=True)
    n = [m.numel() for m in masks]
    dense_fwd = loop_macs + input_macs + readout_macs
    out = {
        "T": int(T), "T_b": int(T_b),
        "forward_sops": fwd_sops / B,
        "input_macs": input_macs / B if not events else 0.0,
        "input_sops": (input_sops / B) if events else 0.0,
        "readout_macs": readout_macs / B,
        "backward_sops": float(sol.sops) / B,
        "update_macs": (loop_macs + input_macs + readout_macs) / B,
        "loop_macs": loop_macs / B,
        "dense_forward_macs": dense_fwd / B,
        "ann_train_macs": 3 * dense_fwd / B,
        "forward_firing": sum(f * k for f, k in zip(sim.firing[0], n)) / sum(n),
        "backward_firing": sum(f * k for f, k in zip(sol.firing, n)) / sum(n),
    }
    if ide_nstep is not None:
        out["ide_nstep"] = int(ide_nstep)
        out["ide_backward_macs"] = (int(ide_nstep) + 2) * loop_macs / B + (input_macs + 2 * readout_macs) / B
    return out


def energy_rows(counts: dict) -> list[dict]:
    """Tidy rows (phase, ops, kind, energy_uJ) from ``spide_op_counts``: SPIDE's phases, then the
    dense references. Accumulates at ``E_AC_PJ``, multiply-accumulates at ``E_MAC_PJ``."""
    def row(phase, ops, kind):
        e = ops * (E_AC_PJ if kind == "AC" else E_MAC_PJ) * 1e-6
        return {"phase": phase, "ops": float(ops), "kind": kind, "energy_uJ": e}
    rows = [row(f"SPIDE forward spikes (T={counts['T']})", counts["forward_sops"], "AC"),
            row("SPIDE input layer", counts["input_macs"], "MAC") if counts["input_macs"]
            else row("SPIDE input events", counts["input_sops"], "AC"),
            row("SPIDE readout (+ its gradient)", 2 * counts["readout_macs"], "MAC"),
            row(f"SPIDE backward spikes (T_b={counts['T_b']})", counts["backward_sops"], "AC"),
            row("SPIDE weight update (outer products)", counts["update_macs"], "MAC")]
    spide_total = sum(r["energy_uJ"] for r in rows)
    rows.append({"phase": "SPIDE training step, total", "ops": float("nan"), "kind": "mixed", "energy_uJ": spide_total})
    rows.append(row("ANN of the same structure: forward", counts["dense_forward_macs"], "MAC"))
    rows.append(row("ANN of the same structure: training step (~3x)", counts["ann_train_macs"], "MAC"))
    if "ide_backward_macs" in counts:
        rows.append(row(f"IDE implicit backward, float ({counts['ide_nstep']} Broyden steps)",
                        counts["ide_backward_macs"] + counts["update_macs"], "MAC"))
    return rows
