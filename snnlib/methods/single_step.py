"""Single-time-step training (the minimum-latency SNN): one forward pass per sample, plain backprop.

The network (``min_latency``) does its intra-step recurrence over windows itself, so the method
is ordinary supervised training at T = 1. ``T > 1`` averages the logits of T independent passes
(fresh stochastic encodings each): the same backbone run for T steps, as a rate-coded baseline.

Also here: ``load_trained`` (a finished run's model from its checkpoint) and ``evaluate_seeds``
(test accuracy under several evaluation seeds, since the encoding is stochastic).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..metrics.accuracy import correct
from ..metrics.firing import FiringRateMonitor
from ..neurons import reset_net
from . import register_method
from .base import Method


@register_method("single_step")
class SingleStep(Method):
    """Cross-entropy (optionally label-smoothed) on the logits of one pass; gradient-norm clipping.

    Args:
        T: passes averaged per sample (1 = the paper's setting).
        label_smoothing: in [0, 1) (the reference uses 0.1).
        grad_clip: max global gradient norm, or None (the reference uses 20).
    """

    name = "single_step"

    def __init__(self, model, *, T: int = 1, label_smoothing: float = 0.0, grad_clip: float | None = None):
        super().__init__(model, T=T)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be a positive norm or None, got {grad_clip}")
        self.label_smoothing, self.grad_clip = float(label_smoothing), grad_clip

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"single_step expects static images [B, C, H, W], got shape {tuple(x.shape)}")
        out = self.model(x)
        for _ in range(self.T - 1):
            out = out + self.model(x)
        return out / self.T

    def train_step(self, x, y, optimizer):
        optimizer.zero_grad(set_to_none=True)
        out = self.logits(x)
        loss = F.cross_entropy(out, y, label_smoothing=self.label_smoothing)
        loss.backward()
        stats = {}
        if self.grad_clip is not None:
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
        optimizer.step()
        reset_net(self.net)
        return {"loss": loss.item(), "correct": correct(out.detach(), y), **stats}

    def monitor(self):
        """Firing rates of the model's spike probes (encoded inputs, hidden and output spikes)."""
        probes = self.net.probes() if hasattr(self.net, "probes") else None
        return FiringRateMonitor(self.net, modules=probes or None)


def load_trained(record: dict, device="cpu"):
    """(model, method, cfg) of a finished run: built from ``record['config']`` and loaded from its
    checkpoint (``weights_only=True``), in eval mode."""
    from ..experiments.io import load_torch
    from ..experiments.runs import run_dir_for
    from ..train import build
    cfg = record["config"]
    path = run_dir_for(cfg) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint for run {cfg.get('name')!r} at {path}; train it with run(cfg) first")
    model, method = build(cfg, device)
    model.load_state_dict(load_torch(path, map_location=device)["model"])
    model.eval()
    return model, method, cfg


def evaluate_seeds(record: dict, seeds, *, test_subset: int | None = None, device="cpu") -> list[dict]:
    """Test accuracy of a finished run under each evaluation seed: [{'eval_seed', 'test_acc'}].

    ``test_subset``: evaluate on a seeded subset of the test set (None: the run's own test set).
    """
    from ..train.trainer import DTYPES, build_data, evaluate
    model, method, cfg = load_trained(record, device)
    cfg = {**cfg, "data": {**cfg["data"], "test_subset": test_subset if test_subset else cfg["data"]["test_subset"]}}
    _, test = build_data(cfg)
    out = []
    for s in seeds:
        ev = evaluate(method, test, {**cfg, "eval_seed": int(s)}, torch.device(device), DTYPES[cfg["dtype"]])
        out.append({"eval_seed": int(s), "test_acc": ev["test_acc"]})
    return out


def energy_of_run(record: dict, *, samples: int = 256, eval_seed: int | None = None, T: int | None = None,
                  part_fn=None, device="cpu") -> dict:
    """Counted operations and energy per sample of a finished run on ``samples`` test images.

    Works for any method (the BPTT baselines too): the method's own ``predict`` runs under an
    ``EnergyCounter``. ``T`` overrides the method's number of steps/passes (e.g. the same T = 1
    backbone run for T passes). Returns {'table': [rows], 'summary': {...}, 'samples', 'T'}.
    """
    from ..metrics.energy import EnergyCounter
    from ..train.trainer import DTYPES, build_data
    from ..data.loader import make_loader
    model, method, cfg = load_trained(record, device)
    if T is not None:
        method.T = int(T)
    _, test = build_data({**cfg, "data": {**cfg["data"], "test_subset": samples}})
    x, _ = next(iter(make_loader(test, samples, shuffle=False)))
    x = x.to(device=device, dtype=DTYPES[cfg["dtype"]])
    with torch.random.fork_rng(devices=[]), EnergyCounter(model, part_fn) as ec:
        torch.manual_seed(cfg["eval_seed"] if eval_seed is None else eval_seed)
        method.predict(x)
    n = x.shape[0]
    return {"table": ec.table(n).to_dict("records"), "summary": ec.summary(n), "samples": n, "T": method.T}
