"""``make reproduce``: execute every notebook with papermill at one scale, incrementally.

Each notebook runs with the parameters in ``configs/<notebook>/<scale>.yaml`` (smoke: the
notebook's own defaults) and writes ``results/<notebook>/<scale>/<notebook>.ipynb``.
A notebook whose source, parameters and library code are unchanged since its last
successful execution is skipped; inside a notebook every training run and measurement is
cached too, so an interrupted reproduction resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from ..paths import ROOT, results_dir
from .config import canonical_json, load_yaml
from .io import read_json, write_json
from .provenance import code_version

SCALES = ("smoke", "cpu", "paper")
#: rough minutes per notebook at cpu scale, for the first estimate before any run is timed
FIRST_GUESS_MIN = {"smoke": 1.0, "cpu": 10.0, "paper": 600.0}


def notebooks_dir() -> Path:
    """``$SNNLIB_NOTEBOOKS`` or ``<repo>/notebooks``."""
    return Path(os.environ.get("SNNLIB_NOTEBOOKS", ROOT / "notebooks"))


def notebooks() -> list[str]:
    """Notebook names in execution order: every ``NN_name.ipynb``, sorted by its number."""
    return sorted(p.stem for p in notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def notebook_params(nb: str, scale: str) -> dict:
    path = ROOT / "configs" / nb / f"{scale}.yaml"
    params = load_yaml(path) if path.exists() else {}
    if scale != "smoke" and not path.exists():
        raise FileNotFoundError(f"no parameters for {nb} at scale {scale!r}: expected {path}")
    params["SCALE"] = scale
    return params


def notebook_key(nb: str, params: dict) -> str:
    src = (notebooks_dir() / f"{nb}.ipynb").read_bytes()
    h = hashlib.sha256(src + canonical_json(params).encode() + code_version().encode())
    return h.hexdigest()[:16]


def _done_path(nb: str, scale: str) -> Path:
    return results_dir() / nb / scale / "done.json"


def is_current(nb: str, scale: str) -> bool:
    p = _done_path(nb, scale)
    return p.exists() and read_json(p).get("key") == notebook_key(nb, notebook_params(nb, scale))


def execute(nb: str, scale: str, *, log_output: bool = True) -> float:
    """Run one notebook with papermill; returns its duration in seconds."""
    import papermill as pm
    params = notebook_params(nb, scale)
    out_dir = results_dir() / nb / scale
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{nb}.ipynb"
    tmp = out_dir / f".{nb}.running.ipynb"
    t0 = time.perf_counter()
    env_threads = os.environ.get("OMP_NUM_THREADS")
    try:
        pm.execute_notebook(str(notebooks_dir() / f"{nb}.ipynb"), str(tmp), parameters=params,
                            kernel_name="python3", cwd=str(notebooks_dir()), log_output=log_output,
                            progress_bar=False)
    except BaseException:
        if tmp.exists():
            os.replace(tmp, out_dir / f"{nb}.failed.ipynb")
        raise
    os.replace(tmp, out)
    dur = time.perf_counter() - t0
    write_json(_done_path(nb, scale), {"key": notebook_key(nb, params), "seconds": dur, "scale": scale,
                                       "threads": env_threads})
    return dur


def reproduce(scale: str = "cpu", only: list[str] | None = None, *, log_output: bool = True) -> None:
    """Execute the notebooks in order, skipping the current ones, with progress and an estimate."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    nbs = notebooks()
    if only:
        unknown = set(only) - set(nbs)
        if unknown:
            raise ValueError(f"unknown notebooks {sorted(unknown)}; available: {nbs}")
        nbs = [n for n in nbs if n in only]
    t0 = time.perf_counter()
    for i, nb in enumerate(nbs):
        todo = [n for n in nbs[i:] if not is_current(n, scale)]
        est = 0.0
        for n in todo:
            p = _done_path(n, scale)
            est += read_json(p)["seconds"] / 60 if p.exists() else FIRST_GUESS_MIN[scale]
        head = f"[reproduce {scale} {i + 1}/{len(nbs)}] {nb}"
        if nb not in todo:
            print(f"{head}: up to date, skipped", file=sys.stderr, flush=True)
            continue
        print(f"{head}: running (elapsed {(time.perf_counter() - t0) / 60:.1f} min, "
              f"about {est:.0f} min left)", file=sys.stderr, flush=True)
        dur = execute(nb, scale, log_output=log_output)
        print(f"{head}: done in {dur / 60:.1f} min", file=sys.stderr, flush=True)
    print(f"[reproduce {scale}] finished in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr, flush=True)
