"""Training: the trainer, its setup helpers and distributed support."""
from .trainer import CHECKPOINT, RESULT, build, build_data, data_info, evaluate, train

__all__ = ["train", "evaluate", "build", "build_data", "data_info", "CHECKPOINT", "RESULT"]
