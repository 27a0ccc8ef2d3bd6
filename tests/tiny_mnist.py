"""Tiny MNIST files (7 training and 3 test examples) in the real IDX format, for the data tests."""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bnlib.data import MNIST_FILES
from bnlib.data import files as mnist_files
from bnlib.data.idx import idx_magic

SIZES = {"train": 7, "test": 3}


@pytest.fixture(autouse=True)
def fresh_cache():
    """Decode files anew in every test: each test writes its own."""
    mnist_files._decode_split.cache_clear()


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(f">I{array.ndim}I", idx_magic(array.ndim), *array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(len(split))
    count = SIZES[split]
    return rng.integers(0, 256, (count, 28, 28), np.uint8), rng.integers(0, 10, count, np.uint8)


def tiny_contents(split: str) -> dict[str, bytes]:
    images, labels = tiny_split(split)
    files = MNIST_FILES[split]
    return {files.images.name: idx_bytes(images), files.labels.name: idx_bytes(labels)}


def write_split(folder: Path, split: str, *, gz: bool) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, content in tiny_contents(split).items():
        path = folder / (f"{name}.gz" if gz else name)
        path.write_bytes(gzip.compress(content) if gz else content)
        paths[name] = path
    return paths


def use_tiny_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make MNIST_FILES describe the tiny splits (sizes and md5s) for this test."""
    table = {}
    for split, count in SIZES.items():
        files = MNIST_FILES[split]
        md5s = {name: hashlib.md5(content).hexdigest()
                for name, content in tiny_contents(split).items()}
        table[split] = replace(
            files,
            images=replace(files.images, shape=(count, 28, 28), md5=md5s[files.images.name]),
            labels=replace(files.labels, shape=(count,), md5=md5s[files.labels.name]))
    monkeypatch.setattr(mnist_files, "MNIST_FILES", table)
