"""``get_dataset`` / ``dataset_info``: one entry point for every dataset by name."""
from __future__ import annotations

import difflib

from .events import EVENT_SPECS, load_events
from .synthetic import NUM_CLASSES as SYN_CLASSES
from .synthetic import NUM_TEST as SYN_TEST
from .synthetic import NUM_TRAIN as SYN_TRAIN
from .synthetic import SIZE as SYN_SIZE
from .synthetic import make_synthetic
from .tensor_dataset import random_subset
from .vision import STATIC_SPECS, load_static

DATASET_NAMES = ("fashion_mnist", "mnist", "cifar10", "cifar100", "tinyimagenet",
                 "nmnist", "cifar10dvs", "fashion_mnist_dvs", "synthetic")
SPLITS = ("train", "test")


def dataset_names() -> list[str]:
    """Every name :func:`get_dataset` accepts."""
    return list(DATASET_NAMES)


def check_name(name: str) -> str:
    """``name`` if known, else ValueError listing the valid names and the closest match."""
    if name in DATASET_NAMES:
        return name
    close = difflib.get_close_matches(str(name), DATASET_NAMES, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}.{hint} Valid names: {', '.join(DATASET_NAMES)}")


def dataset_info(name: str) -> dict:
    """Static facts: channels, size (H, W), num_classes, is_events, mean, std, description,
    num_train, num_test (and sensor_size (W, H, P) for event datasets). mean/std are None for events."""
    check_name(name)
    if name == "synthetic":
        return {"name": name, "channels": 1, "size": SYN_SIZE, "num_classes": SYN_CLASSES, "is_events": False,
                "mean": None, "std": None, "description": "SYNTHETIC class templates with noise (tests only)",
                "num_train": SYN_TRAIN, "num_test": SYN_TEST}
    if name in STATIC_SPECS:
        s = STATIC_SPECS[name]
        counts = {"fashion_mnist": (60000, 10000), "mnist": (60000, 10000), "cifar10": (50000, 10000),
                  "cifar100": (50000, 10000), "tinyimagenet": (100000, 10000)}[name]
        return {"name": name, "channels": s.channels, "size": s.size, "num_classes": s.num_classes,
                "is_events": False, "mean": s.mean, "std": s.std, "description": s.description,
                "num_train": counts[0], "num_test": counts[1]}
    e = EVENT_SPECS[name]
    w, h, p = e.sensor_size
    return {"name": name, "channels": p, "size": (h, w), "num_classes": e.num_classes, "is_events": True,
            "mean": None, "std": None, "description": e.description, "num_train": e.num_train,
            "num_test": e.num_test, "sensor_size": e.sensor_size}


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
    check_name(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if subset is not None and (isinstance(subset, bool) or int(subset) <= 0):
        raise ValueError(f"subset must be a positive number of samples or None, got {subset!r}")
    if name == "synthetic":
        return random_subset(make_synthetic(split), subset, seed)
    if name in EVENT_SPECS:
        if T is None or isinstance(T, bool) or int(T) != T or int(T) <= 0:
            raise ValueError(f"{name} is an event dataset: pass T, the number of frames per sample, as a "
                             f"positive integer (got T={T!r})")
        for arg, value in (("augment", augment), ("pad_to", pad_to), ("mean", mean), ("std", std)):
            if value not in (None, False):
                raise ValueError(f"{arg}={value!r} is not supported for the event dataset {name}")
        ds = load_events(name, split, T=int(T), root=root, download=download)
    else:
        if T is not None:
            raise ValueError(f"{name} is a static dataset: T={T!r} does not apply (repeat the input over time "
                             f"in the model, or pick an event dataset)")
        ds = load_static(name, split, pad_to=pad_to, augment=augment, mean=mean, std=std, root=root,
                         download=download)
    return random_subset(ds, subset, seed)
