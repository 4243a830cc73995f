"""``make reproduce`` is incremental and resumable: the mechanism, on two fixture notebooks.

An uninterrupted reproduction and one interrupted mid-training (SIGINT, then SIGKILL of the whole
process group, as a user at a terminal would) and restarted end with the same report; a second
reproduction re-runs nothing.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"


def _env(tmp: Path, tag: str) -> dict:
    env = dict(os.environ, SNNLIB_NOTEBOOKS=str(FIXTURES), SNNLIB_RESULTS=str(tmp / f"results_{tag}"),
               SNNLIB_FIGURES=str(tmp / f"figures_{tag}"), SNNLIB_REPORT_DATE="2000-01-01",
               OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("WORLD_SIZE", None)
    return env


CMD = [sys.executable, "-m", "snnlib", "reproduce", "--scale", "smoke", "--quiet"]


def _report(tmp: Path, tag: str) -> str:
    return (tmp / f"figures_{tag}" / "smoke" / "REPORT.md").read_text()


def test_interrupted_reproduction_resumes_to_the_same_report(tmp_path):
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
    assert not (tmp_path / "figures_b" / "smoke" / "REPORT.md").exists()

    subprocess.run(CMD, env=env, cwd=ROOT, check=True, timeout=900)
    assert _report(tmp_path, "b") == straight

    again = subprocess.run(CMD, env=env, cwd=ROOT, check=True, timeout=900, capture_output=True, text=True)
    assert again.stderr.count("up to date, skipped") == 2
    assert "running" not in again.stderr


def test_report_shows_published_numbers_with_unit_tag_and_source_when_known():
    from snnlib.experiments.report import _published
    assert _published({"value": 72.41, "unit": "%", "tag": "ref-readme", "source": "README"}) == \
        "72.41% [ref-readme] README"
    assert _published({"value": 0.9004, "std": 0.002}) == "0.9004 (std=0.002)"      # no empty tag brackets
    assert _published({"cnn": {"value": 1.5, "tag": "derived"}, "rnn": 2}) == "cnn: 1.5 [derived]; rnn: 2"
    assert _published({"saf": 93.54, "ottt": 93.44, "tag": "unverified"}) == "saf: 93.54; ottt: 93.44 [unverified]"
    assert _published(None) == _published({}) == "–"
