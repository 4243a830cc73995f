"""``make reproduce``: execute every notebook with papermill at one scale, incrementally, then write
the claims report.

Each notebook runs with the parameters in ``configs/<notebook>/<scale>.yaml`` (smoke: the
notebook's own defaults) and writes ``results/<notebook>/<scale>/<notebook>.ipynb``.
A notebook whose source, parameters and library code are unchanged since its last
successful execution is skipped; a ``*_summary`` notebook, which reads the others' results, also
re-runs whenever an earlier notebook re-ran. Inside a notebook every training run and
measurement is cached too, so an interrupted reproduction resumes where it stopped.

Before anything runs, the datasets the notebooks to run need (read from their parameters, the run
configs those name, and the notebooks' code) are checked, all at once. ``REPORT.md`` is written
from every notebook's ledger by this module, at the start when something is to run (saying which
notebooks are not current) and at the end, so it never silently describes older results.
"""
from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import json
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..data.fetch import DataMissing, ensure
from ..data.registry import dataset_names
from ..paths import ROOT, SCALES, notebooks, notebooks_dir, results_dir
from ..experiments.config import DEFAULTS, canonical_json, load_yaml
from ..experiments.io import read_json, write_json
from ..experiments.provenance import code_version, key_code_version
from .publish import publish_notebooks
from .report import write_report

#: rough minutes per notebook at cpu scale, for the first estimate before any run is timed
FIRST_GUESS_MIN = {"smoke": 1.0, "cpu": 10.0, "full": 60.0, "paper": 600.0}
#: where each scale keeps its results when $SNNLIB_RESULTS is not set (None: ``results/``). The full
#: scale's records are committed (checkpoints aside) so that a later run continues where one stopped.
RESULTS_OF_SCALE = {"full": ROOT / "figures" / "full" / "results"}
#: seconds between updates of a running execution's entry in ``executions.json`` (a killed
#: reproduction loses at most this much of its accounted time); ``$SNNLIB_HEARTBEAT_S`` overrides it
HEARTBEAT_S = 30.0
#: notebooks named ``NN_<...>_summary`` read every earlier notebook's results
SUMMARY_SUFFIX = "_summary"
#: parameters that name run configs the notebook only inspects (parameter counts), never trains
INSPECT_ONLY = {"04_min_latency": ("PAPER_RUNS",)}
#: a notebook parameter that, when true, makes the notebook train every ``RUNS.glob("...")`` of its code
GLOB_SWITCH = "PAPER_CONFIGS"
STUDY_BATCH_DEFAULT = "fashion_mnist"       # ``Study.batch``'s default dataset

_YAML_LITERAL = re.compile(r"""["']([\w./-]+\.yaml)["']""")
_GLOB_LITERAL = re.compile(r"""\.glob\(\s*["']([\w.*?/-]+\.yaml)["']""")
_GET_DATASET = re.compile(r"""get_dataset\(\s*["'](\w+)["']""")
_STUDY_CONFIG = re.compile(r"""\bnb\.config\(\s*["']([\w-]+)["']""")     # Study.config("<run config>", ...)
_STUDY_BATCH = re.compile(r"""\bnb\.batch\(([^)]*)\)""")                  # Study.batch(n, dataset="...")
_STUDY_IMPORT = re.compile(r"""^\s*(?:from\s+snnlib\.studies\s+import\s+(\w+)|import\s+snnlib\.studies\.(\w+))""", re.M)
_DATASET_KW = re.compile(r"""dataset\s*=\s*["'](\w+)["']""")


def configs_dir() -> Path:
    """``$SNNLIB_CONFIGS`` or ``<repo>/configs``: the notebooks' scale parameters and the run configs."""
    return Path(os.environ.get("SNNLIB_CONFIGS", ROOT / "configs"))


def notebook_params(nb: str, scale: str) -> dict:
    """The papermill parameters of ``nb`` at ``scale`` (smoke: none but ``SCALE``)."""
    path = configs_dir() / nb / f"{scale}.yaml"
    if scale != "smoke" and not path.exists():
        raise FileNotFoundError(f"no parameters for {nb} at scale {scale!r}: expected {path}")
    params = load_yaml(path) if path.exists() else {}
    params["SCALE"] = scale
    return params


def _code_cells(nb: str) -> list[tuple[bool, str]]:
    """(is the parameters cell, source) of every code cell of ``nb``."""
    path = notebooks_dir() / f"{nb}.ipynb"
    try:
        cells = json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is not a readable notebook: {err}") from err
    out = []
    for c in cells:
        if c.get("cell_type") == "code":
            src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            out.append(("parameters" in c.get("metadata", {}).get("tags", []), src))
    return out


def notebook_defaults(nb: str) -> dict:
    """The notebook's own (smoke) values: every ``NAME = <literal>`` of its parameters cell."""
    out = {}
    for is_params, src in _code_cells(nb):
        if not is_params:
            continue
        for node in ast.parse(src).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    out[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return out


def _run_config(ref: str) -> Path | None:
    """The run config ``ref`` names (``configs/runs/x.yaml``, ``x.yaml`` or ``x``), if there is one."""
    runs = configs_dir() / "runs"
    if ref.endswith(".yaml"):
        if Path(ref).parent.name not in ("", "runs"):
            return None
        path = runs / Path(ref).name
    elif re.fullmatch(r"[\w-]+", ref):
        path = runs / f"{ref}.yaml"
    else:
        return None
    return path if path.is_file() else None


def _data_name(run_config: Path) -> str:
    return (load_yaml(run_config).get("data") or {}).get("name", DEFAULTS["data"]["name"])


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def needed_datasets(nb: str, scale: str) -> set[str]:
    """Datasets ``nb`` loads at ``scale``: every dataset name and run config (its ``data.name``) among
    its parameters (the scale's YAML over the parameters cell; not ``INSPECT_ONLY``), the run configs
    and ``get_dataset("...")`` literals of its code, and its ``RUNS.glob("...")`` when ``GLOB_SWITCH``."""
    params = {**notebook_defaults(nb), **notebook_params(nb, scale)}
    known = set(dataset_names())
    out: set[str] = set()

    def add(ref: str) -> None:
        if ref in known:
            out.add(ref)
        elif (path := _run_config(ref)) is not None:
            out.add(_data_name(path))

    for key, value in params.items():
        if key not in INSPECT_ONLY.get(nb, ()):
            for s in _strings(value):
                add(s)
    code = "\n".join(src for is_params, src in _code_cells(nb) if not is_params)
    for ref in _YAML_LITERAL.findall(code) + _STUDY_CONFIG.findall(code):
        add(ref)
    out.update(n for n in _GET_DATASET.findall(code) if n in known)
    for args in _STUDY_BATCH.findall(code):
        m = _DATASET_KW.search(args)
        add(m.group(1) if m else STUDY_BATCH_DEFAULT)
    if params.get(GLOB_SWITCH):
        for pattern in _GLOB_LITERAL.findall(code + "\n" + _study_sources(code)):
            out.update(_data_name(p) for p in sorted((configs_dir() / "runs").glob(pattern)))
    return out


def _study_sources(code: str) -> str:
    """Source of the ``snnlib.studies`` modules a notebook's ``code`` imports (where its config globs live)."""
    root = Path(__file__).resolve().parent.parent / "studies"
    names = {a or b for a, b in _STUDY_IMPORT.findall(code)} - {"Study"}
    return "\n".join((root / f"{n}.py").read_text() for n in sorted(names) if (root / f"{n}.py").is_file())


def scale_datasets(scale: str, nbs: list[str] | None = None) -> dict[str, list[str]]:
    """Dataset -> the notebooks (``nbs``, default all) that need it at ``scale``."""
    need: dict[str, list[str]] = {}
    for nb in notebooks() if nbs is None else nbs:
        for name in sorted(needed_datasets(nb, scale)):
            need.setdefault(name, []).append(nb)
    return dict(sorted(need.items()))


def upstream(nb: str) -> list[str]:
    """The notebooks whose results ``nb`` reads: every earlier one for a summary notebook, else none."""
    if not nb.endswith(SUMMARY_SUFFIX):
        return []
    return [n for n in notebooks() if n < nb]


def _done_path(nb: str, scale: str) -> Path:
    return results_dir() / nb / scale / "done.json"


def _done(nb: str, scale: str) -> dict | None:
    p = _done_path(nb, scale)
    return read_json(p) if p.exists() else None


def notebook_key(nb: str, scale: str) -> str:
    """Hash of the notebook's source, parameters, the library code and, for a summary notebook, the
    completion records of the notebooks it reads (each re-execution writes a new one).

    The library code counts as run hashes and memo keys count it (``key_code_version``): a results
    folder whose ``STORE.yaml`` leaves the code out (the full scale, run in pieces) keeps a finished
    notebook current when the library changes, as it keeps its finished runs; its completion record
    still names the code version that ran it."""
    src = (notebooks_dir() / f"{nb}.ipynb").read_bytes()
    h = hashlib.sha256(src + canonical_json(notebook_params(nb, scale)).encode() + key_code_version().encode())
    for n in upstream(nb):
        h.update(f"\0{n}\0{canonical_json(_done(n, scale))}".encode())
    return h.hexdigest()[:16]


def is_current(nb: str, scale: str) -> bool:
    done = _done(nb, scale)
    return done is not None and done.get("key") == notebook_key(nb, scale)


def stale(nbs: list[str], scale: str) -> list[str]:
    """The notebooks of ``nbs`` that will run: not current, or a summary whose sources will re-run."""
    out: list[str] = []
    for nb in nbs:
        if not is_current(nb, scale) or set(upstream(nb)) & set(out):
            out.append(nb)
    return out


def _executions_path(nb: str, scale: str) -> Path:
    return results_dir() / nb / scale / "executions.json"


def executions(nb: str, scale: str) -> list[dict]:
    """Every execution of ``nb`` at ``scale`` in this results folder, oldest first: ``started`` (UTC),
    ``seconds`` (wall time, updated while it runs), ``status`` (running, done, failed, interrupted; an
    entry left at running was killed), ``load`` (1-min load average when last updated)."""
    p = _executions_path(nb, scale)
    return list(read_json(p)) if p.exists() else []


@contextmanager
def _accounted(nb: str, scale: str):
    """Log this execution in ``executions.json``: an entry written at the start, its wall time updated
    every ``HEARTBEAT_S`` seconds from a background thread and at the end (status done or failed)."""
    path = _executions_path(nb, scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = executions(nb, scale)
    entry = {"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "seconds": 0.0,
             "status": "running", "load": None}
    log.append(entry)
    t0 = time.perf_counter()
    lock = threading.Lock()

    def update(status: str | None = None) -> None:
        with lock:
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            entry["load"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
            if status:
                entry["status"] = status
            write_json(path, log)

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(float(os.environ.get("SNNLIB_HEARTBEAT_S", HEARTBEAT_S))):
            update()

    update()
    thread = threading.Thread(target=beat, name=f"heartbeat-{nb}", daemon=True)
    thread.start()
    status = "failed"
    try:
        yield
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        stop.set()
        thread.join()
        update(status)


def execute(nb: str, scale: str, *, log_output: bool = True) -> float:
    """Run one notebook with papermill; returns its duration in seconds."""
    import papermill as pm
    params = notebook_params(nb, scale)
    out_dir = results_dir() / nb / scale
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{nb}.ipynb"
    tmp = out_dir / f".{nb}.running.ipynb"
    key = notebook_key(nb, scale)       # of the source that runs, not of one edited meanwhile
    t0 = time.perf_counter()
    env_threads = os.environ.get("OMP_NUM_THREADS")
    try:
        with _accounted(nb, scale):
            pm.execute_notebook(str(notebooks_dir() / f"{nb}.ipynb"), str(tmp), parameters=params,
                                kernel_name="python3", cwd=str(notebooks_dir()), log_output=log_output,
                                progress_bar=False)
    except BaseException:
        if tmp.exists():
            os.replace(tmp, out_dir / f"{nb}.failed.ipynb")
        raise
    os.replace(tmp, out)
    dur = time.perf_counter() - t0
    write_json(_done_path(nb, scale), {
        "key": key, "seconds": dur, "scale": scale, "threads": env_threads,
        "code_version": code_version(), "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return dur


def check_data(scale: str, nbs: list[str]) -> None:
    """Make sure every dataset ``nbs`` need at ``scale`` is on disk (downloading what the network
    allows); raise :class:`DataMissing` naming all that are missing, before anything runs."""
    need = scale_datasets(scale, nbs)
    if not need:
        return
    try:
        ensure(need, apt=False, log=lambda m: print(f"[reproduce {scale}] {m}", file=sys.stderr, flush=True))
    except DataMissing as err:
        users = "\n".join(f"  {name}: {', '.join(users)}" for name, users in need.items())
        raise DataMissing(f"reproduce --scale {scale} cannot start: data is missing.\nNeeded (dataset: "
                          f"notebooks):\n{users}\n{err}\nOn this machine `make data SCALE={scale}` (python -m "
                          f"snnlib data --scale {scale}) installs what it can.") from None


def run_records() -> list[dict]:
    """Every readable run record (``runs/*/result.json``) of the results folder, in folder order."""
    out = []
    for p in sorted((results_dir() / "runs").glob("*/result.json")):
        try:
            out.append(read_json(p))
        except (OSError, ValueError):
            continue
    return out


def wall_times_markdown(scale: str, records: list[dict]) -> str:
    """Each notebook's wall time at its last execution at ``scale`` and their sum (minutes); where a
    notebook ran in several executions (interrupted pieces, re-runs), also the sum of all of them, the
    cost of building its results folder (runs and measurements made by one execution are loaded, at no
    cost, by the next), and the training time of the run ``records``."""
    times = {n: d["seconds"] / 60 for n in notebooks() if (d := _done(n, scale)) and "seconds" in d}
    if not times:
        return ""
    parts = ", ".join(f"`{n}` {m:.1f}" for n, m in times.items())
    text = (f"Wall time of the last execution of each notebook (min, this machine): {parts}; "
            f"**total {sum(times.values()):.1f} min** (runs loaded from earlier executions cost no time here).\n\n")
    logs = {n: log for n in notebooks() if (log := executions(n, scale))}
    if any(len(log) > 1 for log in logs.values()):
        total = {n: sum(e["seconds"] for e in log) / 60 for n, log in logs.items()}
        pieces = ", ".join(f"`{n}` {total[n]:.1f} ({len(log)})" for n, log in logs.items())
        loads = [e["load"] for log in logs.values() for e in log if e.get("load") is not None]
        load = f"; 1-min load average at the last update of each: {min(loads):.1f}-{max(loads):.1f}" if loads else ""
        text += (f"Every execution at {scale} scale, interrupted pieces included (min (executions)): {pieces}; "
                 f"**all executions {sum(total.values()):.1f} min**{load}.\n\n")
        runs = [r.get("wall_time_s", 0.0) for r in records]
        text += (f"The {len(runs)} training runs in the results folder took {sum(runs) / 60:.1f} min of their own "
                 "(sum of each run record's wall time; measurements, evaluation and notebook overhead come on top).\n\n")
    return text


def code_versions_markdown(records: list[dict]) -> str:
    """The code versions that made the run ``records`` (several when the records outlive code
    versions: the full scale, run in pieces)."""
    versions: dict[str, int] = {}
    for r in records:
        v = r.get("code_version", "unknown")
        versions[v] = versions.get(v, 0) + 1
    if len(versions) <= 1:
        return ""
    listed = ", ".join(f"`{v}` ({n} runs)" for v, n in sorted(versions.items(), key=lambda kv: -kv[1]))
    return f"Run records made by {len(versions)} code versions of the library: {listed}.\n\n"


def status_markdown(scale: str) -> str:
    """The report's note on which notebooks are current at ``scale``, their wall times and, when the
    records come from several code versions, which."""
    nbs = notebooks()
    behind = stale(nbs, scale)
    records = run_records()
    tail = wall_times_markdown(scale, records) + code_versions_markdown(records)
    if not behind:
        return (f"All {len(nbs)} notebooks are current at {scale} scale: each last ran with its present source, "
                "parameters and library code, and the claims below are theirs.\n\n") + tail
    why = [f"`{n}` ({'never ran' if _done(n, scale) is None else 'changed since it ran'})" for n in behind]
    return (f"**Incomplete: {len(behind)} of {len(nbs)} notebooks {'is' if len(behind) == 1 else 'are'} "
            f"not current at {scale} scale**: "
            f"{', '.join(why)}. Their claims below are missing or from an earlier run; "
            f"`make reproduce SCALE={scale}` brings them up to date.\n\n") + tail


def report(scale: str) -> Path:
    """Write ``REPORT.md`` for ``scale`` from every ledger, with the notebooks' status."""
    return write_report(scale, extra=status_markdown(scale))


def reproduce(scale: str = "cpu", only: list[str] | None = None, *, log_output: bool = True) -> None:
    """Check the data, execute the notebooks in order (skipping current ones, with progress and an
    estimate), and write the report, also when a notebook fails."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    if scale in RESULTS_OF_SCALE and not os.environ.get("SNNLIB_RESULTS"):
        os.environ["SNNLIB_RESULTS"] = str(RESULTS_OF_SCALE[scale])     # the kernels inherit it
    nbs = notebooks()
    if only:
        unknown = set(only) - set(nbs)
        if unknown:
            raise ValueError(f"unknown notebooks {sorted(unknown)}; available: {nbs}")
        nbs = [n for n in nbs if n in only]
    todo = stale(nbs, scale)
    check_data(scale, todo)
    t0 = time.perf_counter()
    if todo:
        report(scale)
    try:
        for i, nb in enumerate(nbs):
            todo = stale(nbs[i:], scale)
            est = 0.0
            for n in todo:
                done = _done(n, scale)
                est += done["seconds"] / 60 if done else FIRST_GUESS_MIN[scale]
            head = f"[reproduce {scale} {i + 1}/{len(nbs)}] {nb}"
            if nb not in todo:
                print(f"{head}: up to date, skipped", file=sys.stderr, flush=True)
                continue
            print(f"{head}: running (elapsed {(time.perf_counter() - t0) / 60:.1f} min, "
                  f"about {est:.0f} min left)", file=sys.stderr, flush=True)
            dur = execute(nb, scale, log_output=log_output)
            print(f"{head}: done in {dur / 60:.1f} min", file=sys.stderr, flush=True)
    finally:
        path = report(scale)
        print(f"[reproduce {scale}] wrote {path}", file=sys.stderr, flush=True)
    published = publish_notebooks(scale, nbs)
    print(f"[reproduce {scale}] published {len(published)} executed notebooks", file=sys.stderr, flush=True)
    print(f"[reproduce {scale}] finished in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr, flush=True)
