"""The reproduction pipeline, above the trainer: run-or-load a config (:mod:`.runs`), where runs train
(:mod:`.executors`: in this process, local processes, Slurm), ``make reproduce`` (:mod:`.reproduce`),
``REPORT.md`` from the claims ledgers (:mod:`.report`), the published site (:mod:`.publish`) and the
protocol table of the paper configs (:mod:`.protocols`). Studies and the command line use it; the
core (neurons ... train) and :mod:`snnlib.experiments` never import it."""
from .runs import is_done, run, run_dir_for, run_many

__all__ = ["run", "run_many", "run_dir_for", "is_done"]
