"""Checksum-verified downloads that never leave a half-written file behind.

A file is fetched whole from the first mirror that answers, its *uncompressed* content is checked
against an md5 digest (a recompressed archive has other bytes but the same content), and only then
is it written: into a temporary file in the target folder, moved into place with ``os.replace``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import secrets
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DOWNLOAD_TIMEOUT", "MNIST_MIRRORS", "DownloadError", "SaveError", "download_verified",
           "fetch_verified", "write_atomically"]

# torchvision's mirrors, in its order: the S3 copy is reliable, the original site not always.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# Seconds a connection may stay silent before a mirror counts as unreachable.
DOWNLOAD_TIMEOUT: float = 10.0


class DownloadError(OSError):
    """No mirror delivered the file with the expected content, or it could not be written."""


class SaveError(DownloadError):
    """The file was fetched and verified, but could not be written to its folder."""


def _fetch(url: str, timeout: float) -> bytes:
    """Return the body at ``url``; the single place that touches the network."""
    request = urllib.request.Request(url, headers={"User-Agent": "bnlib"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _describe(error: BaseException) -> str:
    """``"TimeoutError: timed out"``; just the type name when the message is empty."""
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _content_problem(payload: bytes, md5: str) -> str | None:
    """Why a gzip ``payload`` is not the expected file, or None when its content matches ``md5``."""
    try:
        content = gzip.decompress(payload)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as error:
        return f"the response is not a complete gzip file ({_describe(error)})"
    digest = hashlib.md5(content).hexdigest()
    if digest != md5:
        return f"the md5 of the uncompressed content is {digest}, expected {md5}"
    return None


def fetch_verified(name: str, md5: str, *, mirrors: Sequence[str] = MNIST_MIRRORS,
                   timeout: float = DOWNLOAD_TIMEOUT) -> bytes:
    r"""Fetch ``<mirror><name>.gz`` from the first mirror whose copy has the right content.

    Args:
        name (str): file name without ``.gz``, for example ``"train-labels-idx1-ubyte"``.
        md5 (str): hex md5 digest of the uncompressed content.
        mirrors (sequence of str): base URLs ending in ``/``, tried in order.
            Default: ``MNIST_MIRRORS``.
        timeout (float): seconds before a silent connection is abandoned.
            Default: ``DOWNLOAD_TIMEOUT``.

    Returns:
        bytes: the gzip file as served.

    Raises:
        DownloadError: every mirror failed; the message lists each URL and why.
    """
    failures = []
    for mirror in mirrors:
        url = f"{mirror}{name}.gz"
        try:
            payload = _fetch(url, timeout)
        except (OSError, http.client.HTTPException, ValueError) as error:
            failures.append(f"{url}: {_describe(error)}")
            continue
        problem = _content_problem(payload, md5)
        if problem is None:
            return payload
        failures.append(f"{url}: {problem}")
    raise DownloadError("; ".join(failures) or "no mirror to download from")


def write_atomically(path: str | os.PathLike, payload: bytes) -> None:
    r"""Write ``payload`` to ``path`` so that ``path`` is either absent or complete.

    The bytes go to a hidden temporary file in the same folder, which is then renamed over
    ``path``; on any failure, ``KeyboardInterrupt`` included, the temporary file is removed.

    Args:
        path (str or PathLike): the destination; its folder is created when missing.
        payload (bytes): the content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        with open(temporary, "xb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def download_verified(name: str, md5: str, folder: str | os.PathLike, *,
                      mirrors: Sequence[str] = MNIST_MIRRORS,
                      timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    r"""Download ``<name>.gz`` into ``folder`` after checking its uncompressed md5.

    Args:
        name (str): file name without ``.gz``.
        md5 (str): hex md5 digest of the uncompressed content.
        folder (str or PathLike): destination folder, created when missing.
        mirrors (sequence of str): base URLs tried in order. Default: ``MNIST_MIRRORS``.
        timeout (float): seconds before a silent connection is abandoned.
            Default: ``DOWNLOAD_TIMEOUT``.

    Returns:
        Path: ``folder / (name + ".gz")``.

    Raises:
        DownloadError: no mirror delivered the right content.
        SaveError: the file could not be written (a :class:`DownloadError` too).
    """
    payload = fetch_verified(name, md5, mirrors=mirrors, timeout=timeout)
    target = Path(folder) / f"{name}.gz"
    try:
        write_atomically(target, payload)
    except OSError as error:
        raise SaveError(f"could not write {target}: {error}") from None
    return target
