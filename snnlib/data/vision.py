"""Static image datasets: Fashion-MNIST, MNIST, CIFAR-10/100 (through torchvision) and TinyImageNet.

Every loader returns items ``(x float32 [C, H, W], y int)`` and batches via ``__getitems__``:
``(x float32 [B, C, H, W], y int64 [B])``. Pixels are scaled to [0, 1], optionally zero-padded
(``pad_to``), augmented for training, then normalised with the dataset's mean/std.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import locate
from .batch_transforms import BatchTransform
from .tensor_dataset import TensorImageDataset


@dataclass(frozen=True)
class StaticSpec:
    """What a static dataset looks like and how it is normalised and augmented by default."""

    channels: int
    size: tuple[int, int]
    num_classes: int
    num_train: int
    num_test: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int        # random-crop padding (px) when augmenting
    hflip: bool              # random horizontal flips when augmenting
    augment_by_default: bool  # augment the train split when augment=None
    description: str


MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
TINY_MEAN, TINY_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)

STATIC_SPECS = {
    "fashion_mnist": StaticSpec(
        1, (28, 28), 10, 60000, 10000, MNIST_MEAN, MNIST_STD, 2, False, False,
        "Fashion-MNIST: 28x28 grayscale clothing images, 60000 train / 10000 test. Normalised with the "
        "MNIST statistics (0.1307, 0.3081) as the IDE papers do; pass mean/std to change. "
        "augment=True means random crop with 2 px padding (no flips)."),
    "mnist": StaticSpec(
        1, (28, 28), 10, 60000, 10000, MNIST_MEAN, MNIST_STD, 2, False, False,
        "MNIST: 28x28 grayscale digits, 60000 train / 10000 test. augment=True means random crop with "
        "2 px padding (no flips)."),
    "cifar10": StaticSpec(
        3, (32, 32), 10, 50000, 10000, CIFAR_MEAN, CIFAR_STD, 4, True, True,
        "CIFAR-10: 32x32 RGB, 50000 train / 10000 test. Train augmentation: random crop (4 px padding) "
        "+ horizontal flip."),
    "cifar100": StaticSpec(
        3, (32, 32), 100, 50000, 10000, CIFAR_MEAN, CIFAR_STD, 4, True, True,
        "CIFAR-100 (fine labels): 32x32 RGB, 50000 train / 10000 test. Normalised with the CIFAR-10 "
        "statistics as the IDE code does. Train augmentation: random crop (4 px padding) + flip."),
    "tinyimagenet": StaticSpec(
        3, (64, 64), 200, 100000, 10000, TINY_MEAN, TINY_STD, 4, True, True,
        "Tiny ImageNet: 64x64 RGB, 200 classes, 100000 train / 10000 val (used as the test split). "
        "Read lazily from JPEG/PNG files. Train augmentation: random crop (4 px padding) + flip."),
}

TORCHVISION_CLASSES = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10",
                       "cifar100": "CIFAR100"}
DOWNLOAD_URLS = {
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "tinyimagenet": "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
}


def make_transform(name: str, split: str, *, pad_to=None, augment: bool | None = None,
                   mean=None, std=None) -> BatchTransform:
    """The :class:`BatchTransform` for ``name``/``split`` with the dataset's defaults filled in.

    ``mean``/``std``: sequences overriding the defaults, or ``mean=False`` to skip normalisation.
    """
    spec = STATIC_SPECS[name]
    if augment is None:
        augment = spec.augment_by_default and split == "train"
    if mean is False:
        mean = std = None
    else:
        mean = tuple(float(m) for m in (spec.mean if mean is None else mean))
        std = tuple(float(s) for s in (spec.std if std is None else std))
        if len(mean) != spec.channels or len(std) != spec.channels:
            raise ValueError(f"{name} has {spec.channels} channel(s); got mean={mean}, std={std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
    return BatchTransform(mean=mean, std=std, pad_to=pad_to, augment=bool(augment),
                          crop_padding=spec.crop_padding, hflip=spec.hflip)


def _info(name: str, transform: BatchTransform, split: str) -> dict:
    spec = STATIC_SPECS[name]
    return {"name": name, "split": split, "channels": spec.channels,
            "size": transform.output_size(spec.size), "num_classes": spec.num_classes,
            "is_events": False, "mean": transform.mean, "std": transform.std,
            "description": spec.description}


# --- MNIST-like (IDX files) --------------------------------------------------------------------

def load_mnist_like(name: str, split: str, *, pad_to=None, augment=None, mean=None, std=None,
                    root=None, download=None) -> TensorImageDataset:
    """Fashion-MNIST or MNIST as a :class:`TensorImageDataset` (uint8 [N, 1, 28, 28] in memory).

    Looks for ``<dir>/<FashionMNIST|MNIST>/raw/*-ubyte`` (or ``.gz``) in the data folders, then the
    Debian folder (Fashion-MNIST), then downloads when the network answers.
    """
    import torchvision.datasets as tvd

    folder = TORCHVISION_CLASSES[name]
    cls = getattr(tvd, folder)
    found = locate.locate_idx(folder, root)
    if found is None:
        url = DOWNLOAD_URLS[name]
        debian = locate.DEBIAN_FOLDERS.get(folder)
        if not locate.may_download(url, download):
            how = (f"`apt-get install dataset-fashion-mnist` (installs {locate.DEBIAN_DIR}/fashion-mnist), or "
                   if name == "fashion_mnist" else "")
            how += f"copy the four IDX files into <data folder>/{folder}/raw/"
            raise locate.not_found(name, locate.looked_in(root, debian), locate.idx_layout(folder), how,
                                   url=url, download=download)
        found = locate.writable_dir(root)
        try:
            cls(str(found), train=True, download=True)
        except Exception as err:  # torchvision raises RuntimeError/URLError variants
            raise locate.DatasetNotFound(f"downloading {name} into {found} failed: {err}") from err
    try:
        ds = cls(str(found), train=split == "train", download=False)
    except (RuntimeError, AssertionError, TypeError) as err:
        raise locate.DatasetNotFound(f"{name} files in {found / folder / 'raw'} could not be read ({err}); "
                                     f"they may be truncated or not IDX files") from err
    transform = make_transform(name, split, pad_to=pad_to, augment=augment, mean=mean, std=std)
    images = ds.data.unsqueeze(1).contiguous()
    info = _info(name, transform, split)
    info["root"] = str(found)
    return TensorImageDataset(images, torch.as_tensor(ds.targets, dtype=torch.int64), transform,
                              classes=ds.classes, info=info)


# --- CIFAR (python pickle batches) -------------------------------------------------------------

def _cifar_located(cls, dirs: list[Path], root) -> Path | None:
    """The data folder holding ``cls``'s extracted batches, extracting an archive found in a data folder
    (after its md5 check against torchvision's ``tgz_md5``; members are confined to the folder)."""
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    for d in dirs:
        if all((d / cls.base_folder / f).is_file() for f in names):
            return d
    for d in dirs:
        archive = d / cls.filename
        if archive.is_file():
            dest = d if locate.is_writable(d) else locate.writable_dir(root)
            locate.safe_extract(archive, dest, md5=cls.tgz_md5)
            return dest
    return None


def _download_cifar(cls, name: str, target: Path) -> None:
    """Download ``cls``'s archive into ``target`` (torchvision checks its md5), then extract it safely."""
    from torchvision.datasets.utils import download_url

    try:
        download_url(cls.url, str(target), cls.filename, cls.tgz_md5)
    except Exception as err:  # torchvision raises RuntimeError/URLError variants
        raise locate.DatasetNotFound(f"downloading {name} into {target} failed: {err}") from err
    locate.safe_extract(target / cls.filename, target, md5=cls.tgz_md5)


def load_cifar(name: str, split: str, *, pad_to=None, augment=None, mean=None, std=None,
               root=None, download=None) -> TensorImageDataset:
    """CIFAR-10 or CIFAR-100 as a :class:`TensorImageDataset` (uint8 [N, 3, 32, 32] in memory).

    Looks for ``<dir>/cifar-10-batches-py/`` (``cifar-100-python/``) or the ``.tar.gz`` archive.
    torchvision verifies each file's md5; a copy that fails raises :class:`DatasetNotFound`.
    """
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION_CLASSES[name])
    dirs = locate.search_dirs(root)
    found = _cifar_located(cls, dirs, root)
    if found is None:
        url = DOWNLOAD_URLS[name]
        if not locate.may_download(url, download):
            layout = "\n".join(f"  {cls.base_folder}/{f}" for f, _ in cls.train_list + cls.test_list)
            layout += f"\n  {cls.base_folder}/{cls.meta['filename']}\n  (or the archive {cls.filename})"
            raise locate.not_found(name, dirs, layout, f"download {url} and put it (or its extracted "
                                   f"folder) into a data folder", url=url, download=download)
        found = locate.writable_dir(root)
        _download_cifar(cls, name, found)
    try:
        ds = cls(str(found), train=split == "train", download=False)
    except RuntimeError as err:
        raise locate.DatasetNotFound(
            f"{name} files in {found / cls.base_folder} failed torchvision's md5 check ({err}); the copy is "
            f"corrupted or incomplete: replace it with the original files") from err
    transform = make_transform(name, split, pad_to=pad_to, augment=augment, mean=mean, std=std)
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    info = _info(name, transform, split)
    info["root"] = str(found)
    return TensorImageDataset(images, torch.as_tensor(ds.targets, dtype=torch.int64), transform,
                              classes=ds.classes, info=info)


# --- TinyImageNet (folders of JPEG/PNG files) --------------------------------------------------

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
TINY_LAYOUT = """\
  tiny-imagenet-200/wnids.txt                     (optional; else the train folder names)
  tiny-imagenet-200/train/<wnid>/images/*.JPEG   (the official archive)
  tiny-imagenet-200/val/images/*.JPEG + val/val_annotations.txt
or the plain ImageFolder layout:
  tinyimagenet/train/<class>/*.JPEG|*.jpg|*.png
  tinyimagenet/val/<class>/*.JPEG|*.jpg|*.png      (val is the test split)"""


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _tiny_official(base: Path, split: str) -> tuple[list[str], list[tuple[Path, str]]]:
    train = base / "train"
    wnids_file = base / "wnids.txt"
    if wnids_file.is_file():
        classes = sorted(w.strip() for w in wnids_file.read_text().split() if w.strip())
    else:
        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if split == "train":
        return classes, [(p, c) for c in classes for p in _images_in(train / c)]
    annotations = base / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise locate.DatasetNotFound(f"{annotations} is missing: it maps val images to classes")
    items = []
    for line in annotations.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            items.append((base / "val" / "images" / parts[0], parts[1]))
    return classes, items


def _tiny_folder(base: Path, split: str) -> tuple[list[str], list[tuple[Path, str]]]:
    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    sub = base / ("train" if split == "train" else "val")
    if split != "train" and not sub.is_dir() and (base / "test").is_dir():
        sub = base / "test"
    items = [(p, c) for c in classes if (sub / c).is_dir() for p in _images_in(sub / c)]
    return classes, items


class ImageFileDataset(Dataset):
    """Images read lazily from files; same item/batch format as :class:`TensorImageDataset`.

    Images are converted to RGB and, when not ``size``, resized (bilinear) to ``size`` (H, W).
    """

    def __init__(self, files: list[Path], labels: list[int], transform: BatchTransform,
                 size: tuple[int, int], classes: list[str], info: dict):
        self.files, self.labels = list(files), torch.as_tensor(labels, dtype=torch.int64)
        self.transform, self.size, self.classes, self.info = transform, size, classes, info

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as img:
            img = img.convert("RGB")
            if img.size != (self.size[1], self.size[0]):
                img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = [int(i) for i in indices]
        images = torch.stack([self._read(i) for i in idx])
        return self.transform(images), self.labels[idx]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        x, y = self.__getitems__([index % len(self)])
        return x[0], int(y[0])


def _find_tiny(dirs: list[Path]):
    for d in dirs:
        if (d / "tiny-imagenet-200" / "train").is_dir():
            return d, d / "tiny-imagenet-200", _tiny_official
        if (d / "tinyimagenet" / "train").is_dir():
            return d, d / "tinyimagenet", _tiny_folder
    return None


def load_tinyimagenet(split: str, *, pad_to=None, augment=None, mean=None, std=None,
                      root=None, download=None) -> ImageFileDataset:
    """Tiny ImageNet as a lazy :class:`ImageFileDataset` (64x64 RGB, 200 classes; ``test`` = val)."""
    dirs = locate.search_dirs(root)
    found = _find_tiny(dirs)
    if found is None:
        url = DOWNLOAD_URLS["tinyimagenet"]
        if not locate.may_download(url, download):
            raise locate.not_found("tinyimagenet", dirs, TINY_LAYOUT, f"download {url} and unzip it into a "
                                   "data folder", url=url, download=download)
        from torchvision.datasets.utils import download_url

        target = locate.writable_dir(root)
        try:
            download_url(url, str(target))
        except Exception as err:
            raise locate.DatasetNotFound(f"downloading tinyimagenet into {target} failed: {err}") from err
        locate.safe_extract(target / Path(url).name, target)   # members confined to the folder
        found = _find_tiny([target])
    _, base, reader = found
    classes, items = reader(base, split)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for _, c in items if c not in index})
    if unknown:
        raise ValueError(f"tinyimagenet {split} images name classes absent from train: {unknown[:5]}")
    if not items:
        raise locate.DatasetNotFound(f"no {split} images found under {base}; expected layout:\n{TINY_LAYOUT}")
    transform = make_transform("tinyimagenet", split, pad_to=pad_to, augment=augment, mean=mean, std=std)
    info = _info("tinyimagenet", transform, split)
    info.update(root=str(base), num_classes=len(classes))
    return ImageFileDataset([p for p, _ in items], [index[c] for _, c in items], transform,
                            STATIC_SPECS["tinyimagenet"].size, classes, info)


def load_static(name: str, split: str, **kwargs):
    """Dispatch to the loader of static dataset ``name``."""
    if name in ("fashion_mnist", "mnist"):
        return load_mnist_like(name, split, **kwargs)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, split, **kwargs)
    if name == "tinyimagenet":
        return load_tinyimagenet(split, **kwargs)
    raise ValueError(f"{name!r} is not a static dataset")
