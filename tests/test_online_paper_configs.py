"""Paper-scale OTTT/SAF configs: every one resolves and builds with the reference parameter count;
one per model family and method runs a training step on a batch of 2 on CPU."""
from pathlib import Path

import pytest
import torch

from snnlib.experiments import load_config, published
from snnlib.paths import ROOT
from snnlib.train import build

CONFIGS = sorted(p for pat in ("ottt_*.yaml", "saf_*.yaml") for p in (ROOT / "configs" / "runs").glob(pat))
PAPER = [p for p in CONFIGS if "fmnist" not in p.name]
PARAMS = {"online_vgg": "vggws", "online_vggf": "vggf"}


def test_there_are_paper_configs_for_every_method_and_dataset():
    names = {p.stem for p in PAPER}
    for m in ("ottt_a", "ottt_o", "saf_e", "saf_f"):
        for ds in ("cifar10", "cifar100", "cifar10dvs"):
            assert f"{m}_{ds}" in names
    assert {"ottt_a_cifar10_vggf", "saf_e_cifar10_vggf"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds(path: Path):
    cfg = load_config(path)
    model, method = build(cfg, "cpu")
    assert method.T == cfg["T"]
    if path in PAPER:
        key = f"ottt.params.{PARAMS[cfg['model']['name']]}.{cfg['data']['name']}"
        n = sum(p.numel() for p in model.parameters())
        assert n == round(published(key)["value"] * 1e6), key


SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}


@pytest.mark.parametrize("stem", ["ottt_a_cifar10", "saf_f_cifar100", "saf_e_cifar10_vggf", "saf_f_cifar10dvs"])
def test_one_training_step_on_a_batch_of_two(stem):
    cfg = load_config(ROOT / "configs" / "runs" / f"{stem}.yaml")
    torch.manual_seed(0)
    model, method = build(cfg, "cpu")
    ds = cfg["data"]["name"]
    if ds in SHAPES:
        x = torch.randn(2, *SHAPES[ds])
    else:                                   # event frames [B, T, 2, 128, 128], sparse counts
        x = torch.poisson(torch.full((2, cfg["T"], 2, 128, 128), 0.05))
    y = torch.tensor([1, 0])
    before = [p.detach().clone() for p in model.parameters()]
    st = method.train_step(x, y, torch.optim.SGD(model.parameters(), lr=cfg["optim"]["lr"], momentum=0.9))
    assert torch.isfinite(torch.tensor(st["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
