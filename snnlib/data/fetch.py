"""The data step (``python -m snnlib data``, ``make data``): make the named datasets present.

For each dataset, in order: already on disk (the folders of :mod:`snnlib.data.locate`, the Debian
folder) -> nothing to do; the Debian package, where apt is usable (root and ``apt-get`` on PATH);
a download, where the network answers. Whatever is still missing is listed in one
:class:`DataMissing` error saying, dataset by dataset, how to get it. With the data present the
step only looks at files: it takes seconds.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import locate
from .events import CIFAR10DVS_LAYOUT, NMNIST_LAYOUT, _has_file, aedat_available
from .registry import check_name, get_dataset
from .vision import DOWNLOAD_URLS, TINY_LAYOUT, _find_tiny

DEBIAN_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}
"""dataset -> Debian package that installs it into the Debian folder."""

BUILT_FROM = {"fashion_mnist_dvs": ("fashion_mnist",), "synthetic": ()}
"""Datasets made on the fly -> the datasets on disk they are made from."""

CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", ["train", "test", "meta"]),
}
"""CIFAR: (extracted folder, archive, files in the folder), torchvision's layout."""

HOW = {
    "fashion_mnist": "apt-get install dataset-fashion-mnist (as root; Debian/Ubuntu), or copy the four IDX "
                     "files (.gz or not) into <data folder>/FashionMNIST/raw/",
    "mnist": "copy the four MNIST IDX files (.gz or not) into <data folder>/MNIST/raw/",
    "cifar10": "put cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/) into a data folder",
    "cifar100": "put cifar-100-python.tar.gz (or its extracted cifar-100-python/) into a data folder",
    "tinyimagenet": "unzip tiny-imagenet-200.zip into a data folder:\n" + TINY_LAYOUT,
    "nmnist": "put N-MNIST's train.zip and test.zip (Orchard et al. 2015) into <data folder>/NMNIST/:\n"
              + NMNIST_LAYOUT,
    "cifar10dvs": "put CIFAR10DVS.zip (Li et al. 2017) into <data folder>/CIFAR10DVS/, and `pip install "
                  "aedat` to read it:\n" + CIFAR10DVS_LAYOUT,
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class DataMissing(locate.DatasetNotFound):
    """Datasets a step needs are missing and could not be installed; the message lists each and how to get it."""


def sources(names) -> list[str]:
    """The datasets on disk behind ``names`` (converted data -> its source; synthetic -> nothing), sorted."""
    out = set()
    for n in names:
        check_name(n)
        out.update(BUILT_FROM.get(n, (n,)))
    return sorted(out)


def on_disk(name: str) -> Path | None:
    """Where dataset ``name`` is on disk (a data folder or the Debian folder), else None. Only looks."""
    dirs = locate.search_dirs()
    if name in ("fashion_mnist", "mnist"):
        folder = "FashionMNIST" if name == "fashion_mnist" else "MNIST"
        for d in dirs:
            if locate._idx_ready(d / folder / "raw") or locate._idx_gz_ready(d / folder / "raw"):
                return d / folder / "raw"
        if folder in locate.DEBIAN_FOLDERS:
            debian = Path(locate.DEBIAN_DIR) / locate.DEBIAN_FOLDERS[folder]
            if locate._idx_gz_ready(debian):
                return debian
        return None
    if name in CIFAR_FILES:
        folder, archive, files = CIFAR_FILES[name]
        for d in dirs:
            if all((d / folder / f).is_file() for f in files):
                return d / folder
            if (d / archive).is_file():
                return d / archive
        return None
    if name == "tinyimagenet":
        found = _find_tiny(dirs)
        return None if found is None else found[1]
    if name == "nmnist":
        for d in dirs:
            base = d / "NMNIST"
            if all(_has_file(base / s, ".bin") or (base / z).is_file()
                   for s, z in (("Train", "train.zip"), ("Test", "test.zip"))):
                return base
        return None
    if name == "cifar10dvs":
        for d in dirs:
            base = d / "CIFAR10DVS"
            if _has_file(base, ".aedat4") or _has_file(base, ".zip"):
                return base
        return None
    raise ValueError(f"{name!r} is made on the fly, not kept on disk; pass it through sources() first")


def download_url(name: str) -> str:
    """The address probed before ``name`` is downloaded (tonic's, for the event datasets)."""
    if name in DOWNLOAD_URLS:
        return DOWNLOAD_URLS[name]
    from tonic.datasets import CIFAR10DVS, NMNIST
    return NMNIST.train_url if name == "nmnist" else CIFAR10DVS.url


def apt_usable() -> bool:
    """Whether this process can install Debian packages: root, with ``apt-get`` on PATH."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(package: str, log=_say) -> str | None:
    """``apt-get update`` then ``apt-get install -y --reinstall package`` (the files must come back even
    when dpkg thinks it is installed). Returns None on success, else apt's last output lines."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing the Debian package {package} (apt-get update, apt-get install)")
    subprocess.run(["apt-get", "update", "-qq"], env=env, stdin=subprocess.DEVNULL, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "--reinstall", package], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    return "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:]) or f"exit status {done.returncode}"


def _download(name: str) -> None:
    """Fetch ``name`` through the library's loaders (both splits), which download when the host answers."""
    T = 1 if name in ("nmnist", "cifar10dvs") else None
    splits = ("train",) if name == "cifar10dvs" else ("train", "test")
    for split in splits:
        get_dataset(name, split, T=T)


def ensure(names, *, apt: bool = True, download: bool = True, log=_say) -> dict[str, Path]:
    """Make the datasets behind ``names`` present: on disk already, else the Debian package (``apt`` and
    :func:`apt_usable`), else a download (``download`` and the host answers). Returns dataset -> where it
    is; raises :class:`DataMissing` listing every dataset still missing and how to get each."""
    found: dict[str, Path] = {}
    problems: dict[str, list[str]] = {}
    for name in sources(names):
        where = on_disk(name)
        notes = problems.setdefault(name, [])
        package = DEBIAN_PACKAGES.get(name)
        if where is None and package:
            if apt and apt_usable():
                error = apt_install(package, log)
                where = on_disk(name)
                if error:
                    notes.append(f"apt-get install {package} failed:\n      " + error.replace("\n", "\n      "))
                elif where is None:
                    notes.append(f"apt-get installed {package} but {locate.DEBIAN_DIR} still lacks its files "
                                 f"(see `dpkg -L {package}`)")
            elif apt and shutil.which("apt-get"):
                notes.append(f"apt-get is here but this is not root: run `sudo apt-get install -y {package}`")
            elif apt:
                notes.append("apt-get is not available on this machine")
        if where is None:
            url = download_url(name)
            if not download:
                notes.append("download not attempted (disabled)")
            elif not locate.network_available(url):
                offline = os.environ.get("SNNLIB_OFFLINE", "") not in ("", "0")
                notes.append(f"download not possible: {url} is unreachable from here"
                             + (" (SNNLIB_OFFLINE is set)" if offline else ""))
            else:
                log(f"downloading {name}")
                try:
                    _download(name)
                except (locate.DatasetNotFound, ImportError, OSError) as err:
                    notes.append(f"download failed: {err}")
                where = on_disk(name)
        if name == "cifar10dvs" and where is not None and not aedat_available():
            notes.append("its .aedat4 recordings need the `aedat` package: pip install aedat")
            where = None
        if where is not None:
            found[name] = where
            problems.pop(name)
    if problems:
        raise DataMissing(missing_message(problems))
    return found


def missing_message(problems: dict[str, list[str]]) -> str:
    """One message for every missing dataset: where we looked, what was tried, how to get it."""
    lines = [f"{len(problems)} dataset(s) missing: {', '.join(problems)}.",
             "Looked in: " + ", ".join(str(d) for d in locate.search_dirs())
             + f", and the Debian folder {locate.DEBIAN_DIR}."]
    for name, notes in problems.items():
        lines.append(f"- {name}:")
        lines += [f"    {n}" for n in notes]
        lines.append("    how to get it: " + HOW[name].replace("\n", "\n      "))
    lines.append("Then run the step again, or point SNNLIB_DATA at a folder holding the data.")
    return "\n".join(lines)
