"""Tests for bnlib.data.download with a stand-in for the network: mirrors, checksums, atomic writes."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bnlib.data import download
from bnlib.data.download import DownloadError, download_verified, fetch_verified, write_atomically

CONTENT = b"\0\0\x08\x01\0\0\0\x03\x01\x02\x03"
MD5 = hashlib.md5(CONTENT).hexdigest()
MIRRORS = ("https://first.example/mnist/", "http://second.example/mnist/")





def fake_fetch(monkeypatch, answers: dict[str, bytes | BaseException]) -> list[str]:
    """Serve ``answers`` (per URL) in place of the network; returns the list of URLs asked for."""
    calls = []

    def fetch(url: str, timeout: float) -> bytes:
        calls.append(url)
        answer = answers[url]
        if isinstance(answer, BaseException):
            raise answer
        return answer
    monkeypatch.setattr(download, "_fetch", fetch)
    return calls


def test_mirrors_are_torchvisions_in_order():
    assert download.MNIST_MIRRORS == ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                                      "http://yann.lecun.com/exdb/mnist/")
    assert 0 < download.DOWNLOAD_TIMEOUT <= 30


def test_real_fetch_goes_through_urlopen_with_the_timeout(monkeypatch):
    seen = {}

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

        def read(self):
            return b"body"

    def urlopen(request, timeout):
        seen.update(url=request.full_url, timeout=timeout)
        return Response()
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert download._fetch("https://first.example/x.gz", 2.5) == b"body"
    assert seen == {"url": "https://first.example/x.gz", "timeout": 2.5}


@pytest.mark.parametrize("failure", [
    urllib.error.URLError("no route"),
    urllib.error.HTTPError("https://first.example/mnist/f.gz", 503, "Slow Down", None, None),
    TimeoutError("timed out"),
    ConnectionResetError(),
    http.client.IncompleteRead(b"partial"),
    gzip.compress(CONTENT)[:-5],  # cut short
    gzip.compress(CONTENT + b"\0"),  # wrong content
    b"<html>not found</html>",
])
def test_falls_back_to_next_mirror(monkeypatch, failure):
    calls = fake_fetch(monkeypatch, {f"{MIRRORS[0]}f.gz": failure,
                                     f"{MIRRORS[1]}f.gz": gzip.compress(CONTENT)})
    assert gzip.decompress(fetch_verified("f", MD5, mirrors=MIRRORS)) == CONTENT
    assert calls == [f"{mirror}f.gz" for mirror in MIRRORS]


def test_recompressed_archive_is_accepted(monkeypatch):
    recompressed = gzip.compress(CONTENT, compresslevel=1, mtime=12345)
    assert recompressed != gzip.compress(CONTENT)
    fake_fetch(monkeypatch, {f"{MIRRORS[0]}f.gz": recompressed})
    assert fetch_verified("f", MD5, mirrors=MIRRORS) == recompressed


def test_every_mirror_failing_names_each_reason(monkeypatch):
    fake_fetch(monkeypatch, {f"{MIRRORS[0]}f.gz": urllib.error.URLError("no route"),
                             f"{MIRRORS[1]}f.gz": gzip.compress(b"other")})
    with pytest.raises(DownloadError) as caught:
        fetch_verified("f", MD5, mirrors=MIRRORS)
    message = str(caught.value)
    assert f"{MIRRORS[0]}f.gz: URLError" in message and "no route" in message
    assert f"{MIRRORS[1]}f.gz: the md5 of the uncompressed content is" in message and MD5 in message


def test_download_writes_the_archive_and_nothing_else(tmp_path, monkeypatch):
    fake_fetch(monkeypatch, {f"{MIRRORS[0]}f.gz": gzip.compress(CONTENT)})
    target = download_verified("f", MD5, tmp_path / "new" / "raw", mirrors=MIRRORS)
    assert target == tmp_path / "new" / "raw" / "f.gz"
    assert gzip.decompress(target.read_bytes()) == CONTENT
    assert os.listdir(target.parent) == ["f.gz"]


def test_failed_download_writes_nothing(tmp_path, monkeypatch):
    fake_fetch(monkeypatch, {f"{mirror}f.gz": gzip.compress(b"other") for mirror in MIRRORS})
    with pytest.raises(DownloadError):
        download_verified("f", MD5, tmp_path, mirrors=MIRRORS)
    assert os.listdir(tmp_path) == []


def test_interrupted_fetch_propagates_and_writes_nothing(tmp_path, monkeypatch):
    fake_fetch(monkeypatch, {f"{MIRRORS[0]}f.gz": KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        download_verified("f", MD5, tmp_path, mirrors=MIRRORS)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("failure, expected", [
    (KeyboardInterrupt(), KeyboardInterrupt),
    (OSError(28, "No space left on device"), DownloadError),
])
def test_failed_write_removes_the_temporary_file(tmp_path, monkeypatch, failure, expected):
    fake_fetch(monkeypatch, {f"{MIRRORS[0]}f.gz": gzip.compress(CONTENT)})
    written = []

    def replace(source, destination):
        written.append(Path(source).read_bytes())
        raise failure
    monkeypatch.setattr(download.os, "replace", replace)
    with pytest.raises(expected, match="No space left" if expected is DownloadError else None):
        download_verified("f", MD5, tmp_path, mirrors=MIRRORS)
    assert written == [gzip.compress(CONTENT)]  # the temporary file was complete, then removed
    assert os.listdir(tmp_path) == []
    if expected is DownloadError:  # a write failure says so by its type, for a precise hint
        with pytest.raises(download.SaveError):
            download_verified("f", MD5, tmp_path, mirrors=MIRRORS)


def test_write_atomically_replaces_an_existing_file(tmp_path):
    target = tmp_path / "f.gz"
    target.write_bytes(b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.gz"]
