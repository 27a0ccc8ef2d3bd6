"""MNIST as in-memory tensors, and a batch iterator, without torchvision.

Files are looked up in ``<root>/MNIST/raw/`` (torchvision's layout, so an existing torchvision
download is reused), plain or ``.gz``. The root is, in order: the ``root`` argument, the
``BNLIB_DATA`` environment variable, ``$XDG_CACHE_HOME/bnlib``, ``~/.cache/bnlib``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from torch import Tensor

from bnlib.download import DownloadError, download_verified
from bnlib.idx import IdxFormatError, read_idx

__all__ = ["MNIST_FILES", "Batches", "DataError", "IdxFile", "MNIST", "SplitFiles", "data_root",
           "load_mnist"]

IMAGE_SIZE = 28
NUM_CLASSES = 10


class DataError(RuntimeError):
    """MNIST is missing, corrupt, or cannot be downloaded; the message says how to fix it."""


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

_POINT_ELSEWHERE = ("set the BNLIB_DATA environment variable, or pass root= (--data-dir on the "
                    "command line), to a folder that contains MNIST/raw/ with the four MNIST files")


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


def _locate(file: IdxFile, folder: Path, download: bool) -> Path:
    """The path of ``file`` in ``folder`` (uncompressed preferred), downloading it when allowed."""
    for candidate in (folder / file.name, folder / f"{file.name}.gz"):
        if candidate.is_file():
            return candidate
    if not download:
        raise _data_error(f"MNIST file {file.name} (or {file.name}.gz) not found", folder,
                          f"call load_mnist(..., download=True) with internet access, or "
                          f"{_POINT_ELSEWHERE}")
    try:
        return download_verified(file.name, file.md5, folder)
    except DownloadError as error:
        raise _data_error(f"could not download MNIST file {folder / file.name}.gz: {error}",
                          folder, f"connect to the internet and rerun, or {_POINT_ELSEWHERE}"
                          ) from None


def _read_checked(file: IdxFile, path: Path) -> np.ndarray:
    """The read-only array in ``path``, or a DataError that names the file and the remedy."""
    try:
        array = read_idx(path, file.shape)
        if len(file.shape) == 1 and array.size and array.max() >= NUM_CLASSES:
            raise IdxFormatError(f"it holds the label {array.max()} (expected 0 to "
                                 f"{NUM_CLASSES - 1})")
    except (IdxFormatError, OSError) as error:
        raise _data_error(f"MNIST file {path} is corrupt or unreadable: {error}", path.parent,
                          f"delete {path} and rerun (with download=True a fresh copy is "
                          f"fetched), or {_POINT_ELSEWHERE}") from None
    return array


@functools.lru_cache(maxsize=4)
def _decode_split(files: SplitFiles, image_path: Path, label_path: Path,
                  stamps: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Decoded, read-only ``uint8`` arrays, cached per paths, sizes and modification times."""
    del stamps  # only part of the cache key: a replaced file is decoded again
    images = _read_checked(files.images, image_path)
    labels = _read_checked(files.labels, label_path)
    return images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE), labels


def load_mnist(split: str = "train", root: str | os.PathLike | None = None,
               download: bool = True) -> MNIST:
    r"""Load an MNIST split as tensors, downloading it when missing.

    Pixels are scaled to :math:`x / 255 \in [0, 1]`, as ``torchvision.transforms.ToTensor`` does.
    Each file's header, sizes, exact length and labels (0 to 9) are checked on every load; md5
    checksums of the uncompressed bytes are checked on download. Decoded files are cached in the
    process (keyed by path, size and modification time), so a second load skips decompression;
    every call returns new tensors, so changing them in place never affects another call.

    Args:
        split (str): ``"train"`` (60,000 examples) or ``"test"`` (10,000). Default: ``"train"``.
        root (str or PathLike, optional): dataset root, see :func:`data_root`. Default: ``None``.
        download (bool): fetch missing files into ``<root>/MNIST/raw/``. Default: ``True``.

    Shape:
        - images: :math:`(N, 1, 28, 28)`, ``float32``.
        - labels: :math:`(N,)`, ``int64``.

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"test"``.
        DataError: a file is missing, corrupt, or cannot be downloaded.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    files = MNIST_FILES[split]
    folder = data_root(root) / "MNIST" / "raw"
    image_path = _locate(files.images, folder, download).resolve()
    label_path = _locate(files.labels, folder, download).resolve()
    stats = (image_path.stat(), label_path.stat())
    stamps = tuple(value for stat in stats for value in (stat.st_mtime_ns, stat.st_size))
    images, labels = _decode_split(files, image_path, label_path, stamps)
    return MNIST(images=torch.from_numpy(images.astype(np.float32)).div_(255),
                 labels=torch.from_numpy(labels.astype(np.int64)))


@dataclass(frozen=True, eq=False, repr=False)
class MNIST:
    r"""Images and labels of (part of) MNIST, held as tensors on one device.

    The fields cannot be reassigned; :meth:`subset` returns views that share memory.

    Args:
        images (Tensor): ``float32`` pixels in :math:`[0, 1]`.
        labels (Tensor): ``int64`` class indices.

    Shape:
        - images: :math:`(N, 1, 28, 28)`.
        - labels: :math:`(N,)`.
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.images, Tensor) or not isinstance(self.labels, Tensor):
            raise TypeError(f"images and labels must be tensors, got "
                            f"{type(self.images).__name__} and {type(self.labels).__name__}")
        if self.images.dim() != 4 or tuple(self.images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must have shape (N, 1, 28, 28), got "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must have shape ({self.images.shape[0]},) to match the "
                             f"images, got {tuple(self.labels.shape)}")
        if self.images.dtype != torch.float32 or self.labels.dtype != torch.int64:
            raise TypeError(f"images must be float32 and labels int64, got {self.images.dtype} "
                            f"and {self.labels.dtype}")
        if self.images.device != self.labels.device:
            raise ValueError(f"images and labels must be on one device, got "
                             f"{self.images.device} and {self.labels.device}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return f"MNIST(n={len(self)}, device={self.images.device})"

    def subset(self, n: int) -> MNIST:
        r"""The first ``n`` examples, as views of these tensors.

        Args:
            n (int): how many examples, from 1 to ``len(self)``.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        if not 1 <= n <= len(self):
            raise ValueError(f"n must be between 1 and {len(self)}, got {n}")
        return MNIST(images=self.images[:n], labels=self.labels[:n])

    def to(self, device: torch.device | str) -> MNIST:
        r"""The same examples on ``device`` (``self``'s tensors when already there).

        Args:
            device (torch.device or str): for example ``bnlib.default_device()``.
        """
        return MNIST(images=self.images.to(device), labels=self.labels.to(device))


class Batches:
    r"""Iterate over ``data`` in mini-batches, reshuffled every time iteration starts.

    An in-memory replacement for ``DataLoader(dataset, batch_size, shuffle)``: the order is
    ``torch.randperm(N, generator=generator)`` drawn on the CPU, and batches are gathered with
    ``index_select`` on the data's device. Equal generator seeds give equal batch sequences.

    Args:
        data (MNIST): the examples.
        batch_size (int): examples per batch, at least 1.
        shuffle (bool): a fresh random order each pass, else the stored order. Default: ``True``.
        generator (torch.Generator, optional): CPU generator for the order. Default: ``None``
            (torch's global generator).
        drop_last (bool): skip a final batch smaller than ``batch_size``. Default: ``False``.

    Shape:
        - Each item: images :math:`(B, 1, 28, 28)`, labels :math:`(B,)`, with
          :math:`B = \text{batch\_size}` except perhaps the last batch.
    """

    def __init__(self, data: MNIST, batch_size: int, *, shuffle: bool = True,
                 generator: torch.Generator | None = None, drop_last: bool = False) -> None:
        if not isinstance(data, MNIST):
            raise TypeError(f"data must be an MNIST instance, got {type(data).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator (the order is drawn on the "
                             f"CPU), got one on {generator.device}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.data) // self.batch_size
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # The order is drawn here, not at the first next(), so iter() alone advances the generator.
        order = None
        if self.shuffle:
            order = torch.randperm(len(self.data), generator=self.generator)
            order = order.to(self.data.images.device)
        return self._batches(order)

    def _batches(self, order: Tensor | None) -> Iterator[tuple[Tensor, Tensor]]:
        images, labels = self.data.images, self.data.labels
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            if order is None:
                yield images[start:start + self.batch_size], labels[start:start + self.batch_size]
            else:
                index = order[start:start + self.batch_size]
                yield images.index_select(0, index), labels.index_select(0, index)
