"""docs/protocols.md is generated from the run configs' ``protocol`` sections and stays current;
every paper protocol names existing published numbers and follows the reference where no
deviation is stated."""
import pytest

from snnlib.pipeline import protocols as P
from snnlib.experiments.config import ConfigError, config_hash, load_config, load_yaml


def test_docs_protocols_is_regenerated_exactly():
    assert P.OUT.read_text() == P.render(), "run: python -m snnlib.pipeline.protocols"


def test_every_paper_config_has_a_protocol_with_published_keys_that_exist():
    rows = {r["run"]: r for r in P.rows()}
    paper = [p.stem for p in P.RUNS.glob("*.yaml")
             if p.stem.startswith(("ide_", "spide_cifar", "spide_mnist", "minlat_cnn_cifar", "minlat_rnn_cifar"))
             or p.stem in ("mpis_cifar10", "mpis_cifar100", "mpis_cifar10_released", "mpis_nmnist",
                           "spide_cifar10dvs_convnet")]
    assert paper and set(paper) <= set(rows)
    assert "ide.cifar100.alexnetf.if.T100" in rows["ide_cifar100_alexnetf"]["published"]


def test_the_protocol_section_is_documentation_and_not_hashed():
    path = P.RUNS / "ide_fmnist_f400.yaml"
    cfg = load_config(path)
    other = {**cfg, "protocol": {**cfg["protocol"], "deviations": ["changed text"]}}
    assert config_hash(cfg, "v") == config_hash(other, "v")


def test_bad_protocol_sections_fail_with_clear_errors():
    pub = P.load_published()
    ok = {"source": "x [ref-code]", "published": [], "deviations": []}
    assert P.check_protocol("r", ok, pub) is ok
    with pytest.raises(ConfigError, match="absent from configs/published"):
        P.check_protocol("r", {**ok, "published": ["no.such.key"]}, pub)
    with pytest.raises(ConfigError, match="unknown protocol keys"):
        P.check_protocol("r", {**ok, "deviation": []}, pub)
    with pytest.raises(ConfigError, match="needs 'deviations'"):
        P.check_protocol("r", {"source": "x", "published": []}, pub)


@pytest.mark.parametrize("name", ["ide_cifar10_alexnetf", "ide_cifar100_alexnetf"])
def test_ide_alexnetf_follows_the_reference_script(name):
    cfg = load_config(P.RUNS / f"{name}.yaml")
    assert cfg["model"]["dropout"] == 0.2                      # cifar_alexnetf.py --drop default
    assert cfg["T"] == (100 if "cifar100" in name else 30)      # the README's only CIFAR-100 AlexNet-F T
    assert cfg["method_args"]["stop_mode"] == "abs" and cfg["method_args"]["max_iter"] == 30


def test_spide_paper_configs_use_the_released_scale_recipe():
    for p in P.RUNS.glob("spide_*.yaml"):
        raw = load_yaml(p)
        if "protocol" in raw:
            assert raw["method_args"]["legacy_scale"] is True, p.stem   # effective weight decay wd / s


def test_min_latency_cifar_configs_use_imagenet_statistics():
    for name in ("minlat_cnn_cifar10", "minlat_cnn_cifar100", "minlat_rnn_cifar10", "minlat_rnn_cifar100"):
        d = load_config(P.RUNS / f"{name}.yaml")["data"]
        assert d["mean"] == [0.485, 0.456, 0.406] and d["std"] == [0.229, 0.224, 0.225]
