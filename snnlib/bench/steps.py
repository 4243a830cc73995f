"""One BPTT training step per framework, all written the same way."""
from __future__ import annotations

import torch

from .nets import AnnFloor, build, canonical_weights, load_canonical, loss_of
from ..methods import build_method


class Trainer:
    """A network, an SGD optimizer and ``step(x, y)``: zero_grad, forward over T, loss, backward,
    update, reset the state. ``x`` is a static batch [B, C, H, W], repeated over T."""

    def __init__(self, net, T: int, lr: float = 1e-3):
        self.net, self.T = net, T
        self.opt = torch.optim.SGD(net.parameters(), lr=lr)

    def step(self, x, y) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = loss_of(self.net(x.unsqueeze(0).expand(self.T, *x.shape)), y)
        loss.backward()
        self.opt.step()
        self.net.reset()
        return loss.item()


class SnnlibTrainer(Trainer):
    """snnlib's own path: the ``bptt`` method's ``train_step`` (input checks and accuracy included)."""

    def __init__(self, net, T: int, lr: float = 1e-3):
        super().__init__(net, T, lr)
        self.method = build_method("bptt", net.net, T=T)

    def step(self, x, y) -> float:
        return self.method.train_step(x, y, self.opt)["loss"]


class AnnTrainer(Trainer):
    """The compute floor: the ANN on one image per sample (T = 1)."""

    def step(self, x, y) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()


#: snnlib's network with a fixed time chunking instead of its default ('auto'): for measuring the choice.
SNNLIB_CHUNKINGS = {"snnlib_whole": None, **{f"snnlib_chunk{c}": c for c in (1, 2, 3, 4, 6, 8)}}


def make_trainer(variant: str, spec: dict, T: int, seed: int = 0) -> Trainer:
    """'snnlib', 'snnlib_torch' (the reference loop backend), a peer framework, 'ann_relu', or one of
    ``SNNLIB_CHUNKINGS`` (snnlib with the whole sequence per layer, or a fixed chunk of steps)."""
    if variant == "ann_relu":
        net = AnnFloor(spec)
        load_canonical(net, canonical_weights(spec, seed))
        return AnnTrainer(net, 1)
    if variant in SNNLIB_CHUNKINGS:
        return SnnlibTrainer(build("snnlib", spec, seed, chunk=SNNLIB_CHUNKINGS[variant]), T)
    if variant in ("snnlib", "snnlib_torch"):
        net = build("snnlib", spec, seed, backend="fused" if variant == "snnlib" else "torch")
        return SnnlibTrainer(net, T)
    return Trainer(build(variant, spec, seed), T)
