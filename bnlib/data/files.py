"""The MNIST files on disk: where they are, fetching them when missing, and checking them.

Files are looked up in ``<root>/MNIST/raw/`` (torchvision's layout, so an existing torchvision
download is reused), plain or ``.gz``. The root is, in order: the ``root`` argument, the
``BNLIB_DATA`` environment variable, ``$XDG_CACHE_HOME/bnlib``, ``~/.cache/bnlib``. Whatever goes
wrong ends in a :class:`DataError` whose message names the cause and what to do about it.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from bnlib.data.download import DownloadError, SaveError, download_verified
from bnlib.data.idx import IdxFormatError, read_idx

__all__ = ["IMAGE_SIZE", "MNIST_FILES", "NUM_CLASSES", "DataError", "IdxFile", "SplitFiles",
           "data_root", "read_split"]

IMAGE_SIZE = 28
NUM_CLASSES = 10


class DataError(RuntimeError):
    """MNIST is missing, unreadable, corrupt, or cannot be downloaded; the message says why and
    how to fix it."""


@dataclass(frozen=True)
class IdxFile:
    """One MNIST file: name without ``.gz``, sizes, and md5 of the uncompressed bytes."""

    name: str
    shape: tuple[int, ...]
    md5: str


@dataclass(frozen=True)
class SplitFiles:
    """The image file and the label file of one split."""

    images: IdxFile
    labels: IdxFile


def _split_files(prefix: str, count: int, images_md5: str, labels_md5: str) -> SplitFiles:
    return SplitFiles(
        images=IdxFile(f"{prefix}-images-idx3-ubyte", (count, IMAGE_SIZE, IMAGE_SIZE), images_md5),
        labels=IdxFile(f"{prefix}-labels-idx1-ubyte", (count,), labels_md5),
    )


# md5 digests of the canonical uncompressed files (the same as torchvision's extracted files).
MNIST_FILES: Mapping[str, SplitFiles] = MappingProxyType({
    "train": _split_files("train", 60_000, "6bbc9ace898e44ae57da46a324031adb",
                          "a25bea736e30d166cdddb491f175f624"),
    "test": _split_files("t10k", 10_000, "2646ac647ad5339dbf082846283269ea",
                         "27ae3e4e09519cfbb04c329615203637"),
})

# The hints, worded for Python and command-line users alike.
USE_OTHER_FOLDER = ("set the BNLIB_DATA environment variable, or pass root= (--data-dir on the "
                    "command line), to a folder that contains MNIST/raw/ with the four MNIST files")
ALLOW_DOWNLOAD = ("allow downloading (download=True in Python; leave out --no-download on the "
                  "command line) on a machine with internet access")
DOWNLOAD_ELSEWHERE = ("set BNLIB_DATA, or pass root= (--data-dir), to a writable folder to "
                      "download into, or to one that already contains MNIST/raw/")


def data_root(root: str | os.PathLike | None = None) -> Path:
    r"""Return the folder whose ``MNIST/raw/`` holds the MNIST files.

    Args:
        root (str or PathLike, optional): used when given (``~`` is expanded). Default: ``None``,
            meaning ``$BNLIB_DATA`` when set, else ``$XDG_CACHE_HOME/bnlib``, else
            ``~/.cache/bnlib``.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("BNLIB_DATA"):
        return Path(os.environ["BNLIB_DATA"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME")
    if cache_home and Path(cache_home).is_absolute():  # the XDG spec ignores relative values
        return Path(cache_home) / "bnlib"
    return Path.home() / ".cache" / "bnlib"


def _data_error(problem: str, folder: Path, fix: str) -> DataError:
    return DataError(f"{problem}\n  folder searched: {folder}\n  to fix: {fix}")


def _find(file: IdxFile, folder: Path) -> Path | None:
    """The path of ``file`` in ``folder`` (uncompressed preferred), or ``None`` when absent."""
    try:
        for candidate in (folder / file.name, folder / f"{file.name}.gz"):
            if candidate.is_file():
                return candidate
            if candidate.exists():
                kind = "a folder" if candidate.is_dir() else "not a regular file"
                raise _data_error(f"{candidate} is {kind}, where the MNIST file of that name "
                                  f"should be", folder,
                                  f"move or rename {candidate}, or {USE_OTHER_FOLDER}")
    except PermissionError as error:
        raise _data_error(f"the data folder cannot be searched: {error}", folder,
                          f"give this user read and search permission on {folder} and the "
                          f"folders above it, or {USE_OTHER_FOLDER}") from None
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise _data_error(f"{existing} is a file, where the data folder needs a folder", folder,
                          f"move or rename {existing}, or {USE_OTHER_FOLDER}")
    return None


def _check_writable(folder: Path) -> None:
    """Fail before any download when ``folder`` cannot be created or written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise _data_error(f"MNIST files are missing and cannot be downloaded into the data "
                          f"folder: {error}", folder,
                          f"make {folder} writable, or {DOWNLOAD_ELSEWHERE}") from None


def _locate(file: IdxFile, folder: Path, download: bool) -> Path:
    """The path of ``file`` in ``folder``, downloading it when missing and allowed."""
    found = _find(file, folder)
    if found is not None:
        return found
    if not download:
        raise _data_error(f"MNIST file {file.name} (or {file.name}.gz) not found, and "
                          f"downloading is turned off", folder,
                          f"{USE_OTHER_FOLDER}, or {ALLOW_DOWNLOAD}")
    _check_writable(folder)
    try:
        return download_verified(file.name, file.md5, folder)
    except SaveError as error:
        raise _data_error(f"MNIST file {file.name}.gz was downloaded but could not be saved: "
                          f"{error}", folder, f"make room in, or make writable, {folder}, or "
                          f"{DOWNLOAD_ELSEWHERE}") from None
    except DownloadError as error:
        raise _data_error(f"could not download MNIST file {folder / file.name}.gz: {error}",
                          folder, f"check the internet connection (and any proxy) and rerun, "
                          f"or {USE_OTHER_FOLDER}") from None


def _read_checked(file: IdxFile, path: Path) -> np.ndarray:
    """The read-only array in ``path``, or a DataError that names the cause and the remedy."""
    try:
        array = read_idx(path, file.shape)
        if len(file.shape) == 1 and array.size and array.max() >= NUM_CLASSES:
            raise IdxFormatError(f"it holds the label {array.max()} (expected 0 to "
                                 f"{NUM_CLASSES - 1})")
    except IdxFormatError as error:
        raise _data_error(f"MNIST file {path} is corrupt: {error}", path.parent,
                          f"delete {path} and rerun (a fresh copy is downloaded unless "
                          f"downloading is turned off), or {USE_OTHER_FOLDER}") from None
    except PermissionError as error:
        raise _data_error(f"MNIST file {path} cannot be read: {error}", path.parent,
                          f"give this user read permission on it (for example chmod a+r "
                          f"{path}), or {USE_OTHER_FOLDER}") from None
    except OSError as error:
        raise _data_error(f"MNIST file {path} could not be read: {error}", path.parent,
                          f"check that {path} is a readable file on a working disk, or "
                          f"{USE_OTHER_FOLDER}") from None
    return array


@functools.lru_cache(maxsize=4)
def _decode_split(files: SplitFiles, image_path: Path, label_path: Path,
                  stamps: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Decoded, read-only ``uint8`` arrays, cached per paths, sizes and modification times."""
    del stamps  # only part of the cache key: a replaced file is decoded again
    images = _read_checked(files.images, image_path)
    labels = _read_checked(files.labels, label_path)
    return images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE), labels


def read_split(split: str, root: str | os.PathLike | None = None,
               download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    r"""Find, fetch when missing and allowed, check and decode the two files of one split.

    Each file's header, sizes, exact length and labels (0 to 9) are checked on every call; md5
    checksums of the uncompressed bytes are checked on download. Decoded files are cached in the
    process (keyed by path, size and modification time).

    Args:
        split (str): ``"train"`` or ``"test"``.
        root (str or PathLike, optional): dataset root, see :func:`data_root`. Default: ``None``.
        download (bool): fetch missing files into ``<root>/MNIST/raw/``. Default: ``True``.

    Returns:
        Read-only ``uint8`` arrays: images :math:`(N, 1, 28, 28)` and labels :math:`(N,)`.

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"test"``.
        DataError: a file is missing, unreadable or corrupt, or cannot be downloaded.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    files = MNIST_FILES[split]
    folder = data_root(root) / "MNIST" / "raw"
    image_path = _locate(files.images, folder, download).resolve()
    label_path = _locate(files.labels, folder, download).resolve()
    stats = (image_path.stat(), label_path.stat())
    stamps = tuple(value for stat in stats for value in (stat.st_mtime_ns, stat.st_size))
    return _decode_split(files, image_path, label_path, stamps)
