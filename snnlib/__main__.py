"""Command line: ``python -m snnlib train CONFIG.yaml [--set key=value ...]`` and
``python -m snnlib reproduce [--scale cpu]``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m snnlib", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train one run from a YAML config")
    t.add_argument("config", help="YAML run config (see configs/)")
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set optim.lr=0.05 T=8")
    t.add_argument("--run-dir", help="run folder (default: results/runs/<name>-<hash>)")
    t.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    r = sub.add_parser("reproduce", help="execute the notebooks with papermill (make reproduce)")
    r.add_argument("--scale", default="cpu", choices=["smoke", "cpu", "paper"])
    r.add_argument("--only", nargs="*", help="notebook names, e.g. 01_ide_mpis")
    r.add_argument("--quiet", action="store_true", help="do not stream notebook output")

    sub.add_parser("methods", help="list the training methods")
    sub.add_parser("models", help="list the models")

    args = p.parse_args(argv)
    if args.cmd == "train":
        from .experiments.config import load_config, parse_set
        from .experiments.runs import run_dir_for
        from .train import train
        cfg = load_config(args.config, parse_set(args.set))
        rd = args.run_dir or run_dir_for(cfg)
        rec = train(cfg, rd, resume=not args.no_resume, progress=not args.quiet)
        if rec.get("final"):
            print(f"test accuracy {rec['final']['test_acc']:.4f}; run folder {rd}")
        return 0
    if args.cmd == "reproduce":
        from .experiments.reproduce import reproduce
        reproduce(args.scale, args.only, log_output=not args.quiet)
        return 0
    if args.cmd == "methods":
        from .methods import method_names
        print("\n".join(method_names()))
        return 0
    if args.cmd == "models":
        from .models import MODELS, _import_families
        _import_families()
        print("\n".join(MODELS.names()))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
