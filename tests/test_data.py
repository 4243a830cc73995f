"""snnlib.data static datasets, tested on small files in the real formats written into tmp folders.

The network probe is forced to fail and the Debian folder points into tmp, so nothing here can
touch the network or the machine's real datasets (except the last test, which reads the real
Debian Fashion-MNIST when it is installed).
"""
from __future__ import annotations

import gzip
import pickle
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import snnlib.paths
from snnlib.data import DatasetNotFound, dataset_info, dataset_names, get_dataset, locate
from snnlib.data.batch_transforms import BatchTransform, pad_to_size, random_crop

IDX_NAMES = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"): "train-labels-idx1-ubyte",
             ("test", "images"): "t10k-images-idx3-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}


@pytest.fixture
def env(data_env):
    return data_env


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX file: magic (0x0000, type 0x08 = ubyte, ndim), big-endian uint32 dims, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim            # 2051 for images [N, H, W], 2049 for labels [N]
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder: Path, n_train=12, n_test=5, gz=False, seed=0) -> dict:
    """Write the four MNIST-like IDX files into ``folder``; return the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[(split, "images")] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[(split, "labels")] = (np.arange(n) % 10).astype(np.uint8)
    for key, arr in arrays.items():
        data = idx_bytes(arr)
        name = IDX_NAMES[key]
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(data)
        else:
            (folder / name).write_bytes(data)
    return arrays


def test_idx_header_is_what_torchvision_reads(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    data = idx_bytes(arr)
    assert struct.unpack(">IIII", data[:16]) == (2051, 2, 28, 28)
    assert struct.unpack(">II", idx_bytes(np.zeros(7, np.uint8))[:8]) == (2049, 7)
    from torchvision.datasets.mnist import read_image_file
    (tmp_path / "img").write_bytes(data)
    assert torch.equal(read_image_file(str(tmp_path / "img")), torch.from_numpy(arr))


def test_fashion_mnist_from_debian_gz_is_decompressed_atomically(env):
    arrays = write_idx_set(env / "debian" / "fashion-mnist", gz=True)
    ds = get_dataset("fashion_mnist", "train")
    raw = env / "data" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_NAMES.values())   # no temp files left
    assert len(ds) == 12
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int) and y == 3
    expected = (torch.from_numpy(arrays[("train", "images")][3]).float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x[0], expected, atol=1e-5)
    mtime = (raw / "train-images-idx3-ubyte").stat().st_mtime_ns
    test = get_dataset("fashion_mnist", "test")
    assert len(test) == 5 and (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == mtime  # not redone
    xb, yb = test.__getitems__([0, 4, 2])
    assert xb.shape == (3, 1, 28, 28) and xb.dtype == torch.float32
    assert yb.dtype == torch.int64 and yb.tolist() == [0, 4, 2]


def test_mnist_raw_idx_with_padding_and_custom_normalisation(env):
    arrays = write_idx_set(env / "data" / "MNIST" / "raw", n_train=6, n_test=3)
    ds = get_dataset("mnist", "test", pad_to=32, mean=(0.5,), std=(0.25,))
    x, y = ds[1]
    assert x.shape == (1, 32, 32)
    inner = (torch.from_numpy(arrays[("test", "images")][1]).float() / 255 - 0.5) / 0.25
    assert torch.allclose(x[0, 2:30, 2:30], inner, atol=1e-5)
    assert torch.allclose(x[0, :2], torch.full((2, 32), -2.0))          # zero padding, then normalised
    assert ds.info["size"] == (32, 32) and ds.info["mean"] == (0.5,)
    raw = get_dataset("mnist", "train", mean=False)
    assert torch.allclose(raw[0][0][0] * 255, torch.from_numpy(arrays[("train", "images")][0]).float(), atol=1e-3)


def test_mnist_gz_in_data_folder_is_decompressed_in_place(env):
    write_idx_set(env / "data" / "MNIST" / "raw", gz=True)
    assert len(get_dataset("mnist", "train")) == 12
    assert (env / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_missing_dataset_raises_quickly_naming_every_folder(env):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFound) as err:
        get_dataset("fashion_mnist", "train")
    assert time.perf_counter() - start < 2.0
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for folder in snnlib.paths.data_dirs():
        assert str(folder) in msg
    assert str(env / "debian" / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "SNNLIB_DATA" in msg
    assert "FashionMNIST/raw/train-images-idx3-ubyte" in msg
    for name in ("mnist", "cifar10", "cifar100", "tinyimagenet"):
        start = time.perf_counter()
        with pytest.raises(DatasetNotFound, match="Looked in"):
            get_dataset(name)
        assert time.perf_counter() - start < 2.0


def test_network_probe_never_hangs(monkeypatch):
    """A connection that would block for 30 s is abandoned after PROBE_TIMEOUT."""
    monkeypatch.delenv("SNNLIB_OFFLINE", raising=False)
    monkeypatch.setattr(locate, "PROBE_TIMEOUT", 0.3)
    monkeypatch.setattr(locate, "_probe_cache", {})
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))
    start = time.perf_counter()
    assert locate.network_available("https://unreachable.invalid/x") is False
    assert time.perf_counter() - start < 1.5
    monkeypatch.setenv("SNNLIB_OFFLINE", "1")
    assert locate.network_available("https://pypi.org") is False


# --- CIFAR ------------------------------------------------------------------------------------

def write_cifar10(base: Path, per_batch=4, n_test=6, seed=0) -> dict:
    """cifar-10-batches-py with data_batch_1..5, test_batch, batches.meta (python pickles, data uint8 [n, 3072])."""
    rng = np.random.default_rng(seed)
    folder = base / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels, "filenames": []}, f)
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}, f)
    return written


def skip_md5(monkeypatch, cls) -> None:
    """torchvision checks each CIFAR file's md5 against the real dataset's. Our synthetic files cannot match,
    so the test replaces the class's checksum lists with None (check_integrity then only checks existence)."""
    monkeypatch.setattr(cls, "train_list", [[f, None] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, None] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})


def test_cifar10_pickles_layout_normalisation_and_augmentation(env, monkeypatch):
    from torchvision.datasets import CIFAR10
    written = write_cifar10(env / "data")
    with pytest.raises(DatasetNotFound, match="md5"):           # real integrity check rejects fake files
        get_dataset("cifar10", "test")
    skip_md5(monkeypatch, CIFAR10)
    test = get_dataset("cifar10", "test")
    assert len(test) == 6 and test.classes[3] == "class3"
    data, labels = written["test_batch"]
    x, y = test[2]
    assert x.shape == (3, 32, 32) and y == labels[2]
    planes = torch.from_numpy(data[2].reshape(3, 32, 32)).float() / 255          # R plane, G plane, B plane
    mean, std = torch.tensor((0.4914, 0.4822, 0.4465)), torch.tensor((0.2023, 0.1994, 0.2010))
    assert torch.allclose(x, (planes - mean[:, None, None]) / std[:, None, None], atol=1e-5)

    train = get_dataset("cifar10", "train")                     # augmented by default
    assert len(train) == 20 and train.transform.augment and not test.transform.augment
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a, _ = train.__getitems__(list(range(20)))
    torch.set_rng_state(state)
    b, _ = train.__getitems__(list(range(20)))
    assert torch.equal(a, b)                                    # randomness comes from the global RNG
    plain = get_dataset("cifar10", "train", augment=False).__getitems__(list(range(20)))[0]
    assert not torch.equal(a, plain) and a.shape == plain.shape


def test_cifar100_fine_labels(env, monkeypatch):
    from torchvision.datasets import CIFAR100
    folder = env / "data" / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 8), ("test", 3)):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "fine_labels": list(range(90, 90 + n)), "coarse_labels": [0] * n}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []}, f)
    skip_md5(monkeypatch, CIFAR100)
    ds = get_dataset("cifar100", "train", augment=False)
    assert len(ds) == 8 and ds[5][1] == 95 and ds.info["num_classes"] == 100
    assert get_dataset("cifar100", "test")[2][1] == 92


# --- TinyImageNet -----------------------------------------------------------------------------

def test_tinyimagenet_official_layout(env):
    from PIL import Image
    base = env / "data" / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    (base).mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                base / "train" / w / "images" / f"{w}_{k}.JPEG")
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for k, w in enumerate(["n01641577", "n01443537"]):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L").save(
            base / "val" / "images" / f"val_{k}.JPEG")                           # grayscale, as some are
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")

    train = get_dataset("tinyimagenet", "train", augment=False)
    assert len(train) == 6 and train.classes == wnids
    assert [train[i][1] for i in range(6)] == [0, 0, 1, 1, 2, 2]
    x, y = train[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    test = get_dataset("tinyimagenet", "test")
    assert [test[i][1] for i in range(2)] == [2, 0]
    xb, yb = test.__getitems__([1, 0])
    assert xb.shape == (2, 3, 64, 64) and yb.tolist() == [0, 2]


def test_tinyimagenet_plain_folder_layout_png(env):
    from PIL import Image
    base = env / "data" / "tinyimagenet"
    for split, n in (("train", 3), ("val", 1)):
        for c in ("cat", "dog"):
            (base / split / c).mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", (64, 64), (200, 10, 10)).save(base / split / c / f"{k}.png")
    ds = get_dataset("tinyimagenet", "test", mean=False)
    assert len(ds) == 2 and ds.classes == ["cat", "dog"]
    x, y = ds[1]
    assert y == 1 and torch.allclose(x[:, 0, 0], torch.tensor([200, 10, 10]) / 255.0, atol=1e-6)


# --- registry, subsets, transforms ------------------------------------------------------------

def test_registry_errors(env):
    with pytest.raises(ValueError, match="Did you mean 'fashion_mnist'") as err:
        get_dataset("fashionmnist")
    for name in dataset_names():
        assert name in str(err.value)
    with pytest.raises(ValueError, match="split"):
        get_dataset("mnist", "validation")
    with pytest.raises(ValueError, match="static dataset"):
        get_dataset("mnist", T=4)
    for bad in (None, 0, -3):
        with pytest.raises(ValueError, match="event dataset: pass T"):
            get_dataset("nmnist", T=bad)
    with pytest.raises(ValueError, match="subset"):
        get_dataset("mnist", subset=0)
    with pytest.raises(ValueError, match="Did you mean"):
        dataset_info("cifar_10")


def test_dataset_info_fields():
    assert {"fashion_mnist", "mnist", "cifar10", "cifar100", "tinyimagenet",
            "nmnist", "cifar10dvs", "fashion_mnist_dvs"} <= set(dataset_names())
    for name in dataset_names():
        info = dataset_info(name)
        assert {"channels", "size", "num_classes", "is_events", "mean", "std", "description"} <= set(info)
    assert dataset_info("fashion_mnist")["mean"] == (0.1307,) and dataset_info("fashion_mnist")["size"] == (28, 28)
    assert dataset_info("cifar10")["std"] == (0.2023, 0.1994, 0.2010)
    assert dataset_info("tinyimagenet")["num_classes"] == 200
    ev = dataset_info("fashion_mnist_dvs")
    assert ev["is_events"] and ev["channels"] == 2 and ev["size"] == (34, 34) and ev["mean"] is None
    assert "CONVERTED" in ev["description"] and "NOT N-MNIST" in ev["description"]
    assert dataset_info("cifar10dvs")["size"] == (128, 128)


def test_seeded_subset(env):
    write_idx_set(env / "data" / "MNIST" / "raw", n_train=40)
    a = get_dataset("mnist", subset=10, seed=3)
    b = get_dataset("mnist", subset=10, seed=3)
    c = get_dataset("mnist", subset=10, seed=4)
    assert len(a) == 10 and torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert len(set(a.labels.tolist())) > 1
    with pytest.raises(ValueError, match="between 1 and the dataset size 40"):
        get_dataset("mnist", subset=41)


def test_random_crop_and_pad_shapes_and_content():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    torch.manual_seed(0)
    out = random_crop(x, 1)
    assert out.shape == x.shape
    for b in range(2):                       # each output is a window of the zero-padded input
        padded = torch.nn.functional.pad(x[b, 0], (1, 1, 1, 1))
        windows = [padded[i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
        assert any(torch.equal(out[b, 0], w) for w in windows)
    assert pad_to_size(x, (5, 7)).shape == (2, 1, 5, 7)
    with pytest.raises(ValueError, match="smaller"):
        pad_to_size(x, 3)
    t = BatchTransform(mean=(0.5,), std=(0.5,), augment=True, crop_padding=0, hflip=True)
    flipped = t(torch.full((64, 1, 2, 2), 255, dtype=torch.uint8))
    assert torch.allclose(flipped, torch.ones_like(flipped))


# --- the real Debian copy ---------------------------------------------------------------------

@pytest.mark.skipif(not (snnlib.paths.DEBIAN_DATASETS / "fashion-mnist").is_dir(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_real_debian_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNLIB_DATA", str(tmp_path))
    monkeypatch.setattr(snnlib.paths, "ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(locate, "network_available", lambda *a, **k: False)
    start = time.perf_counter()
    train = get_dataset("fashion_mnist", "train", pad_to=32)
    test = get_dataset("fashion_mnist", "test")
    elapsed = time.perf_counter() - start
    assert len(train) == 60000 and len(test) == 10000
    assert sorted(train.labels.unique().tolist()) == list(range(10)) and len(train.classes) == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    x, y = train.__getitems__(list(range(64)))
    assert x.shape == (64, 1, 32, 32) and y.shape == (64,)
    assert elapsed < 60, f"decompressing and loading Fashion-MNIST took {elapsed:.1f} s"
