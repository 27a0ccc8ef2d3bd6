"""Tests for load_mnist and data_root, on tiny IDX files written here and on MNIST when present."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_mnist import (  # noqa: F401
    SIZES,
    fresh_cache,
    idx_bytes,
    tiny_contents,
    tiny_split,
    use_tiny_table,
    write_split,
)

from bnlib.data import MNIST_FILES, DataError, data_root, download, load_mnist
from bnlib.data import files as mnist_files
from bnlib.data.idx import idx_magic


@pytest.fixture
def raw_folder(tmp_path, monkeypatch):
    """``<tmp_path>/MNIST/raw``, with MNIST_FILES describing the tiny splits (sizes and md5s)."""
    use_tiny_table(monkeypatch)
    return tmp_path / "MNIST" / "raw"


# Loading local files

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_reads_plain_and_gzip_files(raw_folder, split, gz):
    write_split(raw_folder, split, gz=gz)
    images, labels = tiny_split(split)
    loaded = load_mnist(split, root=raw_folder.parents[1], download=False)
    assert loaded.images.shape == (SIZES[split], 1, 28, 28)
    assert loaded.images.dtype == torch.float32 and loaded.labels.dtype == torch.int64
    expected = torch.from_numpy(images).float().div(255).unsqueeze(1)
    assert torch.equal(loaded.images, expected)
    assert loaded.labels.tolist() == labels.tolist()


def test_uncompressed_file_is_preferred_over_gzip(raw_folder):
    write_split(raw_folder, "test", gz=True)
    (raw_folder / MNIST_FILES["test"].labels.name).write_bytes(idx_bytes(np.full(3, 9)))
    assert load_mnist("test", root=raw_folder.parents[1]).labels.tolist() == [9, 9, 9]


def test_idx_magic_numbers():
    assert (idx_magic(1), idx_magic(3)) == (2049, 2051)
    with pytest.raises(ValueError, match="ndim=0"):
        idx_magic(0)


def test_unknown_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="'validation'"):
        load_mnist("validation", root=tmp_path)


def test_missing_files_without_download(raw_folder):
    with pytest.raises(DataError) as caught:
        load_mnist("train", root=raw_folder.parents[1], download=False)
    message = str(caught.value)
    assert "train-images-idx3-ubyte" in message and str(raw_folder) in message
    assert "BNLIB_DATA" in message and "--data-dir" in message and "download=True" in message


def corrupt_images(images: bytes) -> dict[str, bytes]:
    """Ways to damage an uncompressed image file, named by the message they should produce."""
    shape = struct.unpack_from(">4I", images)
    wrong_dims = struct.pack(">4I", shape[0], shape[1], 27, 28 * 28 // 27) + images[16:]
    wrong_count = struct.pack(">4I", shape[0], shape[1] + 1, 28, 28) + images[16:]
    return {"bad magic number 2049": struct.pack(">I", 2049) + images[4:],
            "sizes are \\(7, 27, 29\\)": wrong_dims,
            "sizes are \\(8, 28, 28\\)": wrong_count,
            "truncated": images[:-1],
            "trailing bytes": images + b"\0",
            "too short": images[:2],
            "end inside the 16-byte header": images[:10]}


@pytest.mark.parametrize("reason", list(corrupt_images(tiny_contents("train")[
    MNIST_FILES["train"].images.name])))
def test_corrupt_uncompressed_file(raw_folder, reason):
    paths = write_split(raw_folder, "train", gz=False)
    path = paths[MNIST_FILES["train"].images.name]
    path.write_bytes(corrupt_images(path.read_bytes())[reason])
    with pytest.raises(DataError, match=reason) as caught:
        load_mnist("train", root=raw_folder.parents[1])
    message = str(caught.value)
    assert str(path.resolve()) in message and f"delete {path.resolve()}" in message
    assert "BNLIB_DATA" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("damage, reason", [
    (lambda payload: payload[:-20], "truncated"),
    (lambda payload: gzip.decompress(payload), "not valid gzip"),
    (lambda payload: payload[:30] + bytes(len(payload) - 30), "not valid gzip"),
])
def test_corrupt_gzip_file(raw_folder, damage, reason):
    paths = write_split(raw_folder, "train", gz=True)
    path = paths[MNIST_FILES["train"].images.name]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=reason) as caught:
        load_mnist("train", root=raw_folder.parents[1], download=False)
    assert str(path.resolve()) in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_label_out_of_range(raw_folder):
    write_split(raw_folder, "test", gz=False)
    (raw_folder / MNIST_FILES["test"].labels.name).write_bytes(idx_bytes(np.array([1, 10, 2])))
    with pytest.raises(DataError, match="label 10"):
        load_mnist("test", root=raw_folder.parents[1])


def test_second_load_is_cached_and_returns_independent_tensors(raw_folder, monkeypatch):
    write_split(raw_folder, "test", gz=True)
    reads = []
    real_read = mnist_files.read_idx
    monkeypatch.setattr(mnist_files, "read_idx",
                        lambda *args: reads.append(args) or real_read(*args))
    first = load_mnist("test", root=raw_folder.parents[1])
    expected = first.images.clone(), first.labels.clone()
    first.images.fill_(7.0)
    first.labels.zero_()
    second = load_mnist("test", root=raw_folder.parents[1])
    assert len(reads) == 2  # one image file and one label file, read once
    assert torch.equal(second.images, expected[0]) and torch.equal(second.labels, expected[1])


def test_replaced_file_is_read_again(raw_folder):
    write_split(raw_folder, "test", gz=False)
    assert load_mnist("test", root=raw_folder.parents[1]).labels.tolist() != [3, 3, 3]
    path = raw_folder / MNIST_FILES["test"].labels.name
    path.write_bytes(idx_bytes(np.full(3, 3)))
    os.utime(path, ns=(0, 10**18))
    assert load_mnist("test", root=raw_folder.parents[1]).labels.tolist() == [3, 3, 3]


# Data root

def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("BNLIB_DATA", raising=False)
    assert data_root() == tmp_path / "home" / ".cache" / "bnlib"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the XDG spec says
    assert data_root() == tmp_path / "home" / ".cache" / "bnlib"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "bnlib"
    monkeypatch.setenv("BNLIB_DATA", "")  # empty counts as unset
    assert data_root() == tmp_path / "xdg" / "bnlib"
    monkeypatch.setenv("BNLIB_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_root("~/mnist") == tmp_path / "home" / "mnist"


def test_load_uses_environment_root(raw_folder, monkeypatch):
    write_split(raw_folder, "test", gz=True)
    monkeypatch.setenv("BNLIB_DATA", str(raw_folder.parents[1]))
    assert len(load_mnist("test", download=False)) == SIZES["test"]


# Downloading (through a stand-in for the network)

def serve(contents: dict[str, bytes], calls: list[tuple[str, float]]):
    """A stand-in for download._fetch serving gzip copies of ``contents`` from the first mirror."""
    def fetch(url: str, timeout: float) -> bytes:
        calls.append((url, timeout))
        name = url.rsplit("/", 1)[-1].removesuffix(".gz")
        if url.startswith(download.MNIST_MIRRORS[0]) and name in contents:
            return gzip.compress(contents[name])
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    return fetch


def test_download_puts_verified_files_in_place(raw_folder, monkeypatch):
    calls = []
    monkeypatch.setattr(download, "_fetch", serve(tiny_contents("test"), calls))
    loaded = load_mnist("test", root=raw_folder.parents[1])
    assert loaded.labels.tolist() == tiny_split("test")[1].tolist()
    names = [MNIST_FILES["test"].images.name, MNIST_FILES["test"].labels.name]
    assert sorted(os.listdir(raw_folder)) == sorted(f"{name}.gz" for name in names)
    assert calls == [(f"{download.MNIST_MIRRORS[0]}{name}.gz", download.DOWNLOAD_TIMEOUT)
                     for name in names]
    for file in (mnist_files.MNIST_FILES["test"].images, mnist_files.MNIST_FILES["test"].labels):
        content = gzip.decompress((raw_folder / f"{file.name}.gz").read_bytes())
        assert hashlib.md5(content).hexdigest() == file.md5


def test_offline_download_fails_cleanly(raw_folder, monkeypatch):
    calls = []
    monkeypatch.setattr(download, "_fetch", serve({}, calls))
    with pytest.raises(DataError) as caught:
        load_mnist("train", root=raw_folder.parents[1])
    message = str(caught.value)
    assert str(raw_folder / "train-images-idx3-ubyte.gz") in message
    assert f"folder searched: {raw_folder}" in message
    assert "internet connection" in message and "BNLIB_DATA" in message
    assert "Temporary failure in name resolution" in message
    assert [url for url, _ in calls] == [f"{mirror}train-images-idx3-ubyte.gz"
                                         for mirror in download.MNIST_MIRRORS]
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not raw_folder.exists() or os.listdir(raw_folder) == []


def test_checksum_mismatch_leaves_no_file(raw_folder, monkeypatch):
    contents = tiny_contents("test")
    images, labels = MNIST_FILES["test"].images.name, MNIST_FILES["test"].labels.name
    contents[labels] = contents[labels][:-1] + b"\1"
    monkeypatch.setattr(download, "_fetch", serve(contents, []))
    with pytest.raises(DataError, match="md5 of the uncompressed content"):
        load_mnist("test", root=raw_folder.parents[1])
    assert os.listdir(raw_folder) == [f"{images}.gz"]  # the good file, and no temporary file


# The real MNIST, where a copy is available (never downloaded by the tests)

@pytest.fixture(scope="module")
def real_root():
    candidates = [os.environ.get("BNLIB_DATA"), Path(__file__).parents[2] / "shared" / "datasets"]
    for candidate in filter(None, candidates):
        raw = Path(candidate) / "MNIST" / "raw"
        names = [file.name for pair in MNIST_FILES.values() for file in (pair.images, pair.labels)]
        if all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in names):
            return Path(candidate)
    pytest.skip("MNIST not found: set BNLIB_DATA to a folder containing MNIST/raw")


def test_real_mnist(real_root):
    train = load_mnist("train", root=real_root, download=False)
    test = load_mnist("test", root=real_root, download=False)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.images.shape == (60_000, 1, 28, 28) and test.labels.shape == (10_000,)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert train.images.min().item() == 0.0 and train.images.max().item() == 1.0
    assert torch.bincount(test.labels, minlength=10).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_checksum_table_matches_real_files(real_root):
    for files in MNIST_FILES.values():
        for file in (files.images, files.labels):
            plain = real_root / "MNIST" / "raw" / file.name
            content = plain.read_bytes() if plain.is_file() else gzip.decompress(
                plain.with_name(f"{file.name}.gz").read_bytes())
            assert hashlib.md5(content).hexdigest() == file.md5, file.name
