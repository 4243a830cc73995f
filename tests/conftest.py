"""Test session settings and the fixtures several test modules share.

Quiet OpenMP threads: spinning workers make 2-core runs erratic.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def f64():
    """float64 as the default dtype for the test (equivalence checks)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def f64_seeded(f64):
    """float64 default dtype and torch's global seed set to 0."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads make small ops erratic."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    """Isolated data folders: SNNLIB_DATA=tmp/data, repo and cwd inside tmp, Debian folder in tmp, no network;
    the repository's notebooks stay visible."""
    import snnlib.paths
    from snnlib.data import locate
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("SNNLIB_DATA", str(data))
    monkeypatch.delenv("SNNLIB_CACHE", raising=False)
    monkeypatch.setenv("SNNLIB_NOTEBOOKS", str(snnlib.paths.notebooks_dir()))    # the real notebooks
    monkeypatch.setattr(snnlib.paths, "ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(locate, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(locate, "network_available", lambda *a, **k: False)
    return tmp_path
