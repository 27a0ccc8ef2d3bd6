"""MNIST as in-memory tensors, and a batch iterator, without torchvision.

:func:`load_mnist` turns the files that :mod:`bnlib.data.files` finds, fetches and checks into
an :class:`MNIST` of tensors; :class:`Batches` iterates over it in shuffled mini-batches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bnlib._checks import require_int_type
from bnlib.data.files import IMAGE_SIZE, read_split

__all__ = ["Batches", "MNIST", "load_mnist"]


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
        root (str or PathLike, optional): dataset root, see :func:`~bnlib.data.data_root`.
            Default: ``None``.
        download (bool): fetch missing files into ``<root>/MNIST/raw/``. Default: ``True``.

    Shape:
        - images: :math:`(N, 1, 28, 28)`, ``float32``.
        - labels: :math:`(N,)`, ``int64``.

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"test"``.
        DataError: a file is missing, unreadable or corrupt, or cannot be downloaded; the
            message says which, and what to do.
    """
    images, labels = read_split(split, root, download)
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
        require_int_type("n", n)
        if not 1 <= n <= len(self):
            raise ValueError(f"n must be between 1 and {len(self)}, got {n}")
        return MNIST(images=self.images[:n], labels=self.labels[:n])

    def to(self, device: torch.device | str) -> MNIST:
        r"""The same examples on ``device`` (``self``'s tensors when already there).

        Args:
            device (torch.device or str): for example ``bnlib.training.default_device()``.
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
        require_int_type("batch_size", batch_size)
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
