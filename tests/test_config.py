"""Run configs: YAML through safe_load, unknown keys named with a suggestion, overrides."""
import pytest

from snnlib.experiments.config import ConfigError, config_hash, load_config, parse_set, resolve
from snnlib.methods import build_method
from snnlib.models import build_model


def test_defaults_resolve_and_hash_is_stable():
    a, b = resolve({}), resolve({"T": 4})
    assert a == b and config_hash(a) == config_hash(b)
    assert config_hash(resolve({"T": 8})) != config_hash(a)


def test_documentation_and_float_flushing_leave_the_run_hash_alone():
    """A run made before ``flush_denormal`` existed keeps its hash, so committed full-scale records stay valid."""
    a = resolve({})
    before_the_key = {k: v for k, v in a.items() if k != "flush_denormal"}
    assert config_hash(resolve({"flush_denormal": False})) == config_hash(a) == config_hash(before_the_key)
    assert config_hash(resolve({"protocol": {"deviations": ["x"]}})) == config_hash(a)
    assert config_hash(resolve({"deterministic": False})) != config_hash(a)


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


@pytest.mark.parametrize("value", [-1, 0, 0.0, -0.5, "abc", True, float("inf"), [1]])
def test_grad_clip_must_be_a_positive_finite_norm(value):
    with pytest.raises(ConfigError, match="grad_clip must be a positive finite gradient norm or null"):
        resolve({"grad_clip": value})
    assert resolve({"grad_clip": 0.5})["grad_clip"] == 0.5 and resolve({"grad_clip": None})["grad_clip"] is None


@pytest.mark.parametrize("cfg,match", [
    ({"seed": "abc"}, r"seed must be an integer .* got 'abc' \(str\)"),
    ({"seed": -1}, "seed must be an integer"),
    ({"eval_seed": 1.5}, "eval_seed must be an integer"),
    ({"epochs": -1}, "epochs must be a non-negative integer"),
    ({"epochs": True}, "epochs must be a non-negative integer"),
    ({"max_iters_per_epoch": 0}, "max_iters_per_epoch must be a positive integer or null"),
    ({"checkpoint_every": -1}, "checkpoint_every must be a non-negative integer"),
    ({"threads": 0}, "threads must be a positive integer or null"),
    ({"flush_denormal": "yes"}, "flush_denormal must be true or false"),
    ({"data": {"test_batch_size": 0}}, "data.test_batch_size must be a positive integer"),
    ({"data": {"batch_size": 2.0}}, "data.batch_size must be a positive integer"),
    ({"data": {"subset": 0}}, "data.subset must be a positive integer"),
    ({"data": {"num_workers": -1}}, "data.num_workers must be a non-negative integer"),
    ({"data": {"augment": "yes"}}, "data.augment must be true, false or null"),
    ({"data": 5}, "config section 'data' must be a mapping"),
    ({"optim": {"lr": 0}}, "optim.lr must be a positive finite number"),
    ({"optim": {"lr": "1e-3"}}, "optim.lr .* YAML reads numbers like 1e-3 as strings; write 1.0e-3"),
    ({"optim": {"momentum": -0.1}}, "optim.momentum must be a non-negative"),
    ({"optim": {"betas": [0.9]}}, r"optim.betas must be a list of two numbers in \[0, 1\)"),
    ({"optim": {"name": "sgdd"}}, "optim.name must be one of sgd, adam, adamw"),
    ({"schedule": {"name": "cos"}}, "schedule.name must be one of constant, cosine, step"),
    ({"schedule": {"milestones": [1, -2]}}, "schedule.milestones must be a list of non-negative integer"),
    ({"schedule": {"gamma": 0}}, "schedule.gamma must be a positive finite number"),
    ({"deterministic": "yes"}, "deterministic must be true or false"),
    ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:<index>"),
    ({"method": 3}, "method must be a method name"),
    ({"method_args": [1]}, "method_args must be a mapping"),
])
def test_every_default_value_is_checked_for_type_and_range(cfg, match):
    with pytest.raises(ConfigError, match=match):
        resolve(cfg)


def test_the_optimizer_and_schedule_names_are_those_the_trainer_builds():
    from snnlib.experiments import config
    from snnlib.train import setup
    assert config.OPTIMIZERS == setup.OPTIMIZERS and config.SCHEDULES == setup.SCHEDULES


def test_every_shipped_run_config_passes_validation():
    from pathlib import Path
    runs = sorted((Path(__file__).resolve().parents[1] / "configs" / "runs").glob("*.yaml"))
    assert runs
    for path in runs:
        load_config(path)


@pytest.mark.parametrize("items,match", [
    (["epochs=[1,2"], r"--set 'epochs=\[1,2': the value '\[1,2' is not valid YAML"),
    (["data=5"], "--set data=5: 'data' is a section .*--set data.batch_size="),
    (["model=conv_snn"], "'model' is a section"),
    (["seed=abc"], r"seed must be an integer .* got 'abc' \(str\)"),
    (["optim..lr=1"], "empty key name"),
])
def test_bad_set_items_are_named(items, match):
    with pytest.raises(ConfigError, match=match):
        resolve({}, parse_set(items))


def test_empty_sections_mean_defaults():
    assert resolve({"data": None, "method_args": None}) == resolve({})
    assert resolve({}, parse_set(["method_args=null"]))["method_args"] == {}
