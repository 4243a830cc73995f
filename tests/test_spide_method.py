"""SPIDE end to end on small float64 feedback models: the spike-based gradient against the exact
implicit one, the modified reset's rate error, the scale-factor conventions, and op counts."""
import ast
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import functional as F

from snnlib.equilibrium import equilibrium_forward
from snnlib.equilibrium import spide_analysis as sa
from snnlib.data import DatasetNotFound, dataset_info, get_dataset
from snnlib.equilibrium.spiking_backward import SpikeSaturationWarning, auto_scale, cosine
from snnlib.methods import build_method
from snnlib.metrics.spike_ops import energy_rows, spide_op_counts
from snnlib.models import build_model

SMALL = {"channels": 1, "size": (4, 5), "num_classes": 5}
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("f64")


def small_net(seed=0, **kw):
    torch.manual_seed(seed)
    spec = {"name": "spide_fc", "hidden": [48, 32], "fb_bound": 4.0, **kw}
    return build_model(spec, SMALL).double()


def batch(seed=1, B=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 1, 4, 5, generator=g), torch.randint(0, 5, (B,), generator=g)


def test_layerwise_exact_backward_equals_ide_exact_at_the_fixed_point():
    net, (x, y) = small_net(), batch()
    ide = sa.batch_gradients(net, x, y, T=1, backward="exact", state="exact")
    layer = sa.batch_gradients(net, x, y, T=1, backward="spide_exact", state="exact")
    for a, b in zip(ide, layer):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-8)
    assert max(float(a.abs().max()) for a in ide) > 1e-4          # a real gradient, not zeros


def test_spike_gradient_reaches_the_exact_implicit_gradient_and_rises_with_T_b():
    net, (x, y) = small_net(), batch()
    rows = sa.spike_gradient_sweep(net, x, y, T=30, T_bs=[10, 30, 100, 250], scales=[10.0], state="exact")
    cos = [r["cos_ide_exact"] for r in rows]
    assert cos[-1] >= 0.99                                        # T_b = 250
    assert all(b > a for a, b in zip(cos, cos[1:]))               # rises with T_b
    err = [r["rel_err_layer_exact"] for r in rows]
    assert err[-1] < err[1] / 4                                    # roughly 1/T_b: 30 -> 250


def test_a_too_large_scale_saturates_the_backward_neurons():
    net, (x, y) = small_net(), batch()
    rows = sa.spike_gradient_sweep(net, x, y, T=30, T_bs=[100, 250], scales=[10.0, 1000.0], state="exact")
    big = [r for r in rows if r["scale"] == 1000.0]
    good = [r for r in rows if r["scale"] == 10.0]
    assert big[0]["saturated"] > 0.1 and big[-1]["cos_ide_exact"] < 0.95
    assert abs(big[-1]["cos_ide_exact"] - big[0]["cos_ide_exact"]) < 0.01     # no gain from T_b
    assert good[-1]["cos_ide_exact"] > big[-1]["cos_ide_exact"] + 0.04


def test_spike_backward_through_equilibrium_forward_matches_the_sweep():
    net, (x, y) = small_net(), batch()
    direct = sa.batch_gradients(net, x, y, T=30, backward="spike", T_b=100, scale=10.0)
    rows = sa.spike_gradient_sweep(net, x, y, T=30, T_bs=[100], scales=[10.0], state="snn")
    ref = sa.batch_gradients(net, x, y, T=30, backward="spide_exact")
    assert cosine(direct, ref) == pytest.approx(rows[0]["cos_layer_exact"], abs=1e-12)


def test_modified_reset_halves_the_rate_error_at_T_30():
    net, (x, _) = small_net(), batch(B=32)
    rows = {(r["variant"], r["T"]): r for r in sa.rate_error(net, x, [30])}
    zero, mod = rows[("zero", 30)], rows[("modified", 30)]
    assert mod["mean_abs"] <= 0.6 * zero["mean_abs"]
    assert zero["signed_mean"] < -0.5 * zero["mean_abs"]           # reset to 0 underestimates
    assert abs(mod["signed_mean"]) < 0.2 * mod["mean_abs"]         # rounding: no bias
    assert (net.snn.v_th, net.snn.u_rest) == (1.0, -1.0)           # restored


def test_legacy_scale_equals_the_explicit_scale_with_wd_times_s():
    """loss x s with lr / s is the default update with weight decay divided by s."""
    x, y = batch(B=8)
    s, lr, wd = 50.0, 0.1, 1e-3
    params = []
    for legacy, decay in ((False, wd), (True, wd * s)):
        net = small_net()
        method = build_method("spide", net, T=10, T_b=20, scale=s, legacy_scale=legacy)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=decay)
        for _ in range(2):
            method.train_step(x, y, opt)
        assert opt.param_groups[0]["lr"] == lr                       # restored after the step
        params.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*params):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-7)


def test_train_step_reports_forward_and_backward_firing():
    net, (x, y) = small_net(), batch()
    method = build_method("spide", net, T=10, T_b=20, scale=10.0, count_sops=True)
    st = method.train_step(x, y, torch.optim.SGD(net.parameters(), lr=0.01))
    assert set(st["spide"]) >= {"forward_firing", "backward_firing", "saturated", "backward_sops"}
    assert {"forward.layer1", "forward.layer2", "backward.layer1", "backward.layer2"} <= set(st["rates"])
    assert 0.0 < st["spide"]["backward_firing"] < 1.0 and st["spide"]["backward_sops"] > 0
    assert st["extra_memory_bytes"] > 0


def test_lif_spike_backward_has_an_error_floor_of_order_one_minus_lambda():
    """Leaky ternary neurons (lambda-weighted rates) track the LIF implicit gradient up to a floor
    that shrinks with 1 - lambda, like the LIF forward rate."""
    x, y = batch()
    cos = {}
    for leak in (0.99, 0.95):
        net = small_net(leak=leak)
        ref = sa.batch_gradients(net, x, y, T=1, backward="exact", state="exact")
        for T_b in (100, 400):
            gs = sa.batch_gradients(net, x, y, T=1, backward="spike", state="exact", T_b=T_b, scale=10.0)
            cos[leak, T_b] = cosine(gs, ref)
    assert cos[0.99, 400] > 0.99 and cos[0.99, 400] > cos[0.99, 100]
    assert cos[0.95, 400] < cos[0.99, 400] - 0.03
    # the floor, not T_b, limits it: 4x more steps remove less than half of the error
    assert (1 - cos[0.95, 400]) > 0.5 * (1 - cos[0.95, 100])


def test_input_map_gradient_is_the_outer_product_of_backward_rate_and_input():
    net, (x, y) = small_net(), batch()
    grads = sa.batch_gradients(net, x, y, T=1, backward="spide_exact", state="exact")
    names = [n for n, p in net.snn.named_parameters()]
    w_in = grads[names.index("streams.0.input_map.0.1.weight")]
    # recompute (1/V) (m_1 * beta_1) x^T from the exact state and the dense per-layer solve
    drive = net.snn.drive([x])
    sim = sa.exact_state(net, drive)
    a = sim.last[0].detach().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(net.readout([a]), y), a)
    from snnlib.equilibrium.spiking_backward import dense_solve, layer_masks, stream_transposes
    masks = layer_masks(sim.rates[0])
    beta, _ = dense_solve(g, stream_transposes(net.snn.streams[0], [r.shape for r in sim.rates[0]]), masks,
                          V=net.snn.V)
    expected = (masks[0] * beta[0] / net.snn.V).T @ x.flatten(1)
    assert torch.allclose(w_in, expected, atol=1e-12)


def test_method_rejects_other_backwards_and_bad_arguments():
    net = small_net()
    with pytest.raises(ValueError, match="spide: backward"):
        build_method("spide", net, T=5, backward="broyden")
    with pytest.raises(ValueError, match="T_b"):
        build_method("spide", net, T=5, T_b=0)
    with pytest.raises(ValueError, match="scale"):
        build_method("spide", net, T=5, scale=-1.0)


def test_op_counts_of_an_fc_net_match_hand_counts():
    net, (x, y) = small_net(), batch(B=4)
    c = spide_op_counts(net, x, y, T=10, T_b=20, scale=10.0, ide_nstep=5)
    with torch.no_grad():
        sim = net.snn.simulate(net.snn.drive([x]), 10)
    a1, a2 = sim.rates[0]
    # every spike of layer 1 reaches the 32 neurons of layer 2, every spike of layer 2 the 48 of layer 1
    expected = float((a1 * 10).sum() * 32 + (a2 * 10).sum() * 48) / 4
    assert c["forward_sops"] == pytest.approx(expected)
    assert c["input_macs"] == 20 * 48 and c["readout_macs"] == 32 * 5
    assert c["dense_forward_macs"] == 20 * 48 + 48 * 32 + 32 * 48 + 32 * 5
    assert c["backward_sops"] > 0 and c["ann_train_macs"] == 3 * c["dense_forward_macs"]
    rows = energy_rows(c)
    total = [r for r in rows if r["phase"].endswith("total")][0]["energy_uJ"]
    assert total == pytest.approx(sum(r["energy_uJ"] for r in rows[:5]))
    assert math.isfinite(total)


def test_spike_backward_needs_the_equilibrium_context():
    from snnlib.equilibrium import implicit_rates
    a = torch.rand(2, 3, requires_grad=True)
    out = implicit_rates(a * 0.5, a, backward="spike")
    with pytest.raises(ValueError, match="EquilibriumContext"):
        out.sum().backward()


def test_evaluation_runs_without_a_backward():
    net, (x, y) = small_net(), batch()
    method = build_method("spide", net, T=10)
    net.eval()
    assert method.predict(x).shape == (16, 5)
    with torch.no_grad():
        assert equilibrium_forward(net, x, 10).record is None


# --- the scale factor: saturation warning and the per-batch default ------------------------------
def _spide_warnings(caught):
    return [w for w in caught if issubclass(w.category, SpikeSaturationWarning)]


def test_a_saturating_scale_warns_once_with_the_saturated_fraction():
    net, (x, y) = small_net(), batch()
    method = build_method("spide", net, T=10, T_b=20, scale=1.0e5)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = [method.train_step(x, y, opt) for _ in range(2)]
    shown = _spide_warnings(caught)
    assert st[0]["spide"]["saturated"] > 0.02 and st[1]["spide"]["saturated"] > 0.02
    assert len(shown) == 1
    assert f"{st[0]['spide']['saturated']:.1%}" in str(shown[0].message)


def test_the_auto_scale_keeps_a_small_batch_unsaturated_and_close_to_the_exact_gradient():
    net, (x, y) = small_net(), batch(B=4)
    layer_ref = sa.batch_gradients(net, x, y, T=30, backward="spide_exact")
    grads = {}
    for scale in ("auto", 1.0e4):
        net.zero_grad(set_to_none=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = equilibrium_forward(net, x, 30, backward="spike", T_b=250, scale=scale)
            F.cross_entropy(res.logits, y).backward()
        grads[scale] = [p.grad.clone() for p in sa.snn_parameters(net)]
        if scale == "auto":
            assert res.record.stats["saturated"] == 0.0 and res.record.stats["scale"] > 0
    assert cosine(grads["auto"], layer_ref) > 0.99
    assert cosine(grads["auto"], layer_ref) > cosine(grads[1.0e4], layer_ref)
    assert build_method("spide", small_net(), T=5).scale == "auto"


def test_auto_scale_puts_the_largest_drive_at_half_a_spike():
    g = torch.tensor([[0.01, -0.04], [0.02, 0.0]])
    assert auto_scale(g, 1.0) == pytest.approx(0.5 / 0.04)
    assert auto_scale(torch.zeros(2, 3), 1.0) == 1.0
    with pytest.raises(ValueError, match="auto"):
        build_method("spide", small_net(), T=5, scale="auto", legacy_scale=True)
    with pytest.raises(ValueError, match="saturation_warn"):
        build_method("spide", small_net(), T=5, saturation_warn=2.0)


def _notebook02_train_settings():
    """TRAIN of notebook 02: its parameters cell (smoke) and configs/02_spide/{cpu,paper}.yaml."""
    nb = json.loads((ROOT / "notebooks" / "02_spide.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    smoke = next(ast.literal_eval(n.value) for n in tree.body
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "TRAIN")
    scales = {"smoke": smoke}
    for scale in ("cpu", "paper"):
        scales[scale] = yaml.safe_load((ROOT / "configs" / "02_spide" / f"{scale}.yaml").read_text())["TRAIN"]
    return scales


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_notebook02_training_defaults_do_not_saturate(scale):
    p = _notebook02_train_settings()[scale]
    run = yaml.safe_load((ROOT / "configs" / "runs" / "spide_fmnist_fc.yaml").read_text())
    try:
        ds = get_dataset("fashion_mnist", "train", subset=p["batch_size"], seed=0, download=False)
    except DatasetNotFound:
        pytest.skip("Fashion-MNIST is not installed")
    x, y = ds.__getitems__(list(range(p["batch_size"])))
    torch.manual_seed(0)
    net = build_model({k: v for k, v in run["model"].items()}, dataset_info("fashion_mnist")).double()
    method = build_method("spide", net, T=p["T"], T_b=min(p["T_b"], 100), scale=p["scale"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = method.train_step(x.double(), y, torch.optim.SGD(net.parameters(), lr=0.0))
    assert not _spide_warnings(caught)
    assert st["spide"]["saturated"] <= 0.02
