"""The SPIDE method on small float64 feedback models: the scale-factor conventions, firing and
op counts of a training step, the saturation warning and the per-batch scale, and the notebook's
training defaults. Gradient quality and rate error: ``tests/test_studies_spide.py``."""
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
from snnlib.data import DatasetNotFound, dataset_info, get_dataset
from snnlib.equilibrium.spiking_backward import SpikeSaturationWarning, auto_scale, cosine
from snnlib.methods import build_method
from snnlib.metrics.spike_ops import energy_rows, spide_op_counts
from snnlib.models import build_model
from snnlib.studies.spide import batch_gradients, snn_parameters

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
    layer_ref = batch_gradients(net, x, y, T=30, backward="spide_exact")
    grads = {}
    for scale in ("auto", 1.0e4):
        net.zero_grad(set_to_none=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = equilibrium_forward(net, x, 30, backward="spike", T_b=250, scale=scale)
            F.cross_entropy(res.logits, y).backward()
        grads[scale] = [p.grad.clone() for p in snn_parameters(net)]
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
