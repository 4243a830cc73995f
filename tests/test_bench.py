"""The benchmark suite: the same network in every framework, OTTT parity, worker tasks, the report."""
import importlib.util
import json

import pytest
import torch

from snnlib.bench import nets, report, stepper, worker
from snnlib.bench.__main__ import Runner, load_bench_config
from snnlib.bench.nets import build, loss_of, spec_with
from snnlib.bench.steps import make_trainer
from snnlib.paths import ROOT

SPEC = spec_with(channels=(4, 8), gains=(2.0, 3.0))
PEER_MODULES = {"spikingjelly": "spikingjelly", "spikingjelly_single": "spikingjelly", "snntorch": "snntorch",
                "snntorch_folded": "snntorch", "norse": "norse", "norse_per_step": "norse"}


def _installed(framework):
    mod = PEER_MODULES.get(framework)
    return mod is None or importlib.util.find_spec(mod) is not None


def _batch(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 1, 28, 28, generator=g) * 3 - 0.4, torch.randint(0, 10, (B,), generator=g)


def _logits_and_grads(framework, x, y, T, spec=SPEC, **kw):
    net = build(framework, spec, seed=0, **kw)
    out = net(x.unsqueeze(0).expand(T, *x.shape))
    loss_of(out, y).backward()
    net.reset()
    return out.detach(), [p.grad for p in net.canonical_params()]


@pytest.mark.parametrize("framework", ["plain_loop", "spikingjelly", "spikingjelly_single", "snntorch",
                                       "snntorch_folded", "norse", "norse_per_step"])
def test_every_framework_computes_the_same_network(framework):
    if not _installed(framework):
        pytest.skip(f"{framework} is not installed (pip install -e '.[bench]')")
    x, y = _batch()
    T = 3
    ref_out, ref_g = _logits_and_grads("snnlib", x, y, T)
    spikes = ref_out.abs().sum() > 0
    out, g = _logits_and_grads(framework, x, y, T)
    assert spikes and torch.equal(out, ref_out)
    if framework.startswith("norse"):       # Norse's reset is not detached: compare with snnlib's non-detached reset
        _, ref_g = _logits_and_grads("snnlib", x, y, T, spec=spec_with(**{**SPEC, "detach_reset": False}))
    for a, b in zip(g, ref_g):
        assert (a - b).norm() <= 1e-5 * b.norm()


def test_the_benchmark_network_fires_on_real_scale_inputs():
    from snnlib.metrics import FiringRateMonitor
    x, _ = _batch(8)
    net = build("snnlib", spec_with(), seed=0)
    with torch.no_grad(), FiringRateMonitor(net.net) as mon:
        net(x.unsqueeze(0).expand(4, *x.shape))
    assert all(0.02 < r < 0.5 for r in mon.rates().values())


def test_snnlib_ottt_matches_spikingjelly_ottt_gradients():
    if not _installed("spikingjelly"):
        pytest.skip("spikingjelly is not installed")
    from snnlib.bench.ottt import make_ottt
    x, y = _batch(4)
    grads = {}
    for v in ("snnlib_ottt_a", "snnlib_ottt_a_lean", "spikingjelly_ottt_a"):
        m = make_ottt(v, SPEC, T=3)
        m.opt = torch.optim.SGD(m.params(), lr=0.0)
        m.step(x, y)
        grads[v] = [p.grad.clone() for p in m.params()]
    for v in ("snnlib_ottt_a_lean", "spikingjelly_ottt_a"):
        for a, b in zip(grads[v], grads["snnlib_ottt_a"]):
            assert (a - b).norm() <= 1e-5 * b.norm()


def test_trainers_take_steps_and_change_the_weights():
    x, y = _batch(4)
    for v in ("snnlib", "snnlib_torch", "ann_relu"):
        t = make_trainer(v, SPEC, T=2)
        before = [p.detach().clone() for p in t.net.parameters()]
        assert torch.isfinite(torch.tensor(t.step(x, y)))
        assert any(not torch.equal(a, b) for a, b in zip(before, t.net.parameters()))


def test_alternated_rounds_report_unavailable_peers_and_time_the_rest():
    x, y = _batch(2)

    def broken():
        raise ImportError("No module named 'peerlib'")

    makers = {"snnlib": lambda: make_trainer("snnlib", SPEC, 2), "peer": broken}
    res = worker._alternate(makers, x, y, {"warmup": 1, "rounds": 2, "steps_per_round": 1}, torch.device("cpu"))
    assert res["unavailable"] == {"peer": "ImportError: No module named 'peerlib'"}
    assert len(res["rounds"]) == 2 and all(set(r) == {"snnlib"} and r["snnlib"]["wall_s"] > 0 for r in res["rounds"])


def test_memory_task_measures_saved_bytes(tmp_path):
    x, y = _batch(2)
    torch.save((x, y), tmp_path / "b.pt")
    args = {"batch": str(tmp_path / "b.pt"), "batch_size": 2, "T": 2, "variant": "snnlib",
            "spec": {"channels": [4, 8]}}
    r = stepper.memory(args)
    # fused LIF saves h of both layers; pools save the spikes; convs and linear their inputs
    assert r["saved_peak_bytes"] > 0 and r["peak_rss"] >= r["peak_rss_before_step"]


def _proc(v, T, k, wall, B=8):
    return {"variant": v, "T": T, "round": k, "batch_size": B, "gflops": 10.0, "wall_s": wall, "cpu_s": 2 * wall}


def test_steps_task_times_one_variant_and_reports_an_unbuildable_one(tmp_path):
    x, y = _batch(2)
    torch.save((x, y), tmp_path / "b.pt")
    args = {"batch": str(tmp_path / "b.pt"), "batch_size": 2, "T": 2, "spec": {"channels": [4, 8]},
            "warmup": 1, "steps": 2, "round": 0}
    r = stepper.steps({**args, "variant": "plain_loop"})
    assert len(r["wall_all"]) == 2 and r["wall_s"] > 0 and r["round"] == 0
    bad = stepper.steps({**args, "variant": "jelly"})
    assert bad["unavailable"].startswith("ValueError: unknown framework 'jelly'")


def test_report_pairs_processes_by_round_and_finds_the_fastest_other():
    steps = [_proc("snnlib", 4, 0, 1.0), _proc("plain_loop", 4, 0, 1.5), _proc("spikingjelly", 4, 0, 3.0),
             _proc("ann_relu", 4, 0, 0.125),
             _proc("snnlib", 4, 1, 2.0), _proc("plain_loop", 4, 1, 2.0), _proc("spikingjelly", 4, 1, 5.0),
             _proc("ann_relu", 4, 1, 0.25),
             {"variant": "norse", "T": 4, "round": 0, "unavailable": "ImportError: no norse"}]
    mem = [{"variant": "snnlib", "T": 4, "saved_peak_bytes": 100, "step_peak_over_baseline": 50, "peak_rss": 2},
           {"variant": "plain_loop", "T": 4, "saved_peak_bytes": 300, "step_peak_over_baseline": 40, "peak_rss": 2}]
    (row,) = report.bptt_rows(steps, mem)
    assert row["fastest_other"] == "plain_loop"                    # median 1.75 s against 4 s
    assert row["speedup_vs_fastest"] == {"median": 1.25, "min": 1.0, "max": 1.5, "n": 2}
    assert row["speedup_vs"]["spikingjelly"]["median"] == pytest.approx(2.75)
    assert row["over_ann_floor"]["snnlib"]["median"] == pytest.approx(2.0)      # 1 s vs 4 x 0.125 s
    assert row["snnlib_images_per_s"] == pytest.approx(8 / 1.5)
    assert row["unavailable"] == {"norse": "ImportError: no norse"}
    lines = report.checks([row], [])
    assert lines[0].startswith("snnlib BPTT >= 1.3x the fastest other implementation at T=[4]: DOES NOT HOLD")
    assert lines[1].startswith("snnlib peak step memory <= every other implementation's: DOES NOT HOLD")
    assert "NOT MEASURED" in lines[2]                             # no T = 16 here
    assert "NOT MEASURED" in lines[3]                             # no OTTT
    md = report.markdown([row], [], None, None, None)
    assert "| 4 | 5.33 | plain PyTorch loop | 1.25x (1.00-1.50) | 2.00x (2.00-2.00) |" in md


def test_report_compares_ottt_a_with_spikingjellys_accumulating_ottt():
    steps = [_proc("snnlib_ottt_a", 8, k, 1.0) for k in range(3)]
    steps += [_proc("spikingjelly_ottt_a", 8, k, w) for k, w in enumerate((1.2, 1.5, 1.3))]
    (row,) = report.ottt_rows(steps, None)
    assert row["speedup"]["snnlib_ottt_a"] == {"median": 1.3, "min": 1.2, "max": 1.5, "n": 3}
    assert report.checks([], [row])[-1].startswith("snnlib ottt_a (reference formulation) >= 1.3x SpikingJelly's "
                                                   "OTTT at T=[8]: HOLDS")


def test_the_plain_loop_is_one_network_call_per_step():
    net = build("plain_loop", SPEC)
    calls = []
    net.conv1.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    x, _ = _batch(3)
    net(x.unsqueeze(0).expand(5, *x.shape))
    assert calls == [(3, 1, 28, 28)] * 5


def test_runner_starts_a_worker_process(tmp_path):
    cfg = load_bench_config(ROOT / "configs" / "bench" / "quick.yaml")
    r = Runner(cfg, tmp_path, log=lambda *_: None)
    res = r.run("prepare", {"batch_size": 3})
    assert "error" not in res and res["shape"] == [3, 1, 28, 28]
    assert torch.load(r.batch, weights_only=True)[0].shape == (3, 1, 28, 28)
    (tmp_path / "x.log").write_text("Traceback ...\nValueError: unknown framework 'x'")
    bad = Runner._collect(1, tmp_path / "missing.json", tmp_path / "x.log")
    assert bad["error"] == "worker exited with 1" and "unknown framework" in bad["log_tail"]


def test_timing_processes_are_forked_fresh_from_a_server_and_failures_are_named(tmp_path):
    cfg = load_bench_config(ROOT / "configs" / "bench" / "quick.yaml")
    r = Runner(cfg, tmp_path, log=lambda *_: None)
    r.run("prepare", {"batch_size": 4})
    args = {"variant": "plain_loop", "T": 2, "warmup": 0, "steps": 1}
    try:
        a, b = r.run("steps", args), r.run("steps", args)
        bad = r.run("steps", {**args, "batch_size": 9})
        server = r._timing_zygote("plain_loop").proc.pid
    finally:
        r.close()
    assert "error" not in a and a["wall_s"] > 0 and a["torch_threads"] == cfg["threads"]
    assert len({a["pid"], b["pid"], server}) == 3
    assert bad["error"] == "worker exited with 1" and "the prepared batch has 4 samples" in bad["log_tail"]


def test_fork_server_kills_a_child_past_its_timeout(tmp_path):
    from snnlib.bench.__main__ import Zygote
    script = tmp_path / "sleep.py"
    script.write_text("import time\ntime.sleep(30)\n")
    z = Zygote(("time",), {}, tmp_path / "zygote.log")
    try:
        assert z.run({"script": str(script), "log": str(tmp_path / "c.log"), "timeout_s": 0.3}) == "timeout"
        assert z.run({"call": "json:loads", "argv": [], "log": str(tmp_path / "d.log")}) == 1   # a TypeError
    finally:
        z.close()
    assert "TypeError" in (tmp_path / "d.log").read_text()


def test_bench_config_files_name_known_variants():
    from snnlib.bench.ottt import OTTT_VARIANTS
    for name in ("default", "quick"):
        cfg = load_bench_config(ROOT / "configs" / "bench" / f"{name}.yaml")
        assert set(cfg["bptt"]["variants"]) <= set(nets.FRAMEWORKS) | {"snnlib_torch", "ann_relu"}
        assert set(cfg["ottt"]["variants"]) <= set(OTTT_VARIANTS)
        json.dumps(cfg)


def test_unknown_framework_is_named():
    with pytest.raises(ValueError, match="unknown framework 'jelly'"):
        build("jelly")


def test_phase_clock_splits_a_step_into_phases_that_sum_to_it():
    from snnlib.bench.equilibrium import PHASES, PhaseClock
    c = PhaseClock()
    c.t.update(simulate=0.1, rate_map=0.01, vjp=0.2, solve=0.5, backward=0.6, optimizer=0.05)
    sp = c.split(1.0)
    assert set(sp) == set(PHASES)
    assert sp["solver"] == pytest.approx(0.3) and sp["backprop"] == pytest.approx(0.1)
    assert sum(sp.values()) == pytest.approx(1.0)


def _eq_result(wall, vjp=0.1):
    med = {"wall_s": wall, "simulate": 0.0, "rate_map": 0.0, "vjp": vjp, "solver": wall - vjp, "backprop": 0.0,
           "optimizer": 0.0, "other": 0.0}
    return {"median": med, "T": 5, "solver": [{"backward_nstep": 30.0}], "first_step": {"loss": 2.3, "grad_norm": 1.0},
            "determinism": {"deterministic_algorithms": True, "fill_uninitialized_memory": False, "threads": 2}}


def test_equilibrium_report_speedup_is_old_over_new_per_round():
    eq = {"old_commit": "abc1234", "old_skipped": None,
          "cases": [{"case": "ide_f400", "config": "ide_fmnist_f400", "batch_size": 128,
                     "rounds": [{"new": _eq_result(0.1), "old": _eq_result(0.5)},
                                {"old": _eq_result(0.6), "new": _eq_result(0.2)}]}]}
    (row,) = report.equilibrium_rows(eq)
    assert row["speedup"] == pytest.approx({"median": 4.0, "min": 3.0, "max": 5.0, "n": 2})
    assert row["new_step_s"] == pytest.approx(0.15) and row["new_backward_nstep"] == 30.0
    assert row["first_step_loss_diff"] == 0.0
    assert report.equilibrium_checks([row])[1].startswith("ide_f400 at least 4x faster per step than the old "
                                                           "commit: HOLDS")
    assert "| ide_f400 | 5, 128 |" in report.equilibrium_markdown([row], eq)


def test_equilibrium_worker_times_the_working_tree_and_the_old_commit(tmp_path):
    """One process per tree (PYTHONPATH picks it); both compute the same first step."""
    from snnlib.bench.__main__ import old_tree
    cfg = load_bench_config(ROOT / "configs" / "bench" / "quick.yaml")
    old, reason = old_tree(tmp_path, cfg["equilibrium"]["old_commit"])
    if reason:
        pytest.skip(f"old implementation unavailable: {reason}")
    assert "class Workspace" not in (old / "snnlib" / "equilibrium" / "solvers.py").read_text()
    r = Runner(cfg, tmp_path, log=lambda *_: None)
    r.run("prepare", {"batch_size": 4})
    args = {"root": str(ROOT), "config": "ide_fmnist_f400", "batch_size": 4, "warmup": 0, "steps": 1,
            "threads": 1, "set": {"model.hidden": 16, "method_args.max_iter": 5}}
    res = {impl: r.run_tree(f"eq_{impl}", args, tree) for impl, tree in (("new", ROOT), ("old", old))}
    for impl, tree in (("new", ROOT), ("old", old)):
        assert "error" not in res[impl], res[impl]
        assert res[impl]["code"] == str((tree / "snnlib").resolve())
        assert res[impl]["solver"][0]["backward_nstep"] == 5.0 and res[impl]["median"]["vjp"] > 0
    assert res["new"]["determinism"]["fill_uninitialized_memory"] is False
    assert res["new"]["first_step"]["loss"] == pytest.approx(res["old"]["first_step"]["loss"], rel=1e-6)


def test_equilibrium_report_gives_the_cpu_time_ratio_when_both_trees_record_it():
    def result(wall, cpu=None):
        r = _eq_result(wall)
        if cpu is not None:
            r["median"]["cpu_s"] = cpu
        return r
    eq = {"old_commit": "abc1234", "old_skipped": None,
          "cases": [{"case": "ide_f400", "config": "ide_fmnist_f400", "batch_size": 128,
                     "set_new": {"model.bn_init": "default"},
                     "rounds": [{"new": result(0.1, 0.2), "old": result(0.5, 0.6)},
                                {"old": result(0.6, 0.9), "new": result(0.2, 0.3)}]}]}
    (row,) = report.equilibrium_rows(eq)
    assert row["cpu_speedup"] == pytest.approx({"median": 3.0, "min": 3.0, "max": 3.0, "n": 2})
    md = report.equilibrium_markdown([row], eq)
    assert "| 4.00x (3.00-5.00) | 3.00x (3.00-3.00) |" in md and "new tree only: model.bn_init=default" in md
    assert "by CPU time 3.00x" in report.equilibrium_checks([row])[1]
    eq["cases"][0]["rounds"][0]["old"]["median"].pop("cpu_s")      # an old record without CPU time
    (row,) = report.equilibrium_rows(eq)
    assert row["cpu_speedup"]["n"] == 1


def test_ottt_check_compares_every_accumulating_variant_with_snnlibs_ottt_a(tmp_path):
    x, y = _batch(2)
    torch.save((x, y), tmp_path / "b.pt")
    args = {"batch": str(tmp_path / "b.pt"), "batch_size": 2, "T": 2, "spec": {"channels": [4, 8]},
            "variants": ["snnlib_ottt_a", "snnlib_ottt_a_lean"]}
    rows = worker.ottt_check(args)["equality"]["rows"]
    assert [(r["variant"], r["reference"]) for r in rows] == [("snnlib_ottt_a", "snnlib_ottt_a"),
                                                             ("snnlib_ottt_a_lean", "snnlib_ottt_a")]
    assert rows[1]["grad_rel_err_max"] < 1e-5


def test_profile_splits_a_step_into_its_phases_and_the_layers_share():
    from snnlib.bench import profile
    assert profile.is_layer_op("aten::mkldnn_convolution") and profile.is_layer_op("aten::avg_pool2d_backward")
    assert not profile.is_layer_op("aten::sigmoid") and not profile.is_layer_op("aten::add_")
    x, y = _batch(2)
    row = profile.profile_variant("plain_loop", T=2, batch=(x, y), threads=1, warmup=0, steps=1)
    parts = row["parts_ms"]
    assert set(parts) == set(profile.PARTS) and all(v >= 0 for v in parts.values())
    assert parts["forward: layers"] > 0 and parts["backward: layers"] > 0
    assert sum(parts.values()) <= sum(row["phases_ms"].values()) * 1.001
    assert "| plain PyTorch loop |" in profile.markdown([row])
