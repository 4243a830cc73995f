"""The full scale keeps its records in the repository: a folder with ``STORE.yaml`` saying
``keys_include_code: false`` keys runs and memos by config alone, so finished runs survive code changes."""
from __future__ import annotations

import pytest

from snnlib.experiments import cache, config, provenance
from snnlib.pipeline import reproduce as rep
from snnlib.paths import ROOT


def _use(tmp_path, monkeypatch, store: str | None):
    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path))
    if store is not None:
        (tmp_path / provenance.STORE_FILE).write_text(store)


def _with_code(monkeypatch, version: str):
    monkeypatch.setattr(provenance, "code_version", lambda: version)


def test_an_ordinary_results_folder_keys_runs_by_config_and_code(tmp_path, monkeypatch):
    _use(tmp_path, monkeypatch, None)
    _with_code(monkeypatch, "aaa")
    before = config.config_hash({"seed": 1}), cache.memo_path("m", {"x": 1})
    _with_code(monkeypatch, "bbb")
    after = config.config_hash({"seed": 1}), cache.memo_path("m", {"x": 1})
    assert before[0] != after[0] and before[1] != after[1]


def test_a_store_folder_keeps_its_records_across_code_versions(tmp_path, monkeypatch):
    _use(tmp_path, monkeypatch, "keys_include_code: false\n")
    _with_code(monkeypatch, "aaa")
    before = config.config_hash({"seed": 1}), cache.memo_path("m", {"x": 1})
    _with_code(monkeypatch, "bbb")
    assert (config.config_hash({"seed": 1}), cache.memo_path("m", {"x": 1})) == before
    assert config.config_hash({"seed": 2}) != before[0]           # the config still decides


def test_a_malformed_store_file_is_refused_by_name(tmp_path, monkeypatch):
    _use(tmp_path, monkeypatch, "keys_include_code: maybe\n")
    with pytest.raises(ValueError, match="STORE.yaml"):
        provenance.key_code_version()


def test_the_full_scale_uses_the_committed_store(monkeypatch):
    store = rep.RESULTS_OF_SCALE["full"]
    assert store == ROOT / "figures" / "full" / "results"
    assert "keys_include_code: false" in (store / provenance.STORE_FILE).read_text()
    ignored = (ROOT / ".gitignore").read_text()
    assert "/figures/full/results/**/*.pt" in ignored            # records yes, checkpoints no
