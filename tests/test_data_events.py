"""snnlib.data event datasets and the static-to-event converter, on small files in the real formats."""
from __future__ import annotations

import gzip
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import snnlib.paths
from snnlib.data import (EVENT_DTYPE, DatasetNotFound, SaccadeConfig, dataset_info, get_dataset,
                         saccade_events, to_frames)
from snnlib.data import events as ev_mod
from snnlib.data.locate import file_md5


@pytest.fixture
def env(data_env):
    return data_env


# --- N-MNIST ----------------------------------------------------------------------------------

def nmnist_bytes(x, y, t, p) -> bytes:
    """N-MNIST .bin: 5 bytes per event: x (8 bit), y (8 bit), then p (1 bit) + t (23 bit, us), big-endian."""
    out = bytearray()
    for xi, yi, ti, pi in zip(x, y, t, p):
        out += bytes([xi, yi]) + ((int(pi) << 23) | int(ti)).to_bytes(3, "big")
    return bytes(out)


def random_recording(rng, n=300, duration=300_000):
    t = np.sort(rng.choice(np.arange(1, duration), n, replace=False))
    return rng.integers(0, 34, n), rng.integers(0, 34, n), t, rng.integers(0, 2, n)


def write_nmnist(base: Path, per_digit=(2, 1), seed=0) -> dict:
    """NMNIST/Train/<d>/*.bin and NMNIST/Test/<d>/*.bin, as tonic expects; returns {(split, d, k): events}."""
    rng = np.random.default_rng(seed)
    written = {}
    for folder, n in zip(("Train", "Test"), per_digit):
        for d in range(10):
            (base / "NMNIST" / folder / str(d)).mkdir(parents=True)
            for k in range(n):
                rec = random_recording(rng)
                (base / "NMNIST" / folder / str(d) / f"{k:05d}.bin").write_bytes(nmnist_bytes(*rec))
                written[(folder, d, k)] = rec
    return written


def test_nmnist_bin_format_matches_tonic_reader(tmp_path):
    from tonic.datasets import NMNIST
    from tonic.io import read_mnist_file
    x, y, t, p = [3, 33, 0], [7, 0, 33], [1, 4096 + 5, 8_000_000], [1, 0, 1]
    (tmp_path / "a.bin").write_bytes(nmnist_bytes(x, y, t, p))
    assert (tmp_path / "a.bin").read_bytes()[2:5] == bytes([0x80, 0x00, 0x01])   # p bit 7, then t
    ev = read_mnist_file(str(tmp_path / "a.bin"), dtype=NMNIST.dtype)
    assert ev["x"].tolist() == x and ev["y"].tolist() == y and ev["t"].tolist() == t and ev["p"].tolist() == p


def test_nmnist_frames_labels_and_cache(env):
    written = write_nmnist(env / "data")
    with pytest.warns(UserWarning, match="incomplete"):
        ds = get_dataset("nmnist", "train", T=5)
    assert len(ds) == 20 and ds.targets == [d for d in range(10) for _ in range(2)]
    x, y = ds[7]                                               # digit 3, second file
    assert x.shape == (5, 2, 34, 34) and x.dtype == torch.float32 and y == 3
    ex, ey, et, ep = written[("Train", 3, 1)]
    assert 300 - 2 <= x.sum() <= 300                         # ToFrame may drop the last event
    assert abs(x[:, 1].sum().item() - ep.sum()) <= 2         # channel 1 = ON (p=1)
    assert x[:, :, ey[0], ex[0]].sum() >= 1
    folder = Path(ds.info["cache"])
    assert folder.name.startswith("frames_T5_timebins_34x34x2") and folder.is_relative_to(env / "data" / "cache")
    assert (folder / "000007.npz").is_file()
    with pytest.warns(UserWarning):
        again = get_dataset("nmnist", "train", T=5)[7][0]    # served from the cache
    assert torch.equal(again, x)
    with pytest.warns(UserWarning):
        ds8 = get_dataset("nmnist", "train", T=8)
    assert Path(ds8.info["cache"]) != folder and "T8" in Path(ds8.info["cache"]).name
    xb, yb = ds8.__getitems__([0, 19])
    assert xb.shape == (2, 8, 2, 34, 34) and yb.tolist() == [0, 9]
    with pytest.warns(UserWarning):
        test = get_dataset("nmnist", "test", T=5, subset=4, seed=1)
    assert len(test) == 4 and test[0][0].shape == (5, 2, 34, 34)


def test_nmnist_zip_is_extracted(env, monkeypatch):
    src = env / "src"
    write_nmnist(src, per_digit=(1, 1))
    (env / "data" / "NMNIST").mkdir()
    with zipfile.ZipFile(env / "data" / "NMNIST" / "test.zip", "w") as z:
        for f in sorted((src / "NMNIST").rglob("Test/*/*.bin")):
            z.write(f, f.relative_to(src / "NMNIST"))
    # the archive is checked against the original's md5 (tonic's) first: stand in for the original
    from tonic.datasets import NMNIST
    monkeypatch.setattr(NMNIST, "test_md5", file_md5(env / "data" / "NMNIST" / "test.zip"))
    with pytest.warns(UserWarning, match="incomplete"):
        ds = get_dataset("nmnist", "test", T=3)
    assert len(ds) == 10 and (env / "data" / "NMNIST" / "Test" / "9" / "00000.bin").is_file()
    assert not list((env / "data" / "NMNIST").glob(".extract-*"))


def test_missing_event_dataset_error(env):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFound) as err:
        get_dataset("nmnist", "train", T=4)
    assert time.perf_counter() - start < 2.0
    msg = str(err.value)
    assert all(str(d) in msg for d in snnlib.paths.data_dirs())
    assert "NMNIST/Train/<digit 0-9>/*.bin" in msg and "unreachable" in msg
    with pytest.raises(DatasetNotFound, match="CIFAR10DVS/<class>/\\*.aedat4"):
        get_dataset("cifar10dvs", "train", T=4)


# --- CIFAR10-DVS ------------------------------------------------------------------------------

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10dvs(base: Path, per_class=10, seed=0) -> None:
    """CIFAR10DVS/<class>/*.aedat4. Real .aedat4 needs the `aedat` writer, so these files hold numpy
    structured arrays that the test's stand-in reader loads (tonic calls read_aedat4 on each path)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype([("t", np.uint64), ("x", np.uint16), ("y", np.uint16), ("p", bool)])
    for c in CLASSES:
        (base / "CIFAR10DVS" / c).mkdir(parents=True)
        for k in range(per_class):
            n = 200
            ev = np.zeros(n, dtype=dtype)
            ev["t"] = np.sort(rng.integers(0, 1_000_000, n))
            ev["x"], ev["y"], ev["p"] = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
            with open(base / "CIFAR10DVS" / c / f"cifar10_{c}_{k}.aedat4", "wb") as f:
                np.save(f, ev)


def test_cifar10dvs_without_aedat_says_so(env, monkeypatch):
    write_cifar10dvs(env / "data", per_class=1)
    monkeypatch.setattr(ev_mod, "aedat_available", lambda: False)
    with pytest.warns(UserWarning, match="incomplete"), pytest.raises(ImportError, match="pip install aedat"):
        get_dataset("cifar10dvs", "train", T=4)


def test_cifar10dvs_split_frames_and_saved_indices(env, monkeypatch):
    import tonic.datasets.cifar10dvs as tonic_c10
    write_cifar10dvs(env / "data")
    monkeypatch.setattr(ev_mod, "aedat_available", lambda: True)
    monkeypatch.setattr(tonic_c10, "read_aedat4", lambda path: np.load(path))
    with pytest.warns(UserWarning):
        train = get_dataset("cifar10dvs", "train", T=2)
    with pytest.warns(UserWarning):
        test = get_dataset("cifar10dvs", "test", T=2)
    assert len(train) == 90 and len(test) == 10
    assert sorted(test.targets) == list(range(10))           # 9:1 within every class
    assert set(train.indices).isdisjoint(test.indices) and len(set(train.indices) | set(test.indices)) == 100
    split_file = Path(train.info["split_file"])
    assert split_file.is_file() and split_file.parent == Path(train.info["cache"]).parent.parent
    x, y = test[0]
    assert x.shape == (2, 2, 128, 128) and y == test.targets[0] and x.sum() > 190
    with pytest.warns(UserWarning):
        assert get_dataset("cifar10dvs", "test", T=2).indices == test.indices   # same split when reloaded


# --- the converter --------------------------------------------------------------------------

def square_image(size=28, lo=8, hi=20) -> np.ndarray:
    img = np.zeros((size, size), dtype=np.uint8)
    img[lo:hi, lo:hi] = 255
    return img


def test_converter_deterministic_and_batch_independent():
    images = np.stack([square_image(lo=k, hi=k + 10) for k in range(3, 8)])
    a = saccade_events(images, seed=7)
    b = saccade_events(images, seed=7)
    c = saccade_events(images, seed=8)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(len(u) == len(v) and np.array_equal(u, v) for u, v in zip(a, c))
    alone = saccade_events(images[3:4], seed=7, indices=[3])[0]
    assert np.array_equal(alone, a[3])


def test_converter_events_are_valid_dvs_like_streams():
    from tonic.datasets import NMNIST
    cfg = SaccadeConfig()
    ev = saccade_events(square_image(), seed=0)[0]
    assert ev.dtype == EVENT_DTYPE == NMNIST.dtype and ev.dtype.names == ("x", "y", "t", "p")
    assert len(ev) > 200
    assert ev["x"].min() >= 0 and ev["x"].max() < 34 and ev["y"].min() >= 0 and ev["y"].max() < 34
    assert set(np.unique(ev["p"]).tolist()) == {0, 1}
    assert np.all(np.diff(ev["t"]) >= 0) and ev["t"].min() > 0 and ev["t"].max() <= cfg.duration_us
    saccade = (ev["t"] - 1) // cfg.saccade_us
    for s in range(3):
        ts = ev["t"][saccade == s]
        assert len(ts) > 50 and np.all(np.diff(ts) >= 0)                 # every saccade fires, in time order
    # Saccade 1 moves the image down (6 px) and right (3 px): the square's leading bottom/right edges
    # brighten (ON), its trailing top/left edges darken (OFF). Saccade 3 moves it back left.
    def polarity_means(s, field):
        part = ev[saccade == s]
        return part[part["p"] == 1][field].mean(), part[part["p"] == 0][field].mean()
    on_y, off_y = polarity_means(0, "y")
    on_x, off_x = polarity_means(0, "x")
    assert on_y > off_y + 5 and on_x > off_x + 2
    on_x, off_x = polarity_means(2, "x")
    assert on_x < off_x - 8
    quiet = saccade_events(np.zeros((28, 28), np.uint8), config=SaccadeConfig(noise_rate_hz=0.0))[0]
    assert len(quiet) == 0                                             # a blank image gives no events


def test_to_frames_shape_and_counts():
    ev = saccade_events(square_image(), seed=0)[0]
    frames = to_frames(ev, (34, 34, 2), 6)
    assert frames.shape == (6, 2, 34, 34)
    assert len(ev) - 2 <= frames.sum() <= len(ev)
    assert abs(int(frames[:, 1].sum()) - int(ev["p"].sum())) <= 2
    assert to_frames(ev[:0], (34, 34, 2), 4).shape == (4, 2, 34, 34)


def write_fmnist_debian(debian: Path, n_train=16, n_test=6) -> None:
    rng = np.random.default_rng(0)
    debian.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            lo, hi = sorted(rng.integers(4, 24, 2))
            imgs[i, lo:hi + 3, 6:22] = rng.integers(100, 256)
        for kind, arr in (("images", imgs), ("labels", (np.arange(n) % 10).astype(np.uint8))):
            magic = 0x0800 | arr.ndim
            data = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
            with gzip.open(debian / f"{prefix}-{kind}-idx{arr.ndim}-ubyte.gz", "wb") as f:
                f.write(data)


def test_fashion_mnist_dvs_is_labelled_converted_and_cached_per_T(env):
    write_fmnist_debian(env / "debian" / "fashion-mnist")
    ds = get_dataset("fashion_mnist_dvs", "train", T=4)
    assert len(ds) == 16
    assert "CONVERTED" in ds.info["description"] and "CONVERTED" in ds.source.description
    assert "CONVERTED" in dataset_info("fashion_mnist_dvs")["description"]
    x, y = ds[5]
    assert x.shape == (4, 2, 34, 34) and y == 5 and x[:, 0].sum() > 0 and x[:, 1].sum() > 0
    xb, yb = ds.__getitems__([5, 0, 9])
    assert xb.shape == (3, 4, 2, 34, 34) and torch.equal(xb[0], x) and yb.tolist() == [5, 0, 9]
    assert ds.precompute() == 13 and ds.cached_count() == 16
    t6 = get_dataset("fashion_mnist_dvs", "train", T=6)
    assert Path(t6.info["cache"]) != Path(ds.info["cache"]) and "_T6_" in Path(t6.info["cache"]).name
    assert torch.allclose(t6[5][0].sum(0), x.sum(0), atol=2)           # same events, binned differently
    assert t6.precompute(chunk=4, workers=2) == 15 and t6.cached_count() == 16   # forked workers
    assert torch.equal(t6.__getitems__([3])[0][0], torch.from_numpy(
        to_frames(ds.source[3][0], (34, 34, 2), 6).astype(np.float32)))
    test = get_dataset("fashion_mnist_dvs", "test", T=4, subset=3)
    assert len(test) == 3 and test.__getitems__([0, 1])[0].shape == (2, 4, 2, 34, 34)
    with pytest.raises(ValueError, match="not supported for the event dataset"):
        get_dataset("fashion_mnist_dvs", T=4, augment=True)
