"""Where things live: the repository root, results, figures and the data folders."""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The snnlib checkout (the folder holding pyproject.toml), else the current directory."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd()


ROOT = repo_root()
#: reproduction scales: notebook defaults (CI), one CPU hour, Fashion-MNIST to a plateau (<= 6 CPU hours,
#: run in pieces), published protocols (a GPU machine)
SCALES = ("smoke", "cpu", "full", "paper")


def notebooks_dir() -> Path:
    """``$SNNLIB_NOTEBOOKS`` or ``<repo>/notebooks``."""
    return Path(os.environ.get("SNNLIB_NOTEBOOKS", ROOT / "notebooks"))


def notebooks() -> list[str]:
    """Notebook names in execution order: every ``NN_name.ipynb``, sorted by its number."""
    return sorted(p.stem for p in notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def results_dir() -> Path:
    """``$SNNLIB_RESULTS`` or ``<repo>/results``: run records, checkpoints, executed notebooks."""
    return Path(os.environ.get("SNNLIB_RESULTS", ROOT / "results"))


def figures_dir(scale: str) -> Path:
    """``<repo>/figures`` for the committed cpu scale, ``<repo>/figures/<scale>`` otherwise."""
    base = Path(os.environ.get("SNNLIB_FIGURES", ROOT / "figures"))
    return base if scale == "cpu" else base / scale


def data_dirs() -> list[Path]:
    """Folders searched for datasets, in order: $SNNLIB_DATA, <repo>/data, ./data."""
    dirs = []
    if os.environ.get("SNNLIB_DATA"):
        dirs.append(Path(os.environ["SNNLIB_DATA"]))
    dirs += [ROOT / "data", Path.cwd() / "data"]
    out = []
    for d in dirs:
        d = d.resolve()
        if d not in out:
            out.append(d)
    return out


DEBIAN_DATASETS = Path("/usr/share/datasets")
