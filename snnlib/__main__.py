"""Command line: ``python -m snnlib train CONFIG.yaml [--set key=value ...]`` and
``python -m snnlib reproduce [--scale cpu]``, ``python -m snnlib data [--scale cpu]``."""
from __future__ import annotations

import argparse
import os
import sys

from .data.fetch import DataMissing, ensure
from .data.locate import BadArchive, DatasetNotFound
from .errors import ConfigError
from .experiments.config import load_config, parse_set
from .experiments.io import CorruptFile
from .pipeline.reproduce import reproduce, scale_datasets
from .pipeline.runs import run_dir_for
from .methods import method_names
from .models import model_names
from .paths import SCALES
from .train import train


def user_error_hint(err: BaseException) -> str | None:
    """What to do about an error the user can fix (bad config, missing data, unreadable file), else None."""
    if isinstance(err, ConfigError):
        return "fix the value named above in the YAML file or with --set key=value (python -m snnlib train --help)"
    if isinstance(err, BadArchive):
        return "replace the archive with the original file, or put its extracted folder in the data folder"
    if isinstance(err, DatasetNotFound):
        return "put the dataset where the message says, or point SNNLIB_DATA at a folder holding it (README, Data)"
    if isinstance(err, CorruptFile):
        return "delete the file named above (or train with --no-resume / another --run-dir) and run again"
    if isinstance(err, FileNotFoundError):
        return "check the path"
    return None


def _config_anywhere(args, parser) -> None:
    """``train --set k=v CONFIG``: the config came after the overrides and ``--set`` took it; take it back."""
    stray = [item for item in args.set if "=" not in item]
    if args.config is None and len(stray) == 1:
        args.config = stray[0]
        args.set.remove(stray[0])
    if args.config is None:
        parser.error("the following arguments are required: config")


def main(argv=None) -> int:
    """Run the command line; returns the exit code (2 with a message and a hint for a user error;
    ``--debug`` raises it with its traceback instead)."""
    p = argparse.ArgumentParser(prog="python -m snnlib", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train one run from a YAML config")
    t.add_argument("config", nargs="?", help="YAML run config (see configs/); may also follow the --set items")
    t.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set optim.lr=0.05 T=8 (YAML values; repeatable)")
    t.add_argument("--run-dir", help="run folder (default: results/runs/<name>-<hash>)")
    t.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    r = sub.add_parser("reproduce", help="execute the notebooks with papermill (make reproduce)")
    r.add_argument("--scale", default="cpu", choices=list(SCALES))
    r.add_argument("--only", nargs="*", help="notebook names, e.g. 01_ide_mpis")
    r.add_argument("--quiet", action="store_true", help="do not stream notebook output")

    d = sub.add_parser("data", help="install or download the datasets a scale needs (make data)")
    d.add_argument("--scale", default="cpu", choices=list(SCALES))
    d.add_argument("names", nargs="*", help="datasets to get instead of the scale's, e.g. fashion_mnist")
    d.add_argument("--no-apt", action="store_true", help="do not install Debian packages")

    sub.add_parser("methods", help="list the training methods")
    sub.add_parser("models", help="list the models")

    for sp in sub.choices.values():
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    args = p.parse_args(argv)
    if args.cmd == "train":
        _config_anywhere(args, t)
    try:
        return _dispatch(args)
    except Exception as err:
        hint = user_error_hint(err)
        if hint is None or args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        print(f"hint: {hint}. Add --debug for the traceback.", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.cmd == "train":
        cfg = load_config(args.config, parse_set(args.set))
        rd = args.run_dir or run_dir_for(cfg)
        rec = train(cfg, rd, resume=not args.no_resume, progress=not args.quiet)
        if rec.get("final") and os.environ.get("RANK", "0") == "0":     # under torchrun: rank 0 only
            print(f"test accuracy {rec['final']['test_acc']:.4f}; run folder {rd}")
        return 0
    if args.cmd == "reproduce":
        reproduce(args.scale, args.only, log_output=not args.quiet)
        return 0
    if args.cmd == "data":
        names = args.names or list(scale_datasets(args.scale))
        try:
            found = ensure(names, apt=not args.no_apt)
        except DataMissing as err:
            print(err, file=sys.stderr)
            return 1
        for name, where in found.items():
            print(f"{name}: {where}")
        return 0
    if args.cmd == "methods":
        print("\n".join(method_names()))
        return 0
    if args.cmd == "models":
        print("\n".join(model_names()))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
