"""``get_dataset`` / ``dataset_info``: one entry point for every dataset by name.

Every dataset is one entry of ``DATASETS`` (a :class:`snnlib.registry.Registry`, like models and
methods): its static facts and the loader of its kind (static images, event frames, synthetic).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..registry import Registry
from .events import EVENT_SPECS, EventSpec, load_events
from .synthetic import NUM_CLASSES as SYN_CLASSES
from .synthetic import NUM_TEST as SYN_TEST
from .synthetic import NUM_TRAIN as SYN_TRAIN
from .synthetic import SIZE as SYN_SIZE
from .synthetic import make_synthetic
from .tensor_dataset import random_subset
from .vision import STATIC_SPECS, StaticSpec, load_static

SPLITS = ("train", "test")
DATASETS = Registry("dataset")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset: ``info`` (what :func:`dataset_info` returns) and ``load(split, T=..., augment=...,
    pad_to=..., mean=..., std=..., root=..., download=...)`` building its ``split``."""

    info: dict
    load: Callable


def _static_entry(name: str, spec: StaticSpec) -> DatasetEntry:
    def load(split, *, T, augment, pad_to, mean, std, root, download):
        if T is not None:
            raise ValueError(f"{name} is a static dataset: T={T!r} does not apply (repeat the input over time "
                             f"in the model, or pick an event dataset)")
        return load_static(name, split, pad_to=pad_to, augment=augment, mean=mean, std=std, root=root,
                           download=download)
    info = {"name": name, "channels": spec.channels, "size": spec.size, "num_classes": spec.num_classes,
            "is_events": False, "mean": spec.mean, "std": spec.std, "description": spec.description,
            "num_train": spec.num_train, "num_test": spec.num_test}
    return DatasetEntry(info, load)


def _event_entry(name: str, spec: EventSpec) -> DatasetEntry:
    def load(split, *, T, augment, pad_to, mean, std, root, download):
        if T is None or isinstance(T, bool) or int(T) != T or int(T) <= 0:
            raise ValueError(f"{name} is an event dataset: pass T, the number of frames per sample, as a "
                             f"positive integer (got T={T!r})")
        for arg, value in (("augment", augment), ("pad_to", pad_to), ("mean", mean), ("std", std)):
            if value not in (None, False):
                raise ValueError(f"{arg}={value!r} is not supported for the event dataset {name}")
        return load_events(name, split, T=int(T), root=root, download=download)
    w, h, p = spec.sensor_size
    info = {"name": name, "channels": p, "size": (h, w), "num_classes": spec.num_classes, "is_events": True,
            "mean": None, "std": None, "description": spec.description, "num_train": spec.num_train,
            "num_test": spec.num_test, "sensor_size": spec.sensor_size}
    return DatasetEntry(info, load)


def _synthetic_entry() -> DatasetEntry:
    def load(split, **_options):   # no files, no options: a fixed seeded dataset
        return make_synthetic(split)
    info = {"name": "synthetic", "channels": 1, "size": SYN_SIZE, "num_classes": SYN_CLASSES, "is_events": False,
            "mean": None, "std": None, "description": "SYNTHETIC class templates with noise (tests only)",
            "num_train": SYN_TRAIN, "num_test": SYN_TEST}
    return DatasetEntry(info, load)


for _name, _spec in STATIC_SPECS.items():
    DATASETS.register(_name)(_static_entry(_name, _spec))
for _name, _spec in EVENT_SPECS.items():
    DATASETS.register(_name)(_event_entry(_name, _spec))
DATASETS.register("synthetic")(_synthetic_entry())


def dataset_names() -> list[str]:
    """Every name :func:`get_dataset` accepts."""
    return DATASETS.names()


def check_name(name: str) -> str:
    """``name`` if known, else a ValueError (:class:`snnlib.errors.ConfigError`) listing the valid
    names and the closest match."""
    DATASETS.get(name)
    return name


def dataset_info(name: str) -> dict:
    """Static facts: channels, size (H, W), num_classes, is_events, mean, std, description,
    num_train, num_test (and sensor_size (W, H, P) for event datasets). mean/std are None for events."""
    return dict(DATASETS.get(name).info)


def get_dataset(name: str, split: str = "train", *, T: int | None = None, subset: int | None = None,
                seed: int = 0, augment: bool | None = None, pad_to=None, root=None,
                download: bool | None = None, mean=None, std=None):
    """The dataset ``name``'s ``split`` ("train" or "test") as a torch Dataset with ``__getitems__``.

    Static datasets: items (x float32 [C, H, W], y int); ``augment`` (None = the dataset's default:
    on for CIFAR/TinyImageNet train, off otherwise); ``pad_to`` zero-pads to an int or (H, W);
    ``mean``/``std`` override the normalisation (``mean=False`` disables it); ``T`` must be None.
    Event datasets: items (x float32 [T, 2, H, W] event counts, y int); ``T`` (frames) is required;
    ``augment``/``pad_to``/``mean``/``std`` are not supported.
    ``subset=k``: a random subset of k samples drawn with ``seed``. ``root``: look only in this folder
    (and cache there). ``download``: None = when missing and the network answers; False = never.
    Missing data raises :class:`snnlib.data.DatasetNotFound`.
    """
    entry = DATASETS.get(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if subset is not None and (isinstance(subset, bool) or int(subset) <= 0):
        raise ValueError(f"subset must be a positive number of samples or None, got {subset!r}")
    ds = entry.load(split, T=T, augment=augment, pad_to=pad_to, mean=mean, std=std, root=root, download=download)
    return random_subset(ds, subset, seed)
