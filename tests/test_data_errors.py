"""Each way MNIST can fail to load gives a DataError that names the real cause and a fix that fits.

The tests run as root in CI, where permission bits do not stop reads or writes, so unreadable
files and read-only folders are made by making the operating system's answer a PermissionError
(or a read-only file system's error); where the tests run as an ordinary user, real permission
bits are tried as well.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
from tiny_mnist import SIZES, fresh_cache, use_tiny_table, write_split  # noqa: F401

from bnlib.data import MNIST_FILES, DataError, download, load_mnist
from bnlib.data import files as mnist_files

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOT_AS_ROOT = pytest.mark.skipif(IS_ROOT, reason="permission bits do not stop root")


@pytest.fixture
def raw_folder(tmp_path, monkeypatch):
    """``<tmp_path>/MNIST/raw`` for the tiny splits; any download attempt fails the test."""
    use_tiny_table(monkeypatch)

    def no_fetch(url, timeout):
        raise AssertionError(f"tried to download {url}")
    monkeypatch.setattr(download, "_fetch", no_fetch)
    return tmp_path / "MNIST" / "raw"


def load_error(raw_folder: Path, download: bool = True) -> str:
    with pytest.raises(DataError) as caught:
        load_mnist("test", root=raw_folder.parents[1], download=download)
    error = caught.value  # no chained traceback behind the message
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return str(caught.value)


def permission_denied(path) -> PermissionError:
    return PermissionError(errno.EACCES, "Permission denied", str(path))


def failing_read(make_error):
    """A stand-in for read_idx that fails as the operating system would."""
    def read_idx(path, shape):
        raise make_error(path)
    return read_idx


def assert_mentions(message: str, *present: str, absent: tuple[str, ...] = ()) -> None:
    for text in present:
        assert text in message, (text, message)
    for text in absent:
        assert text not in message, (text, message)


# An unreadable file is not a corrupt one

def test_unreadable_file_is_not_called_corrupt(raw_folder, monkeypatch):
    paths = write_split(raw_folder, "test", gz=False)
    monkeypatch.setattr(mnist_files, "read_idx", failing_read(permission_denied))
    message = load_error(raw_folder)
    image_file = paths[MNIST_FILES["test"].images.name].resolve()
    assert_mentions(message, f"{image_file} cannot be read", "Permission denied", "chmod a+r",
                    "BNLIB_DATA", absent=("corrupt", "delete"))


@NOT_AS_ROOT
def test_unreadable_file_with_real_permissions(raw_folder):
    paths = write_split(raw_folder, "test", gz=True)
    for path in paths.values():
        path.chmod(0)
    assert_mentions(load_error(raw_folder), "cannot be read", "Permission denied",
                    absent=("corrupt", "delete"))


def test_other_read_failure_is_not_called_corrupt(raw_folder, monkeypatch):
    write_split(raw_folder, "test", gz=False)
    monkeypatch.setattr(mnist_files, "read_idx", failing_read(
        lambda path: OSError(errno.EIO, "Input/output error", str(path))))
    assert_mentions(load_error(raw_folder), "could not be read", "Input/output error",
                    absent=("corrupt", "delete"))


def test_unsearchable_folder(raw_folder, monkeypatch):
    write_split(raw_folder, "test", gz=False)
    real_is_file = Path.is_file

    def is_file(path):
        if path.parent == raw_folder:
            raise permission_denied(path)
        return real_is_file(path)
    monkeypatch.setattr(Path, "is_file", is_file)
    assert_mentions(load_error(raw_folder), "cannot be searched", "Permission denied",
                    "search permission", absent=("corrupt", "not found", "internet"))


# A folder that cannot be written to is not a network problem

@pytest.mark.parametrize("failure", [
    PermissionError(errno.EACCES, "Permission denied"),
    OSError(errno.EROFS, "Read-only file system"),
])
def test_read_only_folder_fails_before_downloading(raw_folder, monkeypatch, failure):
    raw_folder.mkdir(parents=True)

    def temporary_file(*args, **kwargs):
        raise failure
    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    message = load_error(raw_folder)  # the fixture fails the test if a download is tried
    assert_mentions(message, "cannot be downloaded into the data folder", failure.strerror,
                    f"make {raw_folder} writable", "--data-dir",
                    absent=("internet", "corrupt", "not found"))


@NOT_AS_ROOT
def test_read_only_folder_with_real_permissions(raw_folder):
    raw_folder.mkdir(parents=True)
    raw_folder.chmod(0o555)
    assert_mentions(load_error(raw_folder), "cannot be downloaded", "writable",
                    absent=("internet",))


def test_failed_save_after_download_is_not_a_network_problem(raw_folder, monkeypatch):
    def save_fails(name, md5, folder):
        raise download.SaveError(f"could not write {folder}/{name}.gz: [Errno 28] No space left")
    monkeypatch.setattr(mnist_files, "download_verified", save_fails)
    assert_mentions(load_error(raw_folder), "downloaded but could not be saved", "No space left",
                    "make room in", absent=("internet",))


def test_file_in_the_way_of_the_data_folder(raw_folder):
    raw_folder.parent.parent.mkdir(parents=True, exist_ok=True)
    raw_folder.parent.write_bytes(b"not a folder")  # <root>/MNIST is a file
    for allow_download in (True, False):
        assert_mentions(load_error(raw_folder, allow_download),
                        f"{raw_folder.parent} is a file", f"move or rename {raw_folder.parent}",
                        absent=("internet", "not found", "writable"))


# With downloading turned off, the hint offers both ways out, in words for both kinds of user

def test_missing_file_with_download_turned_off(raw_folder):
    message = load_error(raw_folder, download=False)
    assert_mentions(message, "t10k-images-idx3-ubyte", "not found", "downloading is turned off",
                    "BNLIB_DATA", "--data-dir", "root=", "download=True", "--no-download",
                    absent=("load_mnist(",))


# A folder where a file should be is not a missing file

@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"])
@pytest.mark.parametrize("allow_download", [True, False])
def test_folder_in_place_of_a_file(raw_folder, name, allow_download):
    (raw_folder / name).mkdir(parents=True)
    message = load_error(raw_folder, allow_download)  # and no download is tried
    assert_mentions(message, f"{raw_folder / name} is a folder", "move or rename",
                    absent=("not found", "internet", "corrupt"))


def test_the_tiny_files_load_when_nothing_is_wrong(raw_folder):
    write_split(raw_folder, "test", gz=True)
    assert len(load_mnist("test", root=raw_folder.parents[1], download=False)) == SIZES["test"]
