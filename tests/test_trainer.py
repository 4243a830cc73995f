"""The trainer: run records, checkpoints that resume exactly, gradient clipping, the end-of-run line.
(Resume for every method: test_resume.py; DDP: test_ddp.py.)"""
import json
from pathlib import Path

import pytest
import torch

from snnlib.experiments.io import load_torch
from snnlib.train import train


def tiny_cfg(**over):
    cfg = {
        "name": "tiny", "method": "bptt",
        "model": {"name": "conv_snn", "channels": [4, 8], "neuron": {"leak": 0.5}},
        "data": {"name": "synthetic", "batch_size": 32, "test_batch_size": 256},
        "T": 2, "epochs": 2, "max_iters_per_epoch": 6, "optim": {"name": "sgd", "lr": 0.1},
        "checkpoint_every": 2, "threads": 1, "measure_memory": False,
    }
    for k, v in over.items():
        cfg[k] = v
    return cfg


def _weights(run_dir):
    return load_torch(Path(run_dir) / "checkpoint.pt")["model"]


def test_run_writes_record_and_a_weights_only_checkpoint(tmp_path):
    rec = train(tiny_cfg(epochs=1, measure_memory=True), tmp_path, progress=False)
    saved = json.loads((tmp_path / "result.json").read_text())
    for key in ("config", "config_hash", "seed", "history", "wall_time_s", "peak_rss_bytes", "packages",
                "git_commit", "code_version", "train_memory"):
        assert key in saved
    h = saved["history"][0]
    assert 0.0 <= h["test_acc"] <= 1.0 and h["firing_rates"] and h["time_per_batch_s"] > 0
    assert saved["train_memory"]["saved_peak_bytes"] > 0
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["batch"] == 0
    assert rec["history"][0]["test_acc"] == h["test_acc"]


def test_a_runs_thread_setting_does_not_leak_into_the_next_run(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rec = train(tiny_cfg(epochs=1, max_iters_per_epoch=2, threads=1), tmp_path, progress=False)
        assert rec["machine"]["torch_threads"] == 1        # the run itself used its setting
        assert torch.get_num_threads() == 2                 # and the caller's count is back
    finally:
        torch.set_num_threads(before)


def test_learning_happens(tmp_path):
    rec = train(tiny_cfg(epochs=3, max_iters_per_epoch=None), tmp_path, progress=False)
    assert rec["history"][-1]["test_acc"] > 0.5   # 10 classes: chance is 0.1


def test_nan_inputs_and_bad_shapes_get_clear_errors():
    from snnlib.train import build
    _, method = build(tiny_cfg())
    opt = torch.optim.SGD(method.net.parameters(), lr=0.1)
    x = torch.rand(4, 1, 28, 28)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        method.train_step(x, torch.zeros(4, dtype=torch.long), opt)
    with pytest.raises(ValueError, match="batch size mismatch"):
        method.train_step(torch.rand(4, 1, 28, 28), torch.zeros(3, dtype=torch.long), opt)
    with pytest.raises(TypeError, match="labels"):
        method.train_step(torch.rand(4, 1, 28, 28), torch.zeros(4), opt)


def test_global_batchnorm_is_batchnorm_in_one_process():
    from snnlib.train.sync_batchnorm import convert_batchnorm
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)).double()
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    ref = net(x)
    conv = convert_batchnorm(net)
    assert type(conv[1]).__name__ == "GlobalBatchNorm" and conv[1].weight.dtype == torch.float64
    assert torch.allclose(conv(x), ref)


CLIP_CASES = {
    "bptt": tiny_cfg(),
    "ottt_o": tiny_cfg(method="ottt_o", model={"name": "online_conv", "cfg": [4, "M", 8, "M"]}),
    "ide": tiny_cfg(method="ide", model={"name": "ide_fc", "hidden": 16, "dropout": 0.0}, T=4,
                    method_args={"max_iter": 8}),
}


def _clipped_update(cfg, max_norm, x, y):
    """Parameters before and after one train_step under an SGD (no momentum) hooked to clip."""
    from snnlib.train import build
    from snnlib.train.setup import clip_before_step
    torch.manual_seed(0)
    model, method = build({**cfg, "dtype": "float64"})
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    clip_before_step(opt, max_norm)
    torch.manual_seed(1)
    method.train_step(x, y, opt)
    return before, dict(model.named_parameters())


@pytest.mark.parametrize("method", list(CLIP_CASES))
def test_grad_clip_bounds_every_optimizer_step_and_a_huge_norm_changes_nothing(method):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (8,), generator=g)
    steps = CLIP_CASES[method]["T"] if method == "ottt_o" else 1        # ottt_o steps once per time step
    w0, free = _clipped_update(CLIP_CASES[method], None, x, y)
    _, tiny = _clipped_update(CLIP_CASES[method], 1e-9, x, y)
    _, huge = _clipped_update(CLIP_CASES[method], 1e9, x, y)

    def update_norm(w):
        return torch.sqrt(sum(((w[k] - w0[k]) ** 2).sum() for k in w0)).item()
    assert update_norm(free) > 1e-3
    assert update_norm(tiny) <= steps * 0.5 * 1e-9 * (1 + 1e-6)      # lr x max norm per step
    assert all(torch.equal(free[k], huge[k]) for k in free)


def test_grad_clip_in_a_config_reaches_the_optimizer(tmp_path):
    plain = train(tiny_cfg(epochs=1, max_iters_per_epoch=2), tmp_path / "plain", progress=False)
    clipped = train(tiny_cfg(epochs=1, max_iters_per_epoch=2, grad_clip=1e-9), tmp_path / "clipped", progress=False)
    huge = train(tiny_cfg(epochs=1, max_iters_per_epoch=2, grad_clip=1e9), tmp_path / "huge", progress=False)
    a, b, c = _weights(tmp_path / "plain"), _weights(tmp_path / "clipped"), _weights(tmp_path / "huge")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert plain["history"][0]["test_acc"] == huge["history"][0]["test_acc"]
    assert clipped["config"]["grad_clip"] == 1e-9


def test_the_final_line_names_unconverged_solves(tmp_path, capsys):
    cfg = tiny_cfg(method="ide", model={"name": "ide_fc", "hidden": 16, "dropout": 0.0}, T=4, epochs=1,
                   max_iters_per_epoch=3, method_args={"max_iter": 1, "warn_tol": 1e-12})
    with pytest.warns(RuntimeWarning, match="did not converge"):
        train(cfg, tmp_path / "ide", progress=True)
    final = capsys.readouterr().err.strip().splitlines()[-1]
    assert final.startswith("[ide] done after 1 epochs: test acc")
    assert "3 of 3 solves unconverged (solver.backward_unconverged)" in final

    train(tiny_cfg(epochs=1, max_iters_per_epoch=2), tmp_path / "bptt", progress=True)
    final = capsys.readouterr().err.strip().splitlines()[-1]
    assert final.startswith("[bptt] done after 1 epochs") and "unconverged" not in final and "saturated" not in final


def test_the_final_line_names_saturated_neurons():
    from snnlib.train.trainer import final_line, health_notes
    hist = [{"epoch": e + 1, "test_acc": 0.5, "train_loss": 1.0,
             "step_stats": {"spide": {"saturated": s, "forward_firing": 0.2},
                            "solver": {"backward_unconverged": u}}}
            for e, (s, u) in enumerate([(0.0, 0.25), (0.02, 0.0)])]
    assert health_notes(hist, 4, world_size=2) == [
        "2 of 16 solves unconverged (solver.backward_unconverged)",
        "saturated neurons (spide.saturated): 1.00% on average, 2.00% in the worst epoch"]
    line = final_line({"method": "spide"}, hist, 4, 2)
    assert line.startswith("[spide] done after 2 epochs: test acc 0.5000, train loss 1.0000; 2 of 16 solves")
    clean = [{**h, "step_stats": {"spide": {"saturated": 0.0}}} for h in hist]
    assert health_notes(clean, 4) == []


def test_a_warmup_longer_than_a_tenth_of_the_run_is_shortened_and_the_record_says_so(tmp_path):
    from snnlib.train.setup import fit_schedule, lr_at
    sched = {"name": "constant", "warmup_iters": 500}
    fitted, note = fit_schedule(sched, total_iters=200)
    assert fitted["warmup_iters"] == 20 and "500 to 20" in note
    assert lr_at(19, 200, 100, 0.1, fitted) == pytest.approx(0.1) and lr_at(19, 200, 100, 0.1, sched) < 0.005
    assert fit_schedule(sched, total_iters=10_000) == (sched, None)      # long runs keep the paper's warm-up
    rec = train(tiny_cfg(epochs=1, schedule={"name": "constant", "warmup_iters": 500}), tmp_path, progress=False)
    assert rec["schedule"]["warmup_iters"] == 0 and "shortened from 500 to 0" in rec["schedule_note"]
    assert rec["history"][0]["lr"] == pytest.approx(0.1)
