"""Event datasets as frames: N-MNIST, CIFAR10-DVS (through tonic) and CONVERTED Fashion-MNIST.

Recordings are binned into ``T`` frames with ``tonic.transforms.ToFrame(sensor_size, n_time_bins=T)``
(equal time slices of each recording, event counts per polarity and pixel) and cached on disk, one
compressed ``.npz`` per recording, under a folder whose name carries every frame setting::

    <cache>/<dataset>/<split>/frames_T<T>_timebins_<W>x<H>x<P>_src-<fingerprint>/<index>.npz

``<cache>`` is ``$SNNLIB_CACHE`` or ``<first writable data folder>/cache``; ``<fingerprint>`` hashes
the source's file list (or, for converted data, the images and converter settings).
Items: ``(x float32 [T, 2, H, W], y int)``; batches via ``__getitems__``: ``(x float32 [B, T, 2, H, W],
y int64 [B])``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import locate
from .convert import DEFAULT_CONFIG, ConvertedEvents, SaccadeConfig
from .vision import load_mnist_like

CACHE_FORMAT = 1


@dataclass(frozen=True)
class EventSpec:
    """Sensor geometry and size of an event dataset."""

    sensor_size: tuple[int, int, int]   # tonic order: (W, H, P)
    num_classes: int
    num_train: int
    num_test: int
    description: str


EVENT_SPECS = {
    "nmnist": EventSpec(
        (34, 34, 2), 10, 60000, 10000,
        "N-MNIST: MNIST digits recorded by an ATIS event camera during three saccades (~300 ms), "
        "34x34 pixels, 2 polarities; read with tonic."),
    "cifar10dvs": EventSpec(
        (128, 128, 2), 10, 9000, 1000,
        "CIFAR10-DVS: CIFAR-10 images shown on a monitor and recorded by a DVS128, 128x128, 2 polarities, "
        "10000 recordings; no official split: a seeded per-class 9:1 train/test split is used."),
    "fashion_mnist_dvs": EventSpec(
        (34, 34, 2), 10, 60000, 10000,
        "CONVERTED Fashion-MNIST (simulated events, NOT a recording and NOT N-MNIST): each Fashion-MNIST "
        "image is moved along N-MNIST-like triangular saccades (3 x 100 ms) on a simulated 34x34 DVS and "
        "log-intensity threshold crossings become ON/OFF events (snnlib.data.convert)."),
}


# --- frames and the on-disk cache ---------------------------------------------------------------

def to_frames(events: np.ndarray, sensor_size: tuple[int, int, int], T: int) -> np.ndarray:
    """Bin ``events`` (structured array with x, y, t, p) into T frames: int [T, P, H, W] event counts."""
    from tonic.transforms import ToFrame

    w, h, p = sensor_size
    if len(events) == 0:
        return np.zeros((T, p, h, w), dtype=np.int16)
    return np.asarray(ToFrame(sensor_size=tuple(sensor_size), n_time_bins=int(T))(events))


def _fingerprint(names) -> str:
    h = hashlib.sha1()
    for n in names:
        h.update(str(n).encode() + b"\0")
    return h.hexdigest()[:10]


def frame_cache_folder(root_cache: Path, name: str, split: str, T: int, sensor_size, fingerprint: str) -> Path:
    """The cache folder of one frame setting (its name encodes T, binning and sensor size)."""
    w, h, p = sensor_size
    return root_cache / name / split / f"frames_T{T}_timebins_{w}x{h}x{p}_src-{fingerprint}"


def _save_frames(path: Path, frames: np.ndarray) -> None:
    small = frames.min() >= 0 and frames.max() <= 255
    data = frames.astype(np.uint8 if small else np.int16)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, frames=data)
    locate.atomic_write(path, write)


def _load_frames(path: Path) -> np.ndarray | None:
    try:
        with np.load(path) as f:
            return f["frames"]
    except (FileNotFoundError, OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


class EventFrameDataset(Dataset):
    """Event recordings of ``source`` binned into ``T`` frames, computed on first use and cached.

    ``source``: tonic-style dataset (``source[i] -> (events, label)``, ``source.targets``; optional
    ``events_many(indices)`` for batched conversion). ``indices``: which source recordings this
    dataset holds (default all). ``before_read``: called before events are read (dependency checks).
    """

    def __init__(self, source, *, T: int, sensor_size: tuple[int, int, int], cache_folder: Path,
                 indices=None, info: dict | None = None, before_read=None):
        self.source, self.T, self.sensor_size = source, int(T), tuple(sensor_size)
        self.cache_folder = Path(cache_folder)
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]
        self.targets = [int(source.targets[i]) for i in self.indices]
        self.info = dict(info or {})
        self.before_read = before_read
        self.cache_folder.mkdir(parents=True, exist_ok=True)
        self._write_meta()

    def _write_meta(self) -> None:
        meta = {"format": CACHE_FORMAT, "dataset": self.info.get("name"), "T": self.T,
                "binning": "tonic.transforms.ToFrame(n_time_bins=T)", "sensor_size_WHP": list(self.sensor_size),
                "recordings": len(self.source), "dtype": "uint8 (int16 when a count exceeds 255)"}
        path = self.cache_folder / "meta.json"
        if not path.exists():
            locate.atomic_write(path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))

    def _file(self, source_index: int) -> Path:
        return self.cache_folder / f"{source_index:06d}.npz"

    def cached_count(self) -> int:
        """How many of this dataset's recordings already have cached frames."""
        present = set(os.listdir(self.cache_folder))
        return sum(self._file(i).name in present for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def _compute(self, source_indices: list[int], chunk: int = 256) -> dict[int, np.ndarray]:
        if self.before_read is not None:
            self.before_read()
        out = {}
        for start in range(0, len(source_indices), chunk):
            part = source_indices[start:start + chunk]
            if hasattr(self.source, "events_many"):
                recs = self.source.events_many(part)
            else:
                recs = [self.source[i] for i in part]
            for i, (events, _) in zip(part, recs):
                frames = to_frames(events, self.sensor_size, self.T)
                _save_frames(self._file(i), frames)
                out[i] = frames
        return out

    def frames(self, positions) -> np.ndarray:
        """Event counts [B, T, P, H, W] (int) of the recordings at ``positions`` of this dataset."""
        src = [self.indices[int(i)] for i in positions]
        got = {i: _load_frames(self._file(i)) for i in dict.fromkeys(src)}
        missing = [i for i, f in got.items() if f is None]
        if missing:
            got.update(self._compute(missing))
        return np.stack([got[i] for i in src])

    def __getitems__(self, positions) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self.frames(positions).astype(np.float32))
        y = torch.tensor([self.targets[int(i)] for i in positions], dtype=torch.int64)
        return x, y

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= position < len(self):
            raise IndexError(f"index {position} out of range for {len(self)} recordings")
        x, y = self.__getitems__([position % len(self)])
        return x[0], int(y[0])

    def select(self, positions) -> "EventFrameDataset":
        """A dataset over a subset of this one's recordings (same cache)."""
        return EventFrameDataset(self.source, T=self.T, sensor_size=self.sensor_size,
                                 cache_folder=self.cache_folder, indices=[self.indices[int(i)] for i in positions],
                                 info=self.info, before_read=self.before_read)

    def precompute(self, chunk: int = 256, workers: int = 1) -> int:
        """Fill the cache for every recording of this dataset, in ``workers`` forked processes;
        returns how many recordings were computed."""
        present = set(os.listdir(self.cache_folder))
        missing = [i for i in self.indices if self._file(i).name not in present]
        if workers <= 1 or len(missing) <= chunk:
            self._compute(missing, chunk)
            return len(missing)
        global _PRECOMPUTING
        _PRECOMPUTING = self            # inherited by the forked workers, so the source is not pickled
        parts = [missing[k:k + chunk] for k in range(0, len(missing), chunk)]
        try:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                list(pool.map(_precompute_part, parts))
        finally:
            _PRECOMPUTING = None
        return len(missing)


_PRECOMPUTING: EventFrameDataset | None = None


def _precompute_part(part: list[int]) -> None:
    torch.set_num_threads(1)
    _PRECOMPUTING._compute(part, len(part))


# --- tonic sources with local copies ------------------------------------------------------------

def _has_file(folder: Path, suffix: str) -> bool:
    return folder.is_dir() and next(folder.rglob(f"*{suffix}"), None) is not None


def extract_zip(archive: Path, dest: Path, md5: str | None = None) -> None:
    """Extract ``archive`` into ``dest`` through a temporary folder, moving top-level entries in at the end.

    ``md5``: the original's checksum, checked first when known. Members that would land outside the
    folder are refused (:class:`locate.BadArchive` naming the archive) before anything is written."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    try:
        locate.safe_extract(archive, tmp, md5=md5)
        for entry in tmp.iterdir():
            target = dest / entry.name
            if not target.exists():
                os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _local_tonic_class(base, suffix: str, expected: dict[bool, int]):
    """Subclass of a tonic dataset that accepts any local copy holding ``suffix`` files (tonic insists on
    the archive plus a minimum file count), downloads only when allowed, and orders recordings by path."""

    class Local(base):
        def __init__(self, save_to: str, *, allow_download: bool, **kwargs):
            self._allow_download = allow_download
            super().__init__(save_to, **kwargs)
            order = sorted(range(len(self.data)), key=lambda i: self.data[i])
            self.data = [self.data[i] for i in order]
            self.targets = [self.targets[i] for i in order]
            want = expected.get(getattr(self, "train", True))
            if want and len(self.data) < want:
                warnings.warn(f"{base.__name__} copy in {self.location_on_system} holds {len(self.data)} of "
                              f"{want} recordings (incomplete copy?)", stacklevel=3)

        def _check_exists(self) -> bool:
            return _has_file(Path(self.location_on_system, self.folder_name), suffix)

        def download(self) -> None:
            if not self._allow_download:
                raise locate.DatasetNotFound(f"{base.__name__}: no {suffix} files in {self.location_on_system} "
                                             "and download is not allowed")
            super().download()

    # tonic keeps files in <save_to>/<class name>, so the subclass must carry the base's name.
    Local.__name__ = Local.__qualname__ = base.__name__
    return Local


NMNIST_LAYOUT = """\
  NMNIST/Train/<digit 0-9>/*.bin   and   NMNIST/Test/<digit 0-9>/*.bin   (tonic's layout)
  or the archives NMNIST/train.zip, NMNIST/test.zip (extracted on first use)"""


def nmnist_source(split: str, root=None, download=None):
    """tonic's ``NMNIST`` over a local copy (extracting ``train.zip``/``test.zip`` when needed), or a
    download when allowed and reachable."""
    from tonic.datasets import NMNIST

    cls = _local_tonic_class(NMNIST, ".bin", {True: 60000, False: 10000})
    train = split == "train"
    folder, archive = ("Train", "train.zip") if train else ("Test", "test.zip")
    dirs = locate.search_dirs(root)
    for d in dirs:
        if _has_file(d / "NMNIST" / folder, ".bin"):
            return cls(str(d), train=train, allow_download=False)
    for d in dirs:
        if (d / "NMNIST" / archive).is_file():
            dest = d if locate.is_writable(d / "NMNIST") else locate.writable_dir(root)
            extract_zip(d / "NMNIST" / archive, dest / "NMNIST", NMNIST.train_md5 if train else NMNIST.test_md5)
            return cls(str(dest), train=train, allow_download=False)
    url = NMNIST.train_url if train else NMNIST.test_url
    if locate.may_download(url, download):
        return cls(str(locate.writable_dir(root)), train=train, allow_download=True)
    raise locate.not_found("nmnist", dirs, NMNIST_LAYOUT,
                           "download train.zip / test.zip from the N-MNIST page (Orchard et al. 2015, Mendeley "
                           "Data 468j46mzdv) into <data folder>/NMNIST/", url=url, download=download)


CIFAR10DVS_LAYOUT = """\
  CIFAR10DVS/<class>/*.aedat4   for the 10 classes airplane ... truck (tonic's layout)
  or the archives CIFAR10DVS/<class>.zip, or CIFAR10DVS/CIFAR10DVS.zip (extracted on first use)"""


def aedat_available() -> bool:
    """Whether the ``aedat`` package (needed to read .aedat4 recordings) is importable."""
    return importlib.util.find_spec("aedat") is not None


def require_aedat() -> None:
    """Raise a clear ImportError when ``aedat`` is missing."""
    if not aedat_available():
        raise ImportError("CIFAR10-DVS recordings are .aedat4 files, read through the `aedat` package, which is "
                          "not installed: `pip install aedat` (or use frames already cached by a machine that has it)")


def cifar10dvs_source(root=None, download=None):
    """tonic's ``CIFAR10DVS`` over a local copy (extracting the class archives when needed), or a download."""
    from tonic.datasets import CIFAR10DVS

    cls = _local_tonic_class(CIFAR10DVS, ".aedat4", {True: 10000})
    dirs = locate.search_dirs(root)
    for d in dirs:
        if _has_file(d / "CIFAR10DVS", ".aedat4"):
            return cls(str(d), allow_download=False)
    for d in dirs:
        loc = d / "CIFAR10DVS"
        zips = [loc / z for z in CIFAR10DVS.data_filename if (loc / z).is_file()]
        if zips or (loc / CIFAR10DVS.filename).is_file():
            dest = loc if locate.is_writable(loc) else locate.writable_dir(root) / "CIFAR10DVS"
            if not zips:
                extract_zip(loc / CIFAR10DVS.filename, dest, CIFAR10DVS.file_md5)
                zips = [dest / z for z in CIFAR10DVS.data_filename if (dest / z).is_file()]
            for z in zips:
                extract_zip(z, dest)
            return cls(str(dest.parent), allow_download=False)
    if locate.may_download(CIFAR10DVS.url, download):
        return cls(str(locate.writable_dir(root)), allow_download=True)
    raise locate.not_found("cifar10dvs", dirs, CIFAR10DVS_LAYOUT,
                           "download CIFAR10DVS.zip (tonic's figshare copy, Li et al. 2017) into "
                           "<data folder>/CIFAR10DVS/", url=CIFAR10DVS.url, download=download)


def per_class_split(targets, seed: int, test_fraction: float = 0.1) -> tuple[list[int], list[int]]:
    """Seeded split of each class into train/test (``test_fraction`` of each class, rounded, to test)."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(int(seed))
    train, test = [], []
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n_test = int(round(len(idx) * test_fraction))
        test += idx[:n_test].tolist()
        train += idx[n_test:].tolist()
    return sorted(train), sorted(test)


def saved_split(path: Path, targets, seed: int) -> dict[str, list[int]]:
    """The train/test indices stored at ``path``, created (seeded per-class 9:1) when absent."""
    if path.is_file():
        split = json.loads(path.read_text())
        if split.get("n") == len(targets) and split.get("seed") == seed:
            return split
    train, test = per_class_split(targets, seed)
    split = {"seed": int(seed), "n": len(targets), "test_fraction": 0.1, "train": train, "test": test}
    locate.atomic_write(path, lambda tmp: tmp.write_text(json.dumps(split)))
    return split


# --- the three loaders ----------------------------------------------------------------------------

def _event_info(name: str, split: str, T: int, cache: Path) -> dict:
    spec = EVENT_SPECS[name]
    w, h, p = spec.sensor_size
    return {"name": name, "split": split, "channels": p, "size": (h, w), "T": T,
            "num_classes": spec.num_classes, "is_events": True, "mean": None, "std": None,
            "sensor_size": spec.sensor_size, "description": spec.description, "cache": str(cache)}


def load_nmnist(split: str, *, T: int, root=None, download=None) -> EventFrameDataset:
    """N-MNIST frames: x float32 [T, 2, 34, 34] event counts, y int."""
    source = nmnist_source(split, root, download)
    rel = [os.path.relpath(p, source.location_on_system) for p in source.data]
    sensor = EVENT_SPECS["nmnist"].sensor_size
    folder = frame_cache_folder(locate.cache_dir(root), "nmnist", split, T, sensor, _fingerprint(rel))
    return EventFrameDataset(source, T=T, sensor_size=sensor, cache_folder=folder,
                             info=_event_info("nmnist", split, T, folder))


def load_cifar10dvs(split: str, *, T: int, root=None, download=None, split_seed: int = 0) -> EventFrameDataset:
    """CIFAR10-DVS frames: x float32 [T, 2, 128, 128] event counts, y int.

    Split: seeded per-class 9:1 (``split_seed``), indices saved in ``<cache>/cifar10dvs/split_seed<k>_<fp>.json``.
    Frames are cached per recording under split ``all`` so both splits share them.
    """
    source = cifar10dvs_source(root, download)
    fp = _fingerprint(os.path.relpath(p, source.location_on_system) for p in source.data)
    cache = locate.cache_dir(root)
    split_file = cache / "cifar10dvs" / f"split_seed{split_seed}_{fp}.json"
    indices = saved_split(split_file, source.targets, split_seed)[split]
    sensor = EVENT_SPECS["cifar10dvs"].sensor_size
    folder = frame_cache_folder(cache, "cifar10dvs", "all", T, sensor, fp)
    info = _event_info("cifar10dvs", split, T, folder)
    info["split_file"] = str(split_file)
    ds = EventFrameDataset(source, T=T, sensor_size=sensor, cache_folder=folder, indices=indices,
                           info=info, before_read=require_aedat)
    if not aedat_available() and ds.cached_count() < len(ds):
        require_aedat()
    return ds


def load_fashion_mnist_dvs(split: str, *, T: int, root=None, download=None, convert_seed: int = 0,
                           config: SaccadeConfig = DEFAULT_CONFIG) -> EventFrameDataset:
    """CONVERTED Fashion-MNIST frames (simulated saccade events, see :mod:`snnlib.data.convert`):
    x float32 [T, 2, 34, 34] event counts, y int. Conversion happens on first use of each image
    (``ds.precompute()`` converts a whole split in batches)."""
    static = load_mnist_like("fashion_mnist", split, mean=False, root=root, download=download)
    source = ConvertedEvents(static.images[:, 0].numpy(), static.labels.numpy(), seed=convert_seed,
                             config=config, description=EVENT_SPECS["fashion_mnist_dvs"].description)
    sensor = source.sensor_size
    folder = frame_cache_folder(locate.cache_dir(root), "fashion_mnist_dvs", split, T, sensor, source.fingerprint())
    info = _event_info("fashion_mnist_dvs", split, T, folder)
    info.update(sensor_size=sensor, size=(sensor[1], sensor[0]), converter=config, convert_seed=convert_seed)
    return EventFrameDataset(source, T=T, sensor_size=sensor, cache_folder=folder, info=info)


def load_events(name: str, split: str, *, T: int, root=None, download=None, **options) -> EventFrameDataset:
    """Dispatch to the loader of event dataset ``name``."""
    loaders = {"nmnist": load_nmnist, "cifar10dvs": load_cifar10dvs, "fashion_mnist_dvs": load_fashion_mnist_dvs}
    if name not in loaders:
        raise ValueError(f"{name!r} is not an event dataset")
    return loaders[name](split, T=T, root=root, download=download, **options)
