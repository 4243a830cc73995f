"""Run configs: YAML through safe_load, unknown keys named with a suggestion, overrides."""
import pytest

from snnlib.experiments.config import ConfigError, config_hash, load_config, parse_set, resolve
from snnlib.methods import build_method
from snnlib.models import build_model


def test_defaults_resolve_and_hash_is_stable():
    a, b = resolve({}), resolve({"T": 4})
    assert a == b and config_hash(a) == config_hash(b)
    assert config_hash(resolve({"T": 8})) != config_hash(a)


@pytest.mark.parametrize("cfg,match", [
    ({"epoch": 3}, "unknown config key 'epoch'.*'epochs'"),
    ({"optim": {"learning_rate": 0.1}}, "optim.'learning_rate'"),
    ({"data": {"batchsize": 3}}, "'batch_size'"),
    ({"T": 0}, "T must be a positive integer"),
    ({"T": -3}, "T must be a positive integer"),
    ({"T": 2.5}, "T must be a positive integer"),
    ({"dtype": "float16"}, "dtype"),
    ({"model": {"channels": [3]}}, "model.*name"),
])
def test_bad_configs_are_named(cfg, match):
    with pytest.raises(ConfigError, match=match):
        resolve(cfg)


def test_set_overrides_parse_yaml_values_and_check_keys():
    cfg = resolve({}, parse_set(["optim.lr=0.05", "T=8", "model.channels=[8, 16]", "data.subset=100"]))
    assert cfg["optim"]["lr"] == 0.05 and cfg["T"] == 8 and cfg["data"]["subset"] == 100
    with pytest.raises(ConfigError, match="unknown config key 'opt'"):
        resolve({}, parse_set(["opt.lr=1"]))
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["lr"])


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("T: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(Exception, match="could not determine a constructor|ConstructorError|python/object"):
        load_config(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_unknown_model_and_method_and_arguments_are_named():
    with pytest.raises(ConfigError, match="unknown model 'conv_sn'.*'conv_snn'"):
        build_model({"name": "conv_sn"})
    with pytest.raises(ConfigError, match="no argument 'chanels'.*'channels'"):
        build_model({"name": "conv_snn", "chanels": [4]})
    net = build_model({"name": "conv_snn", "channels": [4]})
    with pytest.raises(ConfigError, match="unknown method 'bpt'"):
        build_method("bpt", net, T=2)
    with pytest.raises(ConfigError, match="no argument 'los'"):
        build_method("bptt", net, T=2, los="ce_mean")
    with pytest.raises(ValueError, match="T must be"):
        build_method("bptt", net, T=0)
