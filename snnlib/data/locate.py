"""Finding datasets on disk, installing the Debian Fashion-MNIST copy, and probing the network.

Search order for every dataset: ``$SNNLIB_DATA``, ``<repo>/data``, ``./data``
(:func:`snnlib.paths.data_dirs`), then the Debian folder ``/usr/share/datasets``
(Fashion-MNIST only), then a download when the network answers. Nothing here ever waits
on the network for more than :data:`PROBE_TIMEOUT` seconds.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from .. import paths

DEBIAN_DIR = paths.DEBIAN_DATASETS
"""Debian's dataset folder; tests point it elsewhere."""

PROBE_TIMEOUT = 2.5
"""Seconds a network probe may take, DNS lookup included."""

_probe_cache: dict[tuple[str, int], tuple[float, bool]] = {}
_PROBE_TTL = 300.0


class DatasetNotFound(FileNotFoundError):
    """A dataset is not on disk and cannot be downloaded; the message says where we looked and what to do."""


class BadArchive(DatasetNotFound):
    """A dataset archive that fails its known checksum or holds a member that would land outside the
    extraction folder; nothing of it is extracted. The message names the archive."""


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Folders to look in: ``[root]`` when given, else :func:`snnlib.paths.data_dirs`."""
    if root is not None:
        return [Path(root).expanduser().resolve()]
    return paths.data_dirs()


def is_writable(folder: Path) -> bool:
    """True when ``folder`` exists or can be made, and a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def writable_dir(root: str | os.PathLike | None = None) -> Path:
    """The first writable folder of :func:`search_dirs` (where downloads and caches go)."""
    dirs = search_dirs(root)
    for d in dirs:
        if is_writable(d):
            return d
    raise PermissionError("no writable data folder among " + ", ".join(map(str, dirs))
                          + "; set SNNLIB_DATA to a writable folder")


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where derived data (event frames, split indices) is cached: ``$SNNLIB_CACHE``, else
    ``<first writable data folder>/cache``."""
    if root is None and os.environ.get("SNNLIB_CACHE"):
        return Path(os.environ["SNNLIB_CACHE"]).expanduser().resolve()
    return writable_dir(root) / "cache"


def _connect(host: str, port: int, result: list) -> None:
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
        result.append(True)
    except OSError:
        result.append(False)


def network_available(url: str, timeout: float | None = None) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (default
    :data:`PROBE_TIMEOUT`). The probe runs in a daemon thread so a slow DNS lookup cannot hang
    the caller. ``SNNLIB_OFFLINE=1`` makes it always False. Results are remembered for 5 minutes."""
    if os.environ.get("SNNLIB_OFFLINE", "") not in ("", "0"):
        return False
    parsed = urlparse(url)
    host = parsed.hostname or url
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    key = (host, port)
    now = time.monotonic()
    if key in _probe_cache and now - _probe_cache[key][0] < _PROBE_TTL:
        return _probe_cache[key][1]
    result: list[bool] = []
    worker = threading.Thread(target=_connect, args=(host, port, result), daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT if timeout is None else timeout)
    ok = bool(result and result[0])
    _probe_cache[key] = (now, ok)
    return ok


def may_download(url: str, download: bool | None) -> bool:
    """Decide whether to download: never when ``download`` is False, otherwise when the probe succeeds."""
    if download is False:
        return False
    return network_available(url)


def not_found(name: str, looked: list[Path], layout: str, how: str, *, url: str | None = None,
              download: bool | None = None, extra: str = "") -> DatasetNotFound:
    """Build the :class:`DatasetNotFound` for ``name`` listing the folders looked in and how to fix it."""
    lines = [f"dataset {name!r} not found.", "Looked in:"]
    lines += [f"  - {d}" for d in looked]
    lines.append(f"Expected layout (inside one of those folders):\n{layout}")
    if url is not None:
        if download is False:
            lines.append("Download was disabled (download=False).")
        else:
            lines.append(f"Download not possible: {urlparse(url).hostname} is unreachable from this machine.")
    if extra:
        lines.append(extra)
    lines.append(f"How to get it: {how}")
    lines.append("Or point SNNLIB_DATA at a folder holding it (or pass root=...).")
    return DatasetNotFound("\n".join(lines))


def atomic_write(target: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the result to ``target`` (same folder, so atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def gunzip_to(source: Path, target: Path) -> None:
    """Decompress ``source`` (.gz) into ``target`` atomically (temp file, then rename)."""
    def write(tmp: Path) -> None:
        with gzip.open(source, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, length=1 << 20)
    atomic_write(target, write)


# --- archives ---------------------------------------------------------------------------------

def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file, read in ``chunk``-byte pieces."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_md5(archive: Path, md5: str) -> None:
    """Raise :class:`BadArchive` naming ``archive`` unless its md5 is ``md5``."""
    got = file_md5(archive)
    if got != md5.lower():
        raise BadArchive(f"archive {archive} has md5 {got}, not the known {md5} of the original: it is corrupted, "
                         "incomplete or not the official file, so it was not extracted. Replace it with the "
                         "original archive (or put the extracted folder there instead).")


def _inside(root: Path, path: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _check_member(archive: Path, root: Path, name: str, link: str | None = None, hard: bool = False) -> None:
    """Refuse member ``name`` (and its link target) unless it resolves inside ``root`` (already resolved)."""
    def refuse(why: str):
        raise BadArchive(f"archive {archive} was not extracted: member {name!r} {why} {root}")
    if os.path.isabs(name) or not _inside(root, (root / name).resolve()):
        refuse("would be written outside the target folder")
    if link is not None:
        base = root if hard else (root / name).parent
        if os.path.isabs(link) or not _inside(root, (base / link).resolve()):
            refuse(f"links to {link!r}, outside the target folder")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *, md5: str | None = None) -> None:
    """Extract a tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) or zip ``archive`` into ``dest``.

    First the checksum (when ``md5`` is known), then every member: absolute paths, ``..`` escapes, links
    pointing outside ``dest`` and device files are refused with a :class:`BadArchive` naming the archive,
    before anything is written. Tar members are extracted with tarfile's ``data`` filter as well.
    """
    archive, dest = Path(archive), Path(dest)
    if md5 is not None:
        check_md5(archive, md5)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                _check_member(archive, root, info.filename)
            z.extractall(root)
        return
    try:
        tar = tarfile.open(archive)
    except tarfile.TarError as err:
        raise BadArchive(f"archive {archive} is neither a zip nor a readable tar file ({err})") from err
    with tar:
        members = tar.getmembers()
        for m in members:
            if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                raise BadArchive(f"archive {archive} was not extracted: member {m.name!r} is a device or fifo")
            _check_member(archive, root, m.name, m.linkname if (m.issym() or m.islnk()) else None, m.islnk())
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters; members were checked above
            tar.extractall(root, members=members)


# --- IDX (MNIST-like) files -------------------------------------------------------------------

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_FOLDERS = {"FashionMNIST": "fashion-mnist"}
"""torchvision class folder -> folder under /usr/share/datasets holding the .gz files."""


def _idx_ready(raw: Path) -> bool:
    return all((raw / f).is_file() for f in IDX_FILES)


def _idx_gz_ready(folder: Path) -> bool:
    return all((folder / f"{f}.gz").is_file() for f in IDX_FILES)


def _install_idx(source: Path, dest_raw: Path) -> None:
    for f in IDX_FILES:
        if not (dest_raw / f).is_file():
            gunzip_to(source / f"{f}.gz", dest_raw / f)


def locate_idx(folder: str, root=None) -> Path | None:
    """The data folder whose ``<folder>/raw`` holds the four decompressed IDX files, making it so
    from ``.gz`` copies when needed (in place, else in the first writable data folder), then from
    the Debian folder. ``folder`` is torchvision's class name (``MNIST``, ``FashionMNIST``).
    Returns None when no copy exists."""
    dirs = search_dirs(root)
    for d in dirs:
        if _idx_ready(d / folder / "raw"):
            return d
    sources = [(d / folder / "raw", d) for d in dirs]  # (where the .gz are, preferred destination)
    if folder in DEBIAN_FOLDERS:
        sources.append((Path(DEBIAN_DIR) / DEBIAN_FOLDERS[folder], None))
    for src, dest in sources:
        if _idx_gz_ready(src):
            if dest is None or not is_writable(src):
                dest = writable_dir(root)
            _install_idx(src, dest / folder / "raw")
            return dest
    return None


def idx_layout(folder: str) -> str:
    """Human-readable expected layout for an MNIST-like dataset."""
    return "\n".join(f"  {folder}/raw/{f}   (or {f}.gz)" for f in IDX_FILES)


def looked_in(root=None, debian: str | None = None) -> list[Path]:
    """Folders searched, for error messages (adds the Debian folder when it applies)."""
    dirs = list(search_dirs(root))
    if debian:
        dirs.append(Path(DEBIAN_DIR) / debian)
    return dirs
