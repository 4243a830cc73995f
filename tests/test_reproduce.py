"""``make reproduce`` and ``make data``: the mechanism, on two fixture notebooks and tmp data folders.

An uninterrupted reproduction and one interrupted mid-training (SIGINT, then SIGKILL of the whole
process group, as a user at a terminal would) and restarted end with the same report; a second
reproduction re-runs nothing. Editing a notebook's config re-runs it and the summary notebook, and
the report changes. Missing data stops a reproduction before anything runs, naming every missing
dataset; the data step installs Fashion-MNIST through apt where it can (a fake apt-get here) and
otherwise says what to do.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import papermill
import pytest

from snnlib.__main__ import main
from snnlib.data.fetch import DataMissing
from snnlib.pipeline import reproduce as rep

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"


def _env(tmp: Path, tag: str) -> dict:
    env = dict(os.environ, SNNLIB_NOTEBOOKS=str(FIXTURES), SNNLIB_RESULTS=str(tmp / f"results_{tag}"),
               SNNLIB_FIGURES=str(tmp / f"figures_{tag}"), SNNLIB_REPORT_DATE="2000-01-01",
               OMP_NUM_THREADS="1", PYTHONHASHSEED="0", SNNLIB_HEARTBEAT_S="0.2")
    env.pop("WORLD_SIZE", None)
    return env


CMD = [sys.executable, "-m", "snnlib", "reproduce", "--scale", "smoke", "--quiet"]


def _report(tmp: Path, tag: str) -> str:
    return (tmp / f"figures_{tag}" / "smoke" / "REPORT.md").read_text()


def _without_wall_times(report: str) -> str:
    """The report minus its wall-time lines: minutes measured on a shared machine differ between runs."""
    timing = r"^(Wall time of the last execution|Every execution at|The \d+ training runs in) .*\n\n"
    kept = re.sub(timing, "", report, flags=re.M)
    assert kept != report, "the report no longer states wall times"
    return kept


def test_interrupted_reproduction_resumes_to_the_same_report(tmp_path, monkeypatch):
    subprocess.run(CMD, env=_env(tmp_path, "a"), cwd=ROOT, check=True, timeout=900)
    straight = _report(tmp_path, "a")
    assert "fixture.accuracy" in straight and "fixture.memo" in straight

    env = _env(tmp_path, "b")
    proc = subprocess.Popen(CMD, env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "results_b" / "runs"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if list(runs.glob("*/checkpoint.pt")):      # mid-way through the first training run
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the reproduction ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    assert "Incomplete" in _report(tmp_path, "b")     # written before the first notebook ran, never stale

    subprocess.run(CMD, env=env, cwd=ROOT, check=True, timeout=900)
    resumed = _report(tmp_path, "b")
    assert _without_wall_times(resumed) == _without_wall_times(straight)
    monkeypatch.setenv("SNNLIB_RESULTS", env["SNNLIB_RESULTS"])     # the killed piece's time is accounted
    monkeypatch.setenv("SNNLIB_NOTEBOOKS", env["SNNLIB_NOTEBOOKS"])
    first, second = rep.executions("01_train", "smoke")
    assert first["status"] in ("running", "interrupted") and first["seconds"] > 0 and second["status"] == "done"
    assert "Every execution at smoke scale" in resumed and "`01_train`" in resumed

    again = subprocess.run(CMD, env=env, cwd=ROOT, check=True, timeout=900, capture_output=True, text=True)
    assert again.stderr.count("up to date, skipped") == 2
    assert "running" not in again.stderr


def test_report_shows_published_numbers_with_unit_tag_and_source_when_known():
    from snnlib.pipeline.report import _published
    assert _published({"value": 72.41, "unit": "%", "tag": "ref-readme", "source": "README"}) == \
        "72.41% [ref-readme] README"
    assert _published({"value": 0.9004, "std": 0.002}) == "0.9004 (std=0.002)"      # no empty tag brackets
    assert _published({"cnn": {"value": 1.5, "tag": "derived"}, "rnn": 2}) == "cnn: 1.5 [derived]; rnn: 2"
    assert _published({"saf": 93.54, "ottt": 93.44, "tag": "unverified"}) == "saf: 93.54; ottt: 93.44 [unverified]"
    assert _published(None) == _published({}) == "–"


def _row(report: str, claim: str) -> list[str]:
    line = next(ln for ln in report.splitlines() if f"`{claim}`" in ln)
    return [c.strip() for c in line.split("|")]


@pytest.mark.slow   # four fixture notebooks, each in its own kernel: about 30 s on an idle 2-core machine
def test_editing_a_config_reruns_that_notebook_and_the_summary_and_rewrites_the_report(tmp_path):
    configs = tmp_path / "configs"
    (configs / "01_train").mkdir(parents=True)
    (configs / "02_summary").mkdir()
    (configs / "01_train" / "cpu.yaml").write_text("EPOCHS: 1\n")
    (configs / "02_summary" / "cpu.yaml").write_text("# no parameters\n")
    env = dict(_env(tmp_path, "c"), SNNLIB_CONFIGS=str(configs))
    cmd = [sys.executable, "-m", "snnlib", "reproduce", "--scale", "cpu", "--quiet"]
    report = tmp_path / "figures_c" / "REPORT.md"                 # cpu scale: the figures folder itself

    subprocess.run(cmd, env=env, cwd=ROOT, check=True, timeout=900)
    first = report.read_text()
    assert "1" in _row(first, "fixture.epochs") and "All 2 notebooks are current" in first

    (configs / "01_train" / "cpu.yaml").write_text("EPOCHS: 2\n")
    again = subprocess.run(cmd, env=env, cwd=ROOT, check=True, timeout=900, capture_output=True, text=True)
    assert "01_train: running" in again.stderr and "02_summary: running" in again.stderr
    second = report.read_text()
    assert "2" in _row(second, "fixture.epochs") and "All 2 notebooks are current" in second


def test_a_summary_notebook_is_stale_when_an_earlier_notebook_reran(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNLIB_NOTEBOOKS", str(FIXTURES))
    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path))
    assert rep.upstream("02_summary") == ["01_train"] and rep.upstream("01_train") == []
    for nb in ("01_train", "02_summary"):
        rep.write_json(rep._done_path(nb, "smoke"), {"key": rep.notebook_key(nb, "smoke"), "seconds": 1.0})
    assert rep.stale(rep.notebooks(), "smoke") == []
    rerun = {"key": rep.notebook_key("01_train", "smoke"), "seconds": 2.0}
    rep.write_json(rep._done_path("01_train", "smoke"), rerun)
    assert rep.stale(rep.notebooks(), "smoke") == ["02_summary"]
    assert "**Incomplete: 1 of 2 notebooks is not current at smoke scale**: `02_summary` (changed since it ran)" \
        in rep.status_markdown("smoke")


@pytest.mark.parametrize("nb", rep.notebooks())
def test_papermill_reads_every_parameter_of_each_notebook_and_every_scale_sets_only_those(nb, caplog):
    """A comment papermill cannot parse (e.g. one holding `x = 1`) hides its parameter: papermill
    then warns "unknown parameter" at every execution, and a misspelt scale key would go unnoticed."""
    import papermill as pm
    with caplog.at_level("WARNING"):
        names = set(pm.inspect_notebook(str(ROOT / "notebooks" / f"{nb}.ipynb")))
    assert "Unable to parse" not in caplog.text
    for scale in ("cpu", "full", "paper"):
        assert set(rep.notebook_params(nb, scale)) <= names, f"configs/{nb}/{scale}.yaml sets unknown parameters"


def test_each_scale_needs_the_datasets_its_configs_name():
    for scale in ("smoke", "cpu"):            # 04 names CIFAR configs at cpu scale only to count their parameters
        assert rep.scale_datasets(scale) == {"fashion_mnist": rep.notebooks(),
                                             "fashion_mnist_dvs": ["01_ide_mpis"]}   # converted from fashion_mnist
    paper = rep.scale_datasets("paper")
    assert set(paper) == {"fashion_mnist", "fashion_mnist_dvs", "mnist", "nmnist", "cifar10", "cifar100",
                          "cifar10dvs"}
    assert paper["nmnist"] == ["01_ide_mpis"] and "04_min_latency" in paper["cifar100"]


@pytest.fixture
def no_results(tmp_path, monkeypatch, data_env):
    """The real notebooks, empty results and figures folders, no data anywhere, nothing may execute."""
    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("SNNLIB_FIGURES", str(tmp_path / "figures"))

    def execute(nb, *a, **k):
        raise AssertionError(f"{nb} started although its data is missing")
    monkeypatch.setattr(rep, "execute", execute)
    return tmp_path


@pytest.mark.parametrize("scale, missing", [
    ("smoke", ["fashion_mnist"]),
    ("paper", ["cifar10", "cifar100", "cifar10dvs", "fashion_mnist", "mnist", "nmnist"]),
])
def test_reproduce_names_every_missing_dataset_before_running_anything(no_results, scale, missing):
    with pytest.raises(DataMissing) as err:
        rep.reproduce(scale)
    msg = str(err.value)
    assert f"{len(missing)} dataset(s) missing: {', '.join(missing)}." in msg
    assert "fashion_mnist: 00_quickstart, 01_ide_mpis" in msg and f"make data SCALE={scale}" in msg
    assert not (no_results / "figures").exists()


def _fake_apt(tmp_path: Path, monkeypatch) -> Path:
    """A PATH holding only an ``apt-get`` that logs its arguments and, on install, writes the
    Debian package's four files into the (tmp) Debian folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(f"""#!{sys.executable}
import os, sys, pathlib
with open(os.environ["FAKE_APT_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if "install" in sys.argv:
    d = pathlib.Path(os.environ["FAKE_DEBIAN"]) / "fashion-mnist"
    d.mkdir(parents=True, exist_ok=True)
    for f in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        (d / (f + "-ubyte.gz")).write_bytes(b"")
""")
    apt.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_APT_LOG", str(tmp_path / "apt.log"))
    monkeypatch.setenv("FAKE_DEBIAN", str(tmp_path / "debian"))
    return tmp_path / "apt.log"


def test_data_step_installs_the_debian_package_as_root_then_is_a_no_op(data_env, monkeypatch, capsys):
    log = _fake_apt(data_env, monkeypatch)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert main(["data", "--scale", "smoke"]) == 0
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq --reinstall dataset-fashion-mnist"]
    assert capsys.readouterr().out == f"fashion_mnist: {data_env / 'debian' / 'fashion-mnist'}\n"
    assert main(["data", "--scale", "smoke"]) == 0
    assert len(log.read_text().splitlines()) == 2               # present now: apt is not called again


@pytest.mark.parametrize("apt, says", [
    ("absent", "apt-get is not available on this machine"),
    ("not root", "sudo apt-get install -y dataset-fashion-mnist"),
])
def test_data_step_without_apt_or_network_says_what_to_do(data_env, monkeypatch, capsys, apt, says):
    log = _fake_apt(data_env, monkeypatch)
    if apt == "absent":
        monkeypatch.setenv("PATH", str(data_env / "data"))       # a folder without apt-get
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["data", "--scale", "smoke"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("1 dataset(s) missing: fashion_mnist.") and says in err
    assert "apt-get install dataset-fashion-mnist" in err and "FashionMNIST/raw/" in err
    assert "download not possible" in err and not log.exists()


def test_a_store_that_leaves_the_code_out_keeps_finished_notebooks_current_when_the_library_changes(tmp_path, monkeypatch):
    """The full scale's results folder (STORE.yaml: keys_include_code false) is run in pieces: a notebook
    that finished stays current when the library changes, as its finished runs stay finished."""
    from snnlib.experiments import provenance
    monkeypatch.setenv("SNNLIB_NOTEBOOKS", str(FIXTURES))
    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path))
    monkeypatch.setattr(provenance, "code_version", lambda: "code-a")
    before = rep.notebook_key("01_train", "smoke")
    monkeypatch.setattr(provenance, "code_version", lambda: "code-b")
    assert rep.notebook_key("01_train", "smoke") != before        # no STORE.yaml: the code counts
    (tmp_path / provenance.STORE_FILE).write_text("keys_include_code: false\n")
    kept = rep.notebook_key("01_train", "smoke")
    monkeypatch.setattr(provenance, "code_version", lambda: "code-a")
    assert rep.notebook_key("01_train", "smoke") == kept


def test_a_notebook_edited_while_it_runs_is_not_current_afterwards(tmp_path, monkeypatch):
    """The completion record holds the key of the source that ran: an edit made during a long execution
    (a fix for the next piece) leaves the notebook to run again, rather than marking the old output current."""
    books = tmp_path / "notebooks"
    shutil.copytree(FIXTURES, books)
    monkeypatch.setenv("SNNLIB_NOTEBOOKS", str(books))
    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path / "results"))

    def edit_while_running(src, out, **kwargs):
        (books / "01_train.ipynb").write_text((books / "01_train.ipynb").read_text().replace("}", "} ", 1))
        shutil.copy(src, out)

    monkeypatch.setattr(papermill, "execute_notebook", edit_while_running)
    rep.execute("01_train", "smoke", log_output=False)
    assert rep._done("01_train", "smoke") is not None
    assert not rep.is_current("01_train", "smoke")
