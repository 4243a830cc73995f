"""Where a result came from: code version, git commit, package versions, machine."""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch
import yaml

from ..paths import ROOT, results_dir

PACKAGES = ("torch", "torchvision", "numpy", "tonic", "papermill", "nbval", "pandas", "seaborn")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of every ``snnlib/**/*.py`` source: changes whenever the library code changes."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent.parent
    for p in sorted(pkg.rglob("*.py")):
        h.update(str(p.relative_to(pkg)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


#: a results folder holding this file keeps its records valid across code versions (see ``key_code_version``)
STORE_FILE = "STORE.yaml"


def key_code_version() -> str:
    """The code version that run hashes and memo keys include: ``code_version()``, or ``"any"`` when
    the results folder's ``STORE.yaml`` says ``keys_include_code: false``.

    The full scale keeps its records in the repository (``figures/full/results``) and is run in
    pieces, on different days and machines: a finished run stays finished when the library changes,
    and each record still states the code version that made it (``result.json: code_version``).
    """
    store = results_dir() / STORE_FILE
    if store.is_file():
        with open(store) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict) or not isinstance(data.get("keys_include_code", True), bool):
            raise ValueError(f"{store}: expected a mapping with a boolean 'keys_include_code'")
        if not data.get("keys_include_code", True):
            return "any"
    return code_version()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "snnlib"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }
