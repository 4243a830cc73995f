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


def test_every_committed_full_record_is_still_found_by_its_config(monkeypatch):
    """A change of the config schema (a new key with a default, a changed default) changes every run's
    hash and silently retrains the whole full scale: each committed record's config, resolved by today's
    code, must hash to the folder it sits in (new keys that change no result go in UNHASHED_KEYS)."""
    import json
    store = rep.RESULTS_OF_SCALE["full"]
    monkeypatch.setenv("SNNLIB_RESULTS", str(store))
    records = sorted(store.glob("runs/*/result.json"))
    assert records, "no committed full-scale records to check"
    moved = []
    for path in records:
        rec = json.loads(path.read_text())
        if config.config_hash(config.resolve(rec["config"])) != rec["config_hash"]:
            moved.append(path.parent.name)
    assert not moved, f"{len(moved)} committed full-scale runs would retrain: {moved[:5]}"
