"""The command line: a user error (bad config or --set value, missing data, unreadable file) prints
its message and a hint, exits with code 2 and shows no traceback unless --debug is given."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snnlib.__main__ import main
from snnlib.experiments.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config(tmp_path):
    """A small synthetic-data run config file."""
    path = tmp_path / "run.yaml"
    path.write_text("name: cli\nmethod: bptt\nmodel: {name: conv_snn, channels: [4]}\n"
                    "data: {name: synthetic, subset: 64, test_subset: 64, batch_size: 32}\nT: 2\n")
    return path


def fails_with(capsys, argv, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "\nhint: " in err and "--debug" in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("items,needle", [
    (["seed=abc"], "config value seed must be an integer"),
    (["epochs=[1,2"], "--set 'epochs=[1,2': the value '[1,2' is not valid YAML"),
    (["data=5"], "'data' is a section"),
    (["grad_clip=-1"], "grad_clip must be a positive finite gradient norm"),
    (["data.test_batch_size=0"], "data.test_batch_size must be a positive integer"),
    (["checkpoint_every=-1"], "checkpoint_every must be a non-negative integer"),
    (["max_iters_per_epoch=0"], "max_iters_per_epoch must be a positive integer"),
    (["optim.lr=1e-3"], "write 1.0e-3"),
])
def test_bad_set_values_exit_2_with_the_message_and_a_hint(capsys, config, tmp_path, items, needle):
    fails_with(capsys, ["train", str(config), "--run-dir", str(tmp_path / "run"), "--set", *items], needle)
    assert not (tmp_path / "run").exists()


def test_the_config_may_follow_the_set_items(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: abc\n")
    # the config was read (its seed is named), not taken as a malformed --set item
    fails_with(capsys, ["train", "--set", "T=2", str(path)], "config value seed must be an integer")
    fails_with(capsys, ["train", "--set", "T=2", "--set", "epochs=1", str(path)], "seed")
    fails_with(capsys, ["train", str(path), "--set", "T=2", "lr"], "--set expects key=value, got 'lr'")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--set", "T=2"])
    assert exit_.value.code == 2 and "required: config" in capsys.readouterr().err


def test_a_missing_config_file_is_named(capsys, tmp_path):
    fails_with(capsys, ["train", str(tmp_path / "nope.yaml")], f"config file not found: {tmp_path / 'nope.yaml'}")


def test_debug_shows_the_traceback(config):
    with pytest.raises(ConfigError, match="seed"):
        main(["train", str(config), "--set", "seed=abc", "--debug"])
    with pytest.raises(ConfigError, match="seed"):
        main(["--debug", "train", str(config), "--set", "seed=abc"])


def test_a_missing_dataset_exits_2_naming_where_it_looked(capsys, data_env, config):
    fails_with(capsys, ["train", str(config), "--run-dir", str(data_env / "run"), "--set", "data.name=cifar10"],
               "dataset 'cifar10' not found", str(data_env / "data"), "SNNLIB_DATA")


def test_a_corrupt_checkpoint_exits_2_naming_the_file(capsys, config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"garbage" * 20)
    err = fails_with(capsys, ["train", str(config), "--run-dir", str(run), "--quiet"],
                     f"{run / 'checkpoint.pt'} cannot be read as a checkpoint", "--no-resume")
    assert "weights_only" not in err


def test_the_process_prints_no_traceback(config):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snnlib", "train", str(config), "--set", "seed=abc"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: config value seed must be an integer") and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 2
