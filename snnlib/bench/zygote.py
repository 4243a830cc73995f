"""A fork server for benchmark processes: ``python snnlib/bench/zygote.py MODULE [MODULE ...]``.

Imports the named modules once (torch, torch._dynamo, the benchmark's own modules: the seconds
every fresh Python process would otherwise spend on them), then reads one request per line on
stdin and runs each in a child forked from that state, one at a time, answering one line on
stdout. Every measurement still runs in its own fresh process: the child shares nothing with
earlier measurements, only the imported modules (this process runs no tensor operation, so no
thread pool, allocator cache or autograd state is inherited; it exits if an import started a
thread). Environment settings read at process start (``OMP_WAIT_POLICY``,
``MALLOC_MMAP_THRESHOLD_``, ``PYTHONPATH``) are the server's, fixed when it starts.

Request (JSON): ``{"log": path, "cwd": path, "timeout_s": seconds}`` and either
``"call": "package.module:function", "argv": [...]`` (``function(argv)`` returns the exit code) or
``"script": path, "argv": [...]`` (run by path as ``__main__`` with ``sys.argv = [script, *argv]``).
Answer: ``{"rc": exit code or "timeout", "seconds": wall seconds of the child}``.

Run by path (it imports nothing from ``snnlib`` itself), so a server can preload the library of
another code tree (``PYTHONPATH``), e.g. the older commit the equilibrium section compares with.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":      # run by path: drop this folder from sys.path so nothing here shadows a module
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import importlib  # noqa: E402
import json  # noqa: E402
import runpy  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402


def _child(req: dict) -> int:
    """In the forked child: output to the request's log, run it, return its exit code."""
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(req.get("cwd", os.getcwd()))
    argv = [str(a) for a in req.get("argv", [])]
    try:
        if "call" in req:
            module, function = req["call"].split(":")
            sys.argv = [module, *argv]
            rc = getattr(importlib.import_module(module), function)(argv)
        else:
            sys.argv = [req["script"], *argv]
            runpy.run_path(req["script"], run_name="__main__")
            rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported in the log, exit code 1
        traceback.print_exc()
        rc = 1
    return int(rc or 0)


def _serve_one(req: dict) -> dict:
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            rc = _child(req)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    deadline = t0 + float(req.get("timeout_s", 3600))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"rc": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - t0}
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"rc": "timeout", "seconds": time.perf_counter() - t0}
        time.sleep(0.02)


def main(preload: list[str]) -> int:
    t0 = time.perf_counter()
    for name in preload:
        importlib.import_module(name)
    if threading.active_count() != 1:
        print(json.dumps({"error": f"an import started {threading.active_count() - 1} thread(s): "
                                   "forked children would not be fresh"}), flush=True)
        return 1
    print(json.dumps({"ready": True, "preload_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(_serve_one(json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
