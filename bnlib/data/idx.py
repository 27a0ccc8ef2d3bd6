"""Reading the IDX format that MNIST is published in.

An IDX file of unsigned bytes is a big-endian header followed by the raw values:

    magic (4 bytes) = 0x0800 | ndim,   then ndim sizes (4 bytes each),   then prod(sizes) bytes.

MNIST labels are 1-D (magic 2049) and MNIST images are 3-D, ``(count, 28, 28)`` (magic 2051).
The reader checks the header and the exact length against the shape the caller expects, so a
truncated or mislabelled file is reported instead of being silently reshaped.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IdxFormatError", "idx_magic", "parse_idx", "read_idx", "read_file_bytes"]

_UNSIGNED_BYTE = 0x08


class IdxFormatError(ValueError):
    """A file is not a valid unsigned-byte IDX file of the expected shape."""


def idx_magic(ndim: int) -> int:
    r"""Magic number of an unsigned-byte IDX file with ``ndim`` dimensions.

    The four magic bytes are ``0x00 0x00 0x08 ndim``, so ``idx_magic(1) == 2049`` (labels) and
    ``idx_magic(3) == 2051`` (images).

    Args:
        ndim (int): number of dimensions, 1 to 255.
    """
    if not 1 <= ndim <= 255:
        raise ValueError(f"an IDX file has 1 to 255 dimensions, got ndim={ndim}")
    return (_UNSIGNED_BYTE << 8) | ndim


def read_file_bytes(path: str | os.PathLike) -> bytes:
    r"""Return the content of ``path``, decompressed when its name ends in ``.gz``.

    Args:
        path (str or PathLike): a plain file, or a gzip file whose name ends in ``.gz``.

    Raises:
        IdxFormatError: the ``.gz`` file is truncated or is not gzip data.
        OSError: the file cannot be read.
    """
    path = Path(path)
    payload = path.read_bytes()
    if path.suffix != ".gz":
        return payload
    try:
        return gzip.decompress(payload)
    except EOFError:
        raise IdxFormatError("the gzip stream ends early (the file is truncated)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as error:
        raise IdxFormatError(f"it is not valid gzip data ({error})") from None


def parse_idx(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    r"""Decode an unsigned-byte IDX payload whose sizes must equal ``shape``.

    The returned array is a zero-copy, read-only view of ``raw`` (``numpy.frombuffer``).

    Args:
        raw (bytes): the uncompressed file content.
        shape (tuple of int): the expected sizes, for example ``(60000, 28, 28)``.

    Shape:
        - Output: ``shape``, dtype ``uint8``.

    Raises:
        IdxFormatError: wrong magic number, wrong sizes, or a length other than header + data.
    """
    ndim = len(shape)
    header_length = 4 + 4 * ndim
    if len(raw) < 4:
        raise IdxFormatError(f"it holds only {len(raw)} bytes, too short for an IDX header")
    (magic,) = struct.unpack_from(">I", raw)
    if magic != idx_magic(ndim):
        raise IdxFormatError(
            f"bad magic number {magic} (expected {idx_magic(ndim)}, an unsigned-byte IDX file "
            f"with {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if len(raw) < header_length:
        raise IdxFormatError(f"its {len(raw)} bytes end inside the {header_length}-byte header")
    sizes = struct.unpack_from(f">{ndim}I", raw, 4)
    if sizes != tuple(shape):
        raise IdxFormatError(f"its sizes are {sizes} (expected {tuple(shape)})")
    expected_length = header_length + math.prod(shape)
    if len(raw) != expected_length:
        raise IdxFormatError(
            f"it holds {len(raw)} bytes (expected {expected_length}: a {header_length}-byte header "
            f"and {math.prod(shape)} values), so it is truncated or has trailing bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_length).reshape(shape)


def read_idx(path: str | os.PathLike, shape: tuple[int, ...]) -> np.ndarray:
    r"""Read an IDX file (plain or ``.gz``) whose sizes must equal ``shape``.

    Args:
        path (str or PathLike): the file.
        shape (tuple of int): the expected sizes.

    Shape:
        - Output: ``shape``, dtype ``uint8``, read-only.

    Raises:
        IdxFormatError: the file is not a valid IDX file of that shape.
    """
    return parse_idx(read_file_bytes(path), shape)
